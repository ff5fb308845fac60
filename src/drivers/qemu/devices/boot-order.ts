import type {
  DiskDefinition,
  DomainDefinition,
  InterfaceDefinition,
} from '../../../stable/definition/schema.js';

/*
 * The `bootindex` that `<os><boot dev='hd|cdrom|fd|network'/>` gives a device, as libvirt converts
 * the legacy boot list (qemuProcessPrepareDeviceBootorder): the first disk, the first CD-ROM, the
 * first floppy and the first interface get the position of their kind in the list; every other
 * device gets none. Per-device `<boot order>` replaces the
 * list, so a definition with any of those gets nothing from here.
 */

function position(def: DomainDefinition, kind: 'hd' | 'cdrom' | 'fd' | 'network'): number | undefined {
  const list = def.os.boot ?? [];
  if (list.length === 0 || def.disks.some((d) => d.bootOrder !== undefined)) return undefined;
  const at = list.indexOf(kind);
  return at < 0 ? undefined : at + 1;
}

/** The boot index of a disk from `<os><boot>`, if it is the first of its kind the list names. */
export function diskBootIndex(def: DomainDefinition, disk: DiskDefinition): number | undefined {
  const first = def.disks.find((d) => d.device === disk.device);
  if (first !== disk) return undefined;
  return position(def, disk.device === 'cdrom' ? 'cdrom' : disk.device === 'floppy' ? 'fd' : 'hd');
}

/** The boot index of an interface from `<os><boot dev='network'>`, if it is the first interface. */
export function nicBootIndex(def: DomainDefinition, nic: InterfaceDefinition): number | undefined {
  return def.interfaces[0] === nic ? position(def, 'network') : undefined;
}

import { ErrorCode, VirtError } from '../errors.js';
import type {
  DiskDefinition,
  DomainDefinition,
  MemoryDeviceDefinition,
} from '../stable/definition/schema.js';

/*
 * The stable aliases of the devices a consumer sees (libvirt's qemuAssignDeviceAliases for disks,
 * interfaces and DIMMs), one rule for both drivers: the embedded driver's device model
 * (qemu/devices/assign.ts) uses these names, and the test driver gives the same ones at define and
 * hotplug, so a consumer's test detaches `virtio-disk0` or `net0` in both.
 */

/** libvirt's virDiskNameToIndex: `vda` → 0, `sdb` → 1, `vdaa` → 26. */
export function diskNameIndex(dev: string): number {
  const letters = dev.replace(/^(vd|sd|hd|fd)/, '');
  let index = 0;
  for (const ch of letters) index = index * 26 + (ch.charCodeAt(0) - 96);
  return index - 1;
}

/**
 * The drive address libvirt gives a sata, ide or scsi disk without one
 * (virDomainDiskDefAssignAddress): sata, six units per controller (sdg is controller 1 unit 0);
 * ide, two units per bus; scsi, seven units per controller.
 */
export function defaultDriveAddress(disk: DiskDefinition): {
  type: 'drive';
  controller: number;
  bus: number;
  target: number;
  unit: number;
} {
  const index = diskNameIndex(disk.target.dev);
  if (disk.target.bus === 'scsi')
    return { type: 'drive', controller: Math.floor(index / 7), bus: 0, target: 0, unit: index % 7 };
  // libvirt's floppy controller: one bus, fda unit 0, fdb unit 1.
  if (disk.target.bus === 'fdc') return { type: 'drive', controller: 0, bus: 0, target: 0, unit: index };
  return disk.target.bus === 'ide'
    ? { type: 'drive', controller: 0, bus: index >> 1, target: 0, unit: index & 1 }
    : // libvirt's SATA: six ports per AHCI controller, the next controller after them.
      { type: 'drive', controller: Math.floor(index / 6), bus: 0, target: 0, unit: index % 6 };
}

/**
 * A disk's alias when it has none (libvirt's qemuAssignDeviceDiskAlias): `virtio-disk<N>`,
 * `usb-disk<N>`, `scsi<controller>-<bus>-<target>-<unit>`, or `<bus><controller>-<bus>-<unit>`
 * (`sata0-0-1`).
 */
export function diskAlias(disk: DiskDefinition): string {
  if (disk.target.bus === 'virtio' || disk.target.bus === 'usb')
    return `${disk.target.bus}-disk${diskNameIndex(disk.target.dev)}`;
  const address = disk.address?.type === 'drive' ? disk.address : defaultDriveAddress(disk);
  if (disk.target.bus === 'scsi')
    return `scsi${address.controller}-${address.bus}-${address.target}-${address.unit}`;
  return `${disk.target.bus}${address.controller}-${address.bus}-${address.unit}`;
}

/** The first `net<N>` not in `taken`. */
export function nicAlias(taken: { has(alias: string): boolean }): string {
  let n = 0;
  while (taken.has(`net${n}`)) n++;
  return `net${n}`;
}

/**
 * The DIMMs with slot and alias filled in: the first free slot, libvirt's alias `dimm<slot>`.
 *
 * @throws VirtError `OPERATION_INVALID` when every slot of `maxMemory` is taken
 */
export function assignDimms(def: DomainDefinition): MemoryDeviceDefinition[] | undefined {
  if (!def.memoryDevices) return undefined;
  const slots = def.maxMemory?.slots ?? 0;
  const taken = new Set(def.memoryDevices.flatMap((d) => (d.slot === undefined ? [] : [d.slot])));
  return def.memoryDevices.map((d, i) => {
    let slot = d.slot;
    if (slot === undefined) {
      slot = 0;
      while (taken.has(slot)) slot++;
      if (slot >= slots) {
        throw new VirtError(
          ErrorCode.OPERATION_INVALID,
          `no free memory slot for memoryDevices.${i}: all ${slots} slot(s) of <maxMemory> are taken`,
          { path: `memoryDevices.${i}.slot`, slots },
        );
      }
      taken.add(slot);
    }
    return { ...d, slot, alias: d.alias ?? `dimm${slot}` };
  });
}

/**
 * The definition with every disk, interface and DIMM alias filled in by the rules above (given
 * aliases kept, generated ones never taking a given name). The test driver's device model; the
 * embedded driver's is qemu/devices/assign.ts, which also checks aliases and assigns addresses.
 */
export function withDeviceAliases(def: DomainDefinition): DomainDefinition {
  const taken = new Set<string>();
  for (const d of [...def.disks, ...def.interfaces]) if (d.alias !== undefined) taken.add(d.alias);
  const disks = def.disks.map((d) => {
    if (d.alias !== undefined) return d;
    const alias = diskAlias(d);
    taken.add(alias);
    return { ...d, alias };
  });
  const interfaces = def.interfaces.map((n) => {
    if (n.alias !== undefined) return n;
    const alias = nicAlias(taken);
    taken.add(alias);
    return { ...n, alias };
  });
  const memoryDevices = assignDimms(def);
  return { ...def, disks, interfaces, ...(memoryDevices ? { memoryDevices } : {}) };
}

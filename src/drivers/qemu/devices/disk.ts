import { ErrorCode, VirtError } from '../../../errors.js';
import type { DiskDefinition, DomainDefinition } from '../../../stable/definition/schema.js';
import { fdsetIdOf } from './fdset.js';
import { pciPlacement } from './pci-bus.js';
import type { QapiObject } from './qapi.js';

/** A disk's block node names, derived from its alias. */
export function diskNodes(alias: string): { storage: string; format: string } {
  return { storage: `${alias}-storage`, format: `${alias}-format` };
}

function aliasOf(disk: DiskDefinition): string {
  if (disk.alias === undefined)
    throw new VirtError(ErrorCode.INTERNAL_ERROR, `disk ${disk.target.dev} has no alias`);
  return disk.alias;
}

/**
 * The two block nodes of a disk (`blockdev-add` arguments): the storage node on the descriptor in
 * the disk's fdset (QEMU never opens the image itself), and the format node on top of it.
 */
export function diskBlockdevs(disk: DiskDefinition): [QapiObject, QapiObject] {
  const nodes = diskNodes(aliasOf(disk));
  return [
    {
      driver: disk.type === 'block' ? 'host_device' : 'file',
      filename: `/dev/fdset/${fdsetIdOf(aliasOf(disk))}`,
      'node-name': nodes.storage,
      'read-only': disk.readonly,
    },
    {
      'node-name': nodes.format,
      'read-only': disk.readonly,
      driver: disk.driver.type,
      file: nodes.storage,
    },
  ];
}

/** The guest-visible device of a disk (`device_add` arguments). */
export function diskDevice(def: DomainDefinition, disk: DiskDefinition, path: string): QapiObject {
  const alias = aliasOf(disk);
  const extra: QapiObject = {
    ...(disk.serial !== undefined ? { serial: disk.serial } : {}),
    ...(disk.bootOrder !== undefined ? { bootindex: disk.bootOrder } : {}),
  };
  if (disk.target.bus === 'virtio') {
    if (disk.device === 'cdrom')
      throw new VirtError(
        ErrorCode.CONFIG_UNSUPPORTED,
        'a cdrom on the virtio bus is not supported by this version of virtkit',
        {
          path: `${path}.device`,
        },
      );
    return {
      driver: 'virtio-blk-pci',
      ...pciPlacement(def, disk.address?.type === 'pci' ? disk.address : undefined, `disk ${alias}`),
      drive: diskNodes(alias).format,
      id: alias,
      ...extra,
    };
  }
  const address = disk.address;
  if (address?.type !== 'drive')
    throw new VirtError(ErrorCode.INTERNAL_ERROR, `sata disk ${alias} has no drive address`);
  const controller = def.controllers.find((c) => c.type === 'sata' && c.index === address.controller)?.alias;
  if (controller === undefined)
    throw new VirtError(ErrorCode.INTERNAL_ERROR, `sata disk ${alias} has no controller`);
  return {
    driver: disk.device === 'cdrom' ? 'ide-cd' : 'ide-hd',
    bus: `${controller}.${address.unit}`,
    drive: diskNodes(alias).format,
    id: alias,
    ...extra,
  };
}

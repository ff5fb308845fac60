import { ErrorCode, VirtError } from '../../../errors.js';
import type { DiskDefinition, DomainDefinition } from '../../../stable/definition/schema.js';
import { diskBootIndex } from './boot-order.js';
import { networkStorageProps } from './disk-network.js';
import { fdsetIdOf } from './fdset.js';
import { pciPlacement } from './pci-bus.js';
import { type QapiObject, u64 } from './qapi.js';
import { virtioDevice } from './virtio.js';
import { virtioProps } from './virtio-options.js';

/** QEMU's longest block node name (its `node_name` buffer holds 32 bytes with the NUL). */
const MAX_NODE_NAME = 31;

/**
 * A disk's block node names, derived from its alias: `<alias>-storage`/`-format`, or, for an alias
 * too long for that (KubeVirt's `ua-<volume name>`), its first 14 characters and a hash of all of
 * it. The same alias always gives the same names, so hot-unplug and a reconnected driver find them.
 */
export function diskNodes(alias: string): { storage: string; format: string } {
  const base =
    alias.length + '-storage'.length <= MAX_NODE_NAME
      ? alias
      : `${alias.slice(0, 14)}-${fnv1a(alias).toString(16).padStart(8, '0')}`;
  return { storage: `${base}-storage`, format: `${base}-format` };
}

function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(text, 'utf8')) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash;
}

function aliasOf(disk: DiskDefinition): string {
  if (disk.alias === undefined)
    throw new VirtError(ErrorCode.INTERNAL_ERROR, `disk ${disk.target.dev} has no alias`);
  return disk.alias;
}

/**
 * The two block nodes of a disk (`blockdev-add` arguments): the storage node on the descriptor in
 * the disk's fdset (QEMU never opens the image itself) or, for a network disk, on the server QEMU
 * connects to; and the format node on top of it.
 */
export function diskBlockdevs(disk: DiskDefinition): [QapiObject, QapiObject] {
  const nodes = diskNodes(aliasOf(disk));
  const { io, discard } = disk.driver;
  const cache = cacheFlags(disk);
  // As libvirt: cache and discard on both nodes, the AIO engine on the storage node.
  const common: QapiObject = {
    ...(cache ? { cache: { direct: cache.direct, 'no-flush': cache.noFlush } } : {}),
    ...(discard ? { discard } : {}),
  };
  // A network disk's server is reached by QEMU itself: no descriptor, no fdset.
  const storage: QapiObject = disk.network
    ? { ...networkStorageProps(disk.network), 'node-name': nodes.storage }
    : {
        driver: disk.type === 'block' ? 'host_device' : 'file',
        filename: `/dev/fdset/${fdsetIdOf(aliasOf(disk))}`,
        'node-name': nodes.storage,
        ...(io ? { aio: io } : {}),
      };
  return [
    { ...storage, ...common, 'read-only': disk.readonly },
    {
      'node-name': nodes.format,
      'read-only': disk.readonly,
      ...common,
      driver: disk.driver.type,
      file: nodes.storage,
      // The chain the definition gives, not the file name in the overlay's header.
      ...(disk.backingStore ? { backing: diskNodes(backingAlias(aliasOf(disk))).format } : {}),
    },
  ];
}

/** The name a disk's backing image goes by (its block nodes, its fdset). */
export function backingAlias(alias: string): string {
  return `${alias}-backing`;
}

/**
 * The block nodes of a disk's backing image, read only, on the descriptor in its own fdset: what
 * libvirt gives QEMU for a `<backingStore>` with -blockdev.
 */
export function backingBlockdevs(disk: DiskDefinition): [QapiObject, QapiObject] {
  const backing = disk.backingStore;
  if (!backing) throw new VirtError(ErrorCode.INTERNAL_ERROR, `disk ${disk.target.dev} has no backing store`);
  const name = backingAlias(aliasOf(disk));
  const nodes = diskNodes(name);
  const cache = cacheFlags(disk);
  const common: QapiObject = cache ? { cache: { direct: cache.direct, 'no-flush': cache.noFlush } } : {};
  return [
    {
      driver: backing.type === 'block' ? 'host_device' : 'file',
      filename: `/dev/fdset/${fdsetIdOf(name)}`,
      'node-name': nodes.storage,
      ...common,
      'read-only': true,
    },
    { 'node-name': nodes.format, 'read-only': true, ...common, driver: backing.format, file: nodes.storage },
  ];
}

/** libvirt's qemuDomainDiskCachemodeFlags: what a cache mode means to QEMU; undefined for its default. */
function cacheFlags(
  disk: DiskDefinition,
): { writeback: boolean; direct: boolean; noFlush: boolean } | undefined {
  switch (disk.driver.cache) {
    case 'writeback':
      return { writeback: true, direct: false, noFlush: false };
    case 'writethrough':
      return { writeback: false, direct: false, noFlush: false };
    case 'none':
      return { writeback: true, direct: true, noFlush: false };
    case 'directsync':
      return { writeback: false, direct: true, noFlush: false };
    case 'unsafe':
      return { writeback: true, direct: false, noFlush: true };
    default:
      return undefined;
  }
}

/** The device properties of a disk's driver settings: guest write cache, error policies, iothread. */
function driverProps(disk: DiskDefinition): QapiObject {
  const { errorPolicy, rerrorPolicy, iothread } = disk.driver;
  const cache = cacheFlags(disk);
  const qemuPolicy = (p: string): string => (p === 'enospace' ? 'enospc' : p);
  // libvirt: the read policy follows the write policy, except that enospace is for writes only.
  const read = rerrorPolicy ?? (errorPolicy === 'enospace' ? undefined : errorPolicy);
  return {
    ...(cache ? { 'write-cache': cache.writeback ? 'on' : 'off' } : {}),
    ...(errorPolicy ? { werror: qemuPolicy(errorPolicy) } : {}),
    ...(read ? { rerror: read } : {}),
    ...(iothread !== undefined ? { iothread: `iothread${iothread}` } : {}),
  };
}

/** The `-global` that gives a floppy its boot index (the isa-fdc holds it, as `bootindexA`/`B`). */
export function floppyBootIndex(def: DomainDefinition, disk: DiskDefinition): string | undefined {
  const order = disk.bootOrder ?? diskBootIndex(def, disk);
  if (disk.target.bus !== 'fdc' || order === undefined || disk.address?.type !== 'drive') return undefined;
  return `isa-fdc.bootindex${disk.address.unit === 0 ? 'A' : 'B'}=${order}`;
}

/** The guest-visible device of a disk (`device_add` arguments). */
export function diskDevice(def: DomainDefinition, disk: DiskDefinition, path: string): QapiObject {
  const alias = aliasOf(disk);
  const bootindex = disk.bootOrder ?? diskBootIndex(def, disk);
  const extra: QapiObject = {
    ...(disk.serial !== undefined ? { serial: disk.serial } : {}),
    // libvirt's qemuBuildDiskDeviceProps: the WWN as a 0x number, SCSI's INQUIRY strings.
    ...(disk.wwn !== undefined
      ? { wwn: u64(BigInt(disk.wwn.startsWith('0x') ? disk.wwn : `0x${disk.wwn}`)) }
      : {}),
    ...(disk.vendor !== undefined ? { vendor: disk.vendor } : {}),
    ...(disk.product !== undefined ? { product: disk.product } : {}),
    ...(bootindex !== undefined ? { bootindex } : {}),
    ...driverProps(disk),
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
      driver: virtioDevice('virtio-blk-pci', disk.model),
      ...pciPlacement(def, disk.address?.type === 'pci' ? disk.address : undefined, `disk ${alias}`),
      drive: diskNodes(alias).format,
      id: alias,
      ...extra,
      ...virtioProps(disk.virtio),
    };
  }
  const address = disk.address;
  if (disk.target.bus === 'fdc') {
    if (address?.type !== 'drive')
      throw new VirtError(ErrorCode.INTERNAL_ERROR, `floppy ${alias} has no drive address`);
    // libvirt's floppy on the pc machine's built-in isa-fdc; its boot index is the controller's
    // (floppyBootIndex). The floppy drive has no error policies.
    const cache = cacheFlags(disk);
    return {
      driver: 'floppy',
      unit: address.unit,
      drive: diskNodes(alias).format,
      id: alias,
      ...(cache ? { 'write-cache': cache.writeback ? 'on' : 'off' } : {}),
    };
  }
  if (disk.target.bus === 'usb') {
    const usb = def.controllers.find(
      (c) => c.type === 'usb' && c.model !== 'none' && !c.model?.startsWith('ich9-uhci'),
    );
    if (!usb?.alias)
      throw new VirtError(
        ErrorCode.CONFIG_UNSUPPORTED,
        `${path}.target.bus: a usb disk without a USB controller (add <controller type='usb' model='qemu-xhci'/>)`,
        { path: `${path}.target.bus` },
      );
    // libvirt's usb-storage: a fixed disk, on the port the definition names or one QEMU picks.
    return {
      driver: 'usb-storage',
      bus: `${usb.alias}.0`,
      ...(address?.type === 'usb' ? { port: address.port } : {}),
      drive: diskNodes(alias).format,
      id: alias,
      removable: false,
      ...extra,
    };
  }
  if (disk.target.bus === 'scsi' && address?.type === 'drive') {
    const controller = def.controllers.find(
      (c): c is Extract<typeof c, { type: 'scsi' }> => c.type === 'scsi' && c.index === address.controller,
    );
    if (!controller?.alias)
      throw new VirtError(ErrorCode.INTERNAL_ERROR, `scsi disk ${alias} has no controller`);
    const driver = disk.device === 'cdrom' ? 'scsi-cd' : 'scsi-hd';
    // libvirt's addressing: the LSI bus has one level (the unit is the SCSI id); virtio-scsi has
    // channel, target and LUN.
    if (controller.model === 'lsilogic') {
      if (address.target !== 0 || address.unit > 6)
        throw new VirtError(
          ErrorCode.CONFIG_UNSUPPORTED,
          `${path}.address: scsi position ${address.target}-${address.unit} on an lsilogic controller (target 0, units 0-6)`,
          { path: `${path}.address` },
        );
      return {
        driver,
        bus: `${controller.alias}.${address.bus}`,
        'scsi-id': address.unit,
        drive: diskNodes(alias).format,
        id: alias,
        ...extra,
      };
    }
    return {
      driver,
      bus: `${controller.alias}.0`,
      channel: address.bus,
      'scsi-id': address.target,
      lun: address.unit,
      drive: diskNodes(alias).format,
      id: alias,
      ...extra,
      ...virtioProps(disk.virtio),
    };
  }
  if (disk.target.bus === 'ide' && address?.type === 'drive') {
    return {
      driver: disk.device === 'cdrom' ? 'ide-cd' : 'ide-hd',
      bus: `ide.${address.bus}`,
      unit: address.unit,
      drive: diskNodes(alias).format,
      id: alias,
      ...extra,
      ...virtioProps(disk.virtio),
    };
  }
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

import { ErrorCode, VirtError } from '../errors.js';
import type { DiskDefinition, InterfaceDefinition, MemoryDeviceDefinition } from './definition/schema.js';
import { resolveDomainXml } from './definition/xml.js';
import type { OperationOptions } from './jobs.js';

/**
 * A device to attach or detach: one disk, one network interface or one memory device (DIMM).
 *
 * @public
 */
export type DeviceDefinition =
  | { readonly disk: DiskDefinition }
  | { readonly interface: InterfaceDefinition }
  | { readonly memory: MemoryDeviceDefinition };

/**
 * A disk or an interface: the devices that sit on a PCI slot.
 *
 * @internal
 */
export type PciDeviceDefinition = Exclude<DeviceDefinition, { readonly memory: unknown }>;

/**
 * A match of a disk or an interface.
 *
 * @internal
 */
export type PciDeviceMatch = { readonly alias: string } | { readonly device: PciDeviceDefinition };

/**
 * Which definitions a device change affects, as libvirt's `VIR_DOMAIN_AFFECT_LIVE` and
 * `VIR_DOMAIN_AFFECT_CONFIG`. With neither, the running domain when it runs, else the persistent
 * definition (libvirt's `AFFECT_CURRENT`).
 *
 * @public
 */
export interface DeviceChangeOptions extends OperationOptions {
  /** Change the running domain (and its live definition). */
  readonly live?: boolean;
  /** Change the persistent definition. */
  readonly config?: boolean;
}

/**
 * Options of `Domain.detachDevice`.
 *
 * @public
 */
export interface DetachDeviceOptions extends DeviceChangeOptions {
  /**
   * How long to wait for the guest to let go of the device (QEMU's `DEVICE_DELETED`), 10 s by
   * default; past it the detach fails with `OPERATION_TIMEOUT` and the device stays attached.
   */
  readonly timeoutMs?: number;
}

/**
 * Which device to detach: by alias, or by the device's definition (its alias when it has one,
 * else a disk's target or an interface's MAC address).
 *
 * @public
 */
export type DeviceMatch = { readonly alias: string } | { readonly device: DeviceDefinition };

/**
 * A `<disk>`, `<interface>` or `<memory model='dimm'>` element, as `virsh attach-device` takes it.
 *
 * @throws {@link VirtError} `XML_ERROR` or `CONFIG_UNSUPPORTED` as `parseDomainXml`, and
 *   `XML_ERROR` for a document that is not exactly one disk or interface
 * @internal
 */
export function parseDeviceXml(xml: string): DeviceDefinition {
  const body = xml.replace(/^\s*<\?xml[^>]*\?>/, '');
  // A memory device is only valid in a domain with a hot-pluggable range and room for it.
  const memory = /^\s*<memory[\s>]/.test(body)
    ? "<memory unit='TiB'>2</memory><maxMemory slots='256' unit='TiB'>4</maxMemory>"
    : "<memory unit='KiB'>1024</memory>";
  const def = resolveDomainXml(
    `<domain type='qemu'><name>device</name>${memory}<devices>${body}</devices></domain>`,
  );
  const [disk, ...moreDisks] = def.disks;
  const [nic, ...moreNics] = def.interfaces;
  const [dimm, ...moreDimms] = def.memoryDevices ?? [];
  const count =
    def.disks.length +
    def.interfaces.length +
    def.serials.length +
    def.controllers.length +
    (def.memoryDevices?.length ?? 0);
  if (count !== 1 || moreDisks.length > 0 || moreNics.length > 0 || moreDimms.length > 0 || def.memballoon) {
    throw new VirtError(
      ErrorCode.XML_ERROR,
      'a device document must be exactly one <disk>, <interface> or <memory> element',
      { path: '/' },
    );
  }
  if (disk) return { disk };
  if (nic) return { interface: nic };
  if (dimm) return { memory: dimm };
  throw new VirtError(
    ErrorCode.XML_ERROR,
    'a device document must be one <disk>, <interface> or <memory> element',
    {
      path: '/',
    },
  );
}

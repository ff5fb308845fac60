import { ErrorCode, VirtError } from '../../errors.js';
import type {
  DiskDefinition,
  DomainDefinition,
  InterfaceDefinition,
} from '../../stable/definition/schema.js';
import { resolveDefinition } from '../../stable/definition/validate.js';
import type {
  DeviceChangeOptions,
  DeviceDefinition,
  DeviceMatch,
  PciDeviceDefinition,
  PciDeviceMatch,
} from '../../stable/devices.js';

/*
 * The definition side of the test driver's device changes, with the embedded driver's rules
 * (drivers/qemu/hotplug.ts): which definitions a change affects, the refusals, matching by alias,
 * target or MAC. The test driver has no device model: a device without an alias gets libvirt's name
 * (`virtio-disk<N>`, `sata0-0-<N>` from the target's letter, `net<N>` the first free), no address.
 */

/** Which definitions a change affects: none asked means the live one of an active domain, else the persistent one. */
export function affected(
  name: string,
  active: boolean,
  options: DeviceChangeOptions,
): { live: boolean; config: boolean } {
  const live = options.live ?? false;
  const config = options.config ?? false;
  if (!live && !config) return { live: active, config: !active };
  if (live && !active) {
    throw new VirtError(
      ErrorCode.OPERATION_INVALID,
      `domain '${name}' is not running: a live device change needs a running domain`,
    );
  }
  return { live, config };
}

/** The test driver models no memory devices: a DIMM is refused with `CONFIG_UNSUPPORTED`. */
export function pciOnly(device: DeviceDefinition): PciDeviceDefinition {
  if ('memory' in device) {
    throw new VirtError(ErrorCode.CONFIG_UNSUPPORTED, 'the test driver does not model memory devices', {
      path: 'memory',
    });
  }
  return device;
}

/** {@link pciOnly} for a match. */
export function pciMatch(match: DeviceMatch): PciDeviceMatch {
  return 'alias' in match ? match : { device: pciOnly(match.device) };
}

/** The sata refusal of a live change (QEMU's AHCI has no hotplug). */
export function checkHotpluggable(device: PciDeviceDefinition, detach: boolean): void {
  if ('disk' in device && device.disk.target.bus === 'sata') {
    throw new VirtError(
      ErrorCode.CONFIG_UNSUPPORTED,
      detach
        ? 'a sata disk cannot be hot-unplugged; detach it from the persistent definition'
        : "a sata disk cannot be hot-plugged (QEMU's AHCI has no hotplug); use the virtio bus",
      { path: 'disk.target.bus' },
    );
  }
}

export const aliasOf = (device: PciDeviceDefinition): string =>
  ('disk' in device ? device.disk.alias : device.interface.alias) ?? '';

function diskAlias(disk: DiskDefinition): string {
  const letters = disk.target.dev.replace(/^(vd|sd|hd)/, '');
  let n = 0;
  for (const c of letters) n = n * 26 + (c.charCodeAt(0) - 96);
  return disk.target.bus === 'sata' ? `sata0-0-${n - 1}` : `virtio-disk${n - 1}`;
}

/** The definition with the device added (alias named when missing) and validated, and the device as added. */
export function addTo(
  def: DomainDefinition,
  device: PciDeviceDefinition,
): { def: DomainDefinition; device: PciDeviceDefinition } {
  if ('disk' in device) {
    const disk = { ...device.disk, alias: device.disk.alias ?? diskAlias(device.disk) };
    const next = resolveDefinition({ ...def, disks: [...def.disks, disk] });
    return { def: next, device: { disk: next.disks.at(-1) as DiskDefinition } };
  }
  const taken = new Set(def.interfaces.map((n) => n.alias));
  let n = 0;
  while (taken.has(`net${n}`)) n++;
  const nic = { ...device.interface, alias: device.interface.alias ?? `net${n}` };
  const next = resolveDefinition({ ...def, interfaces: [...def.interfaces, nic] });
  return { def: next, device: { interface: next.interfaces.at(-1) as InterfaceDefinition } };
}

/** The device a match names in a definition; undefined when it has none. */
export function find(def: DomainDefinition, match: PciDeviceMatch): PciDeviceDefinition | undefined {
  if ('alias' in match) {
    const disk = def.disks.find((d) => d.alias === match.alias);
    if (disk) return { disk };
    const nic = def.interfaces.find((n) => n.alias === match.alias);
    return nic && { interface: nic };
  }
  const wanted = match.device;
  if ('disk' in wanted) {
    const disk = def.disks.find((d) =>
      wanted.disk.alias !== undefined
        ? d.alias === wanted.disk.alias
        : d.target.dev === wanted.disk.target.dev,
    );
    return disk && { disk };
  }
  const nic = def.interfaces.find((n) =>
    wanted.interface.alias !== undefined
      ? n.alias === wanted.interface.alias
      : wanted.interface.mac !== undefined && n.mac?.toLowerCase() === wanted.interface.mac.toLowerCase(),
  );
  return nic && { interface: nic };
}

export function without(def: DomainDefinition, device: PciDeviceDefinition): DomainDefinition {
  return 'disk' in device
    ? { ...def, disks: def.disks.filter((d) => d !== device.disk) }
    : { ...def, interfaces: def.interfaces.filter((n) => n !== device.interface) };
}

/** `def` with `count` vCPUs online (`current` dropped when all are). */
export function withVcpus(def: DomainDefinition, count: number): DomainDefinition {
  const { current: _, ...vcpu } = def.vcpu;
  return { ...def, vcpu: count === vcpu.count ? vcpu : { ...vcpu, current: count } };
}

/** At most the definition's maximum, as the embedded driver checks it. */
export function checkVcpuCount(def: DomainDefinition, count: number, which: string): void {
  if (count > def.vcpu.count) {
    throw new VirtError(
      ErrorCode.OPERATION_INVALID,
      `domain '${def.name}' has at most ${def.vcpu.count} vCPU(s) in its ${which} definition, ${count} were asked for; raise <vcpu> (the maximum) in the persistent definition and restart it first`,
      { path: 'vcpu.count', count, maximum: def.vcpu.count },
    );
  }
}

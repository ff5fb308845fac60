import { ErrorCode, VirtError } from '../errors.js';
import type {
  DiskDefinition,
  DomainDefinition,
  InterfaceDefinition,
  MemoryDeviceDefinition,
} from '../stable/definition/schema.js';
import { resolveDefinition } from '../stable/definition/validate.js';
import type {
  DeviceChangeOptions,
  DeviceDefinition,
  DeviceMatch,
  PciDeviceDefinition,
  PciDeviceMatch,
} from '../stable/devices.js';
import { assignDimms } from './device-aliases.js';

/*
 * The definition side of a device change (libvirt's qemuDomainAttachDeviceFlags and friends), one
 * set of rules for both drivers: which definitions a change affects, the refusals, matching by
 * alias, target or MAC, the vCPU count's bounds and a DIMM's fit. The embedded driver adds its
 * device model (addresses, controllers) and QEMU; the test driver simulates the rest.
 */

/** Which definitions a change affects. */
export interface Affect {
  readonly live: boolean;
  readonly config: boolean;
}

/**
 * libvirt's AFFECT_LIVE/AFFECT_CONFIG/AFFECT_CURRENT: none asked means the live definition of an
 * active domain, else the persistent one; `live` needs a domain that runs (`running`).
 */
export function affect(
  name: string,
  state: { readonly active: boolean; readonly running: boolean },
  options: DeviceChangeOptions,
): Affect {
  const live = options.live ?? false;
  const config = options.config ?? false;
  if (!live && !config) return { live: state.active, config: !state.active };
  if (live && !state.running) {
    throw new VirtError(
      ErrorCode.OPERATION_INVALID,
      `domain '${name}' is not running: a live device change needs a running domain`,
    );
  }
  return { live, config };
}

/** The alias of a disk or interface (empty when it has none yet). */
export const aliasOf = (device: PciDeviceDefinition): string =>
  ('disk' in device ? device.disk.alias : device.interface.alias) ?? '';

/** Only virtio disks can be hot-(un)plugged: QEMU's AHCI and IDE have no hotplug. */
export function checkHotpluggable(device: PciDeviceDefinition, detach: boolean): void {
  if (!('disk' in device) || device.disk.target.bus === 'virtio') return;
  const bus = device.disk.target.bus;
  throw new VirtError(
    ErrorCode.CONFIG_UNSUPPORTED,
    detach
      ? `a ${bus} disk cannot be hot-unplugged; detach it from the persistent definition`
      : `a ${bus} disk cannot be hot-plugged (QEMU's AHCI and IDE have no hotplug); use the virtio bus`,
    { path: 'disk.target.bus' },
  );
}

/** The definition with the device appended (not yet validated or assigned). */
export function withDevice(def: DomainDefinition, device: PciDeviceDefinition): DomainDefinition {
  return 'disk' in device
    ? { ...def, disks: [...def.disks, device.disk] }
    : { ...def, interfaces: [...def.interfaces, device.interface] };
}

/** The device a definition ends with (the one {@link withDevice} appended). */
export function lastDevice(def: DomainDefinition, like: PciDeviceDefinition): PciDeviceDefinition {
  return 'disk' in like
    ? { disk: def.disks[def.disks.length - 1] as DiskDefinition }
    : { interface: def.interfaces[def.interfaces.length - 1] as InterfaceDefinition };
}

/** The device a match names in a definition; undefined when it has none. */
export function findDevice(def: DomainDefinition, match: PciDeviceMatch): PciDeviceDefinition | undefined {
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

/** The definition without a device {@link findDevice} returned. */
export function withoutDevice(def: DomainDefinition, device: PciDeviceDefinition): DomainDefinition {
  return 'disk' in device
    ? { ...def, disks: def.disks.filter((d) => d !== device.disk) }
    : { ...def, interfaces: def.interfaces.filter((n) => n !== device.interface) };
}

/** The refusal of a change that names no device of the definition. */
export function noSuchDevice(name: string, match: DeviceMatch, which: 'running' | 'persistent'): VirtError {
  const what = 'alias' in match ? `alias '${match.alias}'` : 'the device given';
  return new VirtError(
    ErrorCode.OPERATION_INVALID,
    `domain '${name}' has no device with ${what} in its ${which} definition`,
  );
}

/** `def` with `count` vCPUs online (`current` dropped when all are). */
export function withVcpus(def: DomainDefinition, count: number): DomainDefinition {
  const { current: _, ...vcpu } = def.vcpu;
  return { ...def, vcpu: count === vcpu.count ? vcpu : { ...vcpu, current: count } };
}

/** At most the definition's maximum. */
export function checkVcpuCount(def: DomainDefinition, count: number, which: 'running' | 'persistent'): void {
  if (count > def.vcpu.count) {
    throw new VirtError(
      ErrorCode.OPERATION_INVALID,
      `domain '${def.name}' has at most ${def.vcpu.count} vCPU(s) in its ${which} definition, ${count} were asked for; raise <vcpu> (the maximum) in the persistent definition and restart it first`,
      { path: 'vcpu.count', count, maximum: def.vcpu.count },
    );
  }
}

/** The TCG refusal of a vCPU unplug (QEMU 7.2 crashes on the next hotplug after one). */
export function tcgUnplugRefused(name: string, current: number, count: number): VirtError {
  return new VirtError(
    ErrorCode.CONFIG_UNSUPPORTED,
    `vCPUs cannot be unplugged from TCG domain '${name}' (type 'qemu'): QEMU's TCG crashes on the next vCPU hotplug after an unplug; lower the count with config and restart the domain`,
    { path: 'count', current, count },
  );
}

/** The refusal of a vCPU hotplug after a TCG rollback unplugged one. */
export function tcgReplugRefused(name: string): VirtError {
  return new VirtError(
    ErrorCode.CONFIG_UNSUPPORTED,
    `a vCPU was unplugged from TCG domain '${name}' (by an earlier rollback); QEMU's TCG crashes on the next vCPU hotplug after that, so vCPUs can be added only after a restart of the domain`,
    { path: 'count' },
  );
}

/** Splits a device into a memory device or a disk/interface. */
export function isMemory(device: DeviceDefinition): device is { readonly memory: MemoryDeviceDefinition } {
  return 'memory' in device;
}

/** True when a match names a memory device (by its element, or by the alias of a DIMM of one of `defs`). */
export function isMemoryMatch(
  defs: ReadonlyArray<DomainDefinition | undefined>,
  match: DeviceMatch,
): boolean {
  if ('device' in match) return 'memory' in match.device;
  return defs.some((def) => def?.memoryDevices?.some((d) => d.alias === match.alias) ?? false);
}

/**
 * DIMMs are RAM-backed: with `<hugepages/>`, a file or memfd source or an access mode libvirt
 * gives them the guest memory's kind of backend, which virtkit does not back DIMMs with yet, so
 * it refuses rather than silently use ordinary private pages.
 */
export function checkDimmBacking(def: DomainDefinition, path = 'memoryDevices'): void {
  const b = def.memoryBacking;
  if (b && (b.source === 'file' || b.source === 'memfd' || b.access !== undefined) && !b.hugepages) {
    throw new VirtError(
      ErrorCode.CONFIG_UNSUPPORTED,
      `domain '${def.name}' has file, memfd or shared/private memory: memory devices (DIMMs) on such memory are not supported yet; remove <source>/<access> from <memoryBacking> or add the memory to <memory> and restart`,
      { path },
    );
  }
  if (b?.hugepages) {
    throw new VirtError(
      ErrorCode.CONFIG_UNSUPPORTED,
      `domain '${def.name}' has hugepage-backed memory: memory devices (DIMMs) on hugepages are not supported yet; remove <hugepages/> or add the memory to <memory> and restart`,
      { path },
    );
  }
}

/**
 * The definition with the DIMM added (counted in the memory, slot and alias assigned), or a typed
 * refusal: no `<maxMemory>`, no free slot, too big, hugepage-backed.
 */
export function withDimm(
  def: DomainDefinition,
  dimm: MemoryDeviceDefinition,
): { def: DomainDefinition; dimm: MemoryDeviceDefinition } {
  const max = def.maxMemory;
  if (!max) {
    throw new VirtError(
      ErrorCode.CONFIG_UNSUPPORTED,
      `domain '${def.name}' has no <maxMemory slots='N'>: memory can only be hot-plugged into a hot-pluggable range; add one to the persistent definition and restart`,
      { path: 'maxMemory' },
    );
  }
  checkDimmBacking(def, 'memory');
  const dimms = def.memoryDevices ?? [];
  if (dimms.length >= max.slots) {
    throw new VirtError(
      ErrorCode.OPERATION_INVALID,
      `domain '${def.name}' has no free memory slot: all ${max.slots} slot(s) of <maxMemory> are taken`,
      { path: 'maxMemory.slots', slots: max.slots },
    );
  }
  if (def.memoryKiB + dimm.sizeKiB > max.kib) {
    throw new VirtError(
      ErrorCode.OPERATION_INVALID,
      `a ${dimm.sizeKiB} KiB memory device does not fit: domain '${def.name}' has ${def.memoryKiB} of at most ${max.kib} KiB`,
      { path: 'memory.sizeKiB', memoryKiB: def.memoryKiB, maxMemoryKiB: max.kib },
    );
  }
  const grown = resolveDefinition({
    ...def,
    memoryKiB: def.memoryKiB + dimm.sizeKiB,
    ...(def.currentMemoryKiB !== undefined ? { currentMemoryKiB: def.currentMemoryKiB + dimm.sizeKiB } : {}),
    memoryDevices: [...dimms, dimm],
  });
  const assigned = assignDimms(grown) ?? [];
  const next = { ...grown, memoryDevices: assigned };
  return { def: next, dimm: assigned.at(-1) as MemoryDeviceDefinition };
}

/** The definition without a DIMM {@link findDimm} returned (its size taken off the memory). */
export function withoutDimm(def: DomainDefinition, dimm: MemoryDeviceDefinition): DomainDefinition {
  const rest = (def.memoryDevices ?? []).filter((d) => d !== dimm);
  return {
    ...def,
    memoryKiB: def.memoryKiB - dimm.sizeKiB,
    ...(def.currentMemoryKiB !== undefined
      ? { currentMemoryKiB: Math.min(def.currentMemoryKiB, def.memoryKiB - dimm.sizeKiB) }
      : {}),
    memoryDevices: rest.length > 0 ? rest : undefined,
  };
}

/** The DIMM a match names: by alias, else slot, else size (and node). */
export function findDimm(def: DomainDefinition, match: DeviceMatch): MemoryDeviceDefinition | undefined {
  const dimms = def.memoryDevices ?? [];
  if ('alias' in match) return dimms.find((d) => d.alias === match.alias);
  if (!('memory' in match.device)) return undefined;
  const wanted = match.device.memory;
  return dimms.find((d) =>
    wanted.alias !== undefined
      ? d.alias === wanted.alias
      : wanted.slot !== undefined
        ? d.slot === wanted.slot
        : d.sizeKiB === wanted.sizeKiB && (wanted.node === undefined || d.node === wanted.node),
  );
}

/** The refusal of a memory detach that names no DIMM of the definition. */
export function noSuchDimm(name: string, which: 'running' | 'persistent'): VirtError {
  return new VirtError(
    ErrorCode.OPERATION_INVALID,
    `domain '${name}' has no such memory device in its ${which} definition`,
  );
}

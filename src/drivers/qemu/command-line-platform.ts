import { ErrorCode, VirtError } from '../../errors.js';
import type { DomainDefinition } from '../../stable/definition/schema.js';
import { parseCpuset } from '../../util/cpuset.js';
import { type MemoryBackingHost, memoryBackend } from './devices/memory-backend.js';
import type { FirmwarePaths } from './firmware.js';

/*
 * The QEMU arguments of the platform parts of a definition (schema-platform.ts), as libvirt's
 * qemu_command.c builds them for QEMU 7.2: machine properties, CPU properties, firmware, SMBIOS,
 * power management, clock and timers, NUMA cells.
 */

/** QEMU's option syntax doubles commas inside values. */
const esc = (value: string): string => value.replaceAll(',', ',,');
const onOff = (value: boolean): string => (value ? 'on' : 'off');

const unsupported = (path: string, what: string): VirtError =>
  new VirtError(ErrorCode.CONFIG_UNSUPPORTED, `${what} is not supported by virtkit`, { path });

/** Whether the machine is a q35 (ICH9) rather than an i440fx (PIIX) one. */
export function isQ35(def: DomainDefinition): boolean {
  return /q35/.test(def.os.machine ?? '');
}

/** Properties for `-machine`, each `key=value`. */
export function machineProps(def: DomainDefinition, fw: FirmwarePaths | undefined): string[] {
  const f = def.features;
  const props: string[] = [];
  if (f?.smm !== undefined) props.push(`smm=${onOff(f.smm)}`);
  if (f?.vmport !== undefined) props.push(`vmport=${onOff(f.vmport)}`);
  if (f?.ioapic !== undefined) props.push(`kernel_irqchip=${f.ioapic === 'qemu' ? 'split' : 'on'}`);
  const hpet = def.clock?.timers?.find((t) => t.name === 'hpet');
  if (hpet?.present !== undefined) props.push(`hpet=${onOff(hpet.present)}`);
  if (fw?.type === 'pflash') {
    props.push('pflash0=libvirt-pflash0-format');
    if (fw.vars) props.push('pflash1=libvirt-pflash1-format');
  }
  return props;
}

/** Properties for `-cpu` beyond the model and `<feature>`s, each `,key=value`. */
export function cpuProps(def: DomainDefinition): string {
  const props: string[] = [];
  // libvirt's qemuBuildCpuModelArgStr: the cache, then the physical address bits.
  const cache = def.cpu?.cache;
  const hostCpu = def.cpu?.mode === 'host-passthrough';
  if (cache?.mode === 'emulate') props.push('l3-cache=on');
  if (cache?.mode === 'passthrough') props.push('host-cache-info=on');
  if (cache && cache.mode !== 'passthrough' && hostCpu) props.push('host-cache-info=off');
  if (cache && cache.mode !== 'emulate') props.push('l3-cache=off');
  const addr = def.cpu?.maxphysaddr;
  if (addr?.mode === 'passthrough') props.push('host-phys-bits=on');
  if (addr?.mode === 'emulate' && addr.bits !== undefined) props.push(`phys-bits=${addr.bits}`);
  const f = def.features;
  const timers = def.clock?.timers ?? [];
  const kvmclock = timers.find((t) => t.name === 'kvmclock');
  if (kvmclock?.present !== undefined) props.push(`kvmclock=${onOff(kvmclock.present)}`);
  const tsc = timers.find((t) => t.name === 'tsc');
  if (tsc?.frequency !== undefined) props.push(`tsc-frequency=${tsc.frequency}`);
  if (f?.kvm?.hidden) props.push('kvm=off');
  if (f?.apicEoi !== undefined) props.push(`kvm-pv-eoi=${onOff(f.apicEoi)}`);
  if (f?.pvspinlock !== undefined) props.push(`kvm-pv-unhalt=${onOff(f.pvspinlock)}`);
  if (f?.pmu !== undefined) props.push(`pmu=${onOff(f.pmu)}`);
  if (f?.kvm?.hintDedicated !== undefined) props.push(`kvm-hint-dedicated=${onOff(f.kvm.hintDedicated)}`);
  if (f?.kvm?.pollControl !== undefined) props.push(`kvm-poll-control=${onOff(f.kvm.pollControl)}`);
  if (f?.kvm?.pvIpi !== undefined) props.push(`kvm-pv-ipi=${onOff(f.kvm.pvIpi)}`);
  const hv = f?.hyperv;
  if (def.panics?.some((p) => p.model === 'hyperv')) props.push('hv-crash=on');
  const hvclock = timers.find((t) => t.name === 'hypervclock');
  if (hvclock?.present !== undefined) props.push(`hv-time=${onOff(hvclock.present)}`);
  if (hv?.mode === 'passthrough') props.push('hv-passthrough=on');
  if (hv) {
    const simple = [
      ['relaxed', 'hv-relaxed'],
      ['vapic', 'hv-vapic'],
      ['vpindex', 'hv-vpindex'],
      ['runtime', 'hv-runtime'],
      ['synic', 'hv-synic'],
      ['reset', 'hv-reset'],
      ['frequencies', 'hv-frequencies'],
      ['reenlightenment', 'hv-reenlightenment'],
      ['tlbflush', 'hv-tlbflush'],
      ['ipi', 'hv-ipi'],
      ['evmcs', 'hv-evmcs'],
    ] as const;
    for (const [key, prop] of simple) {
      const entry = hv[key];
      if (entry?.state) props.push(`${prop}=on`);
    }
    if (hv.spinlocks?.state) props.push(`hv-spinlocks=0x${(hv.spinlocks.retries ?? 8191).toString(16)}`);
    if (hv.stimer?.state) {
      props.push('hv-stimer=on');
      if (hv.stimer.direct) props.push('hv-stimer-direct=on');
    }
    if (hv.vendorId?.state && hv.vendorId.value) props.push(`hv-vendor-id=${esc(hv.vendorId.value)}`);
  }
  return props.map((p) => `,${p}`).join('');
}

/** The firmware: pflash block nodes (with `machineProps`), or `-bios` for a ROM. */
export function firmwareArgs(fw: FirmwarePaths | undefined): string[] {
  if (!fw) return [];
  if (fw.type === 'rom') return ['-bios', fw.code];
  const args: string[] = [];
  const units: Array<[string, boolean]> = [[fw.code, fw.readonly]];
  if (fw.vars) units.push([fw.vars, false]);
  units.forEach(([filename, readOnly], unit) => {
    const node = `libvirt-pflash${unit}`;
    args.push(
      '-blockdev',
      JSON.stringify({
        driver: 'file',
        filename,
        'node-name': `${node}-storage`,
        'auto-read-only': true,
        discard: 'unmap',
      }),
      '-blockdev',
      JSON.stringify({
        'node-name': `${node}-format`,
        'read-only': readOnly,
        driver: 'raw',
        file: `${node}-storage`,
      }),
    );
  });
  return args;
}

const SMBIOS_KEYS = {
  bios: [0, ['vendor', 'version', 'date', 'release']],
  system: [1, ['manufacturer', 'product', 'version', 'serial', 'uuid', 'sku', 'family']],
  baseBoard: [2, ['manufacturer', 'product', 'version', 'serial', 'asset', 'location']],
  chassis: [3, ['manufacturer', 'version', 'serial', 'asset', 'sku']],
} as const;

function smbiosEntry(
  type: number,
  keys: readonly string[],
  entries: Readonly<Record<string, string>>,
  path: string,
): string[] {
  const parts: string[] = [];
  for (const [key, value] of Object.entries(entries)) {
    if (!keys.includes(key)) throw unsupported(`${path}.${key}`, `the SMBIOS type ${type} entry '${key}'`);
    parts.push(`${key}=${esc(value)}`);
  }
  return parts.length > 0 ? ['-smbios', `type=${type},${parts.join(',')}`] : [];
}

/** `-smbios` tables from `sysinfo`, when `os.smbios` asks for them. */
export function smbiosArgs(def: DomainDefinition): string[] {
  const info = def.sysinfo;
  if (def.os.smbios !== 'sysinfo' || !info) return [];
  const system = info.system;
  if (system?.uuid !== undefined && system.uuid.toLowerCase() !== def.uuid) {
    throw new VirtError(
      ErrorCode.XML_ERROR,
      `the SMBIOS system uuid ${system.uuid} differs from the domain's ${def.uuid}; they must be the same`,
      { path: 'sysinfo.system.uuid' },
    );
  }
  const args: string[] = [];
  if (info.bios) args.push(...smbiosEntry(0, SMBIOS_KEYS.bios[1], info.bios, 'sysinfo.bios'));
  if (system) args.push(...smbiosEntry(1, SMBIOS_KEYS.system[1], system, 'sysinfo.system'));
  info.baseBoard?.forEach((b, i) => {
    args.push(...smbiosEntry(2, SMBIOS_KEYS.baseBoard[1], b, `sysinfo.baseBoard.${i}`));
  });
  if (info.chassis) args.push(...smbiosEntry(3, SMBIOS_KEYS.chassis[1], info.chassis, 'sysinfo.chassis'));
  for (const value of info.oemStrings ?? []) args.push('-smbios', `type=11,value=${esc(value)}`);
  return args;
}

/** `-global` switches of power management (ACPI S3 and S4). */
export function pmArgs(def: DomainDefinition): string[] {
  const pm = def.pm;
  if (!pm) return [];
  const device = isQ35(def) ? 'ICH9-LPC' : 'PIIX4_PM';
  const args: string[] = [];
  if (pm.suspendToMem !== undefined) args.push('-global', `${device}.disable_s3=${pm.suspendToMem ? 0 : 1}`);
  if (pm.suspendToDisk !== undefined)
    args.push('-global', `${device}.disable_s4=${pm.suspendToDisk ? 0 : 1}`);
  return args;
}

/** `-rtc` and the PIT's tick policy. `nowMs` is the start time, for a `variable` offset. */
export function clockArgs(def: DomainDefinition, nowMs: number): string[] {
  const clock = def.clock;
  let base: string = clock?.offset ?? 'utc';
  if (clock?.offset === 'variable') {
    // libvirt's variable offset: the RTC starts at the basis time shifted by the adjustment.
    const localShift = clock.basis === 'localtime' ? -new Date(nowMs).getTimezoneOffset() * 60 : 0;
    const start = new Date(nowMs + ((clock.adjustment ?? 0) + localShift) * 1000);
    base = start.toISOString().slice(0, 19);
  }
  let rtc = `base=${base}`;
  const args: string[] = [];
  for (const [i, t] of (clock?.timers ?? []).entries()) {
    const path = `clock.timers.${i}`;
    if (t.name === 'rtc') {
      if (t.present === false) throw unsupported(`${path}.present`, 'an x86 guest without RTC');
      if (t.track === 'guest') rtc += ',clock=vm';
      else if (t.track === 'wall') rtc += ',clock=host';
      else if (t.track === 'realtime') rtc += ',clock=rt';
      if (t.tickpolicy === 'catchup') rtc += ',driftfix=slew';
      else if (t.tickpolicy === 'merge' || t.tickpolicy === 'discard') {
        throw unsupported(`${path}.tickpolicy`, `the RTC tick policy '${t.tickpolicy}'`);
      }
    } else if (t.name === 'pit') {
      if (t.tickpolicy === 'catchup' || t.tickpolicy === 'merge') {
        throw unsupported(`${path}.tickpolicy`, `the PIT tick policy '${t.tickpolicy}'`);
      }
      // Only KVM's in-kernel PIT has a lost-tick policy; QEMU's own PIT under TCG delays ticks.
      if (t.tickpolicy && def.type === 'kvm')
        args.push('-global', `kvm-pit.lost_tick_policy=${t.tickpolicy}`);
    } else if (t.name === 'hpet' && t.track === undefined) {
      // libvirt gives QEMU only the HPET's presence (-machine hpet=, above) and ignores a tick
      // policy on it, which KubeVirt writes: kept in the definition, without effect, as there.
    } else if (t.tickpolicy !== undefined || t.track !== undefined) {
      throw unsupported(`${path}`, `a tick policy or track for the ${t.name} timer`);
    }
  }
  return ['-rtc', rtc, ...args];
}

/** NUMA cells: a memory backend (memoryBackend) and a `-numa node` each. */
export function numaArgs(def: DomainDefinition, host: MemoryBackingHost): string[] {
  const cells = def.cpu?.numa;
  if (!cells) return [];
  const args: string[] = [];
  cells.forEach((cell, i) => {
    const id = `ram-node${i}`;
    args.push('-object', JSON.stringify(memoryBackend(def, host, id, cell.memoryKiB, i)));
    const cpus = compactRanges(cell.cpus === undefined ? [] : (parseCpuset(cell.cpus) ?? []));
    args.push('-numa', ['node', `nodeid=${i}`, ...cpus.map((r) => `cpus=${r}`), `memdev=${id}`].join(','));
  });
  return args;
}

/** `[0,1,2,5]` → `['0-2', '5']`. */
function compactRanges(ids: readonly number[]): string[] {
  const sorted = [...ids].sort((a, b) => a - b);
  const out: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && (sorted[j + 1] as number) === (sorted[j] as number) + 1) j++;
    out.push(i === j ? `${sorted[i]}` : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return out;
}

/** `-boot`: strict order always, the menu when asked for. */
export function bootArgs(def: DomainDefinition): string[] {
  const menu = def.os.bootmenu;
  let boot = 'strict=on';
  if (menu?.enable)
    boot = `menu=on${menu.timeout !== undefined ? `,splash-time=${menu.timeout}` : ''},${boot}`;
  return ['-boot', boot];
}

/** Devices a feature stands for: the vmcoreinfo fw_cfg entry. */
export function featureDevices(def: DomainDefinition): string[] {
  return def.features?.vmcoreinfo ? ['-device', 'vmcoreinfo'] : [];
}

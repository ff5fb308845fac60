import { ErrorCode, VirtError } from '../../errors.js';
import type { DomainDefinition } from '../../stable/definition/schema.js';
import { parseCpuset } from '../../util/cpuset.js';
import { extraDeviceArgs } from './command-line-devices.js';
import {
  bootArgs,
  clockArgs,
  cpuProps,
  featureDevices,
  firmwareArgs,
  machineProps,
  numaArgs,
  pmArgs,
  smbiosArgs,
} from './command-line-platform.js';
import { assignDevices } from './devices/assign.js';
import { balloonDevice } from './devices/balloon.js';
import { chardevArg } from './devices/chardev.js';
import { controllerDevice, pciRootGlobals } from './devices/controller.js';
import {
  backingAlias,
  backingBlockdevs,
  diskBlockdevs,
  diskDevice,
  floppyBootIndex,
} from './devices/disk.js';
import { fdsetIdOf } from './devices/fdset.js';
import { bootMemoryKiB, dimmArgs } from './devices/memory.js';
import {
  type MemoryBackingHost,
  memoryBackend,
  memoryBackingDir,
  numaBinding,
} from './devices/memory-backend.js';
import { netdevOf, nicDevice } from './devices/net.js';
import type { QapiObject } from './devices/qapi.js';
import { serialDevice } from './devices/serial.js';
import type { FirmwarePaths } from './firmware.js';

/**
 * What the command line needs besides the definition: where things live and which file
 * descriptors the child will hold (the start-up sequence allocates them).
 */
export interface CommandLineContext {
  /** Inherited fd of the listening QMP socket. */
  readonly monitorFd: number;
  /** Default path of a file serial without one. */
  readonly consolePath: string;
  /** Home directory given to QEMU. */
  readonly homeDir: string;
  /** Inherited fd of each disk's image, in definition order (opened in `pre-exec`). */
  /** Per disk; undefined for an empty CD-ROM. */
  readonly diskFds: ReadonlyArray<number | undefined>;
  /** Inherited read-only fd of each disk's backing image (undefined without one), in definition order. */
  readonly backingFds?: ReadonlyArray<number | undefined>;
  /** The host's hugetlbfs mount points by page size in KiB, when the definition asks for huge pages. */
  readonly hugepageMounts?: Readonly<Record<number, string>>;
  /** The host's default huge page size in KiB (`<hugepages/>` without a `<page>`). */
  readonly defaultHugepageKiB?: number;
  /** The host's online NUMA nodes, to refuse a `<numatune>` naming others (none: not checked). */
  readonly hostNumaNodes?: readonly number[];
  /** Inherited TAP fds of each interface (undefined for non-TAP interfaces), in definition order. */
  readonly tapFds: ReadonlyArray<readonly number[] | undefined>;
  /** The firmware files (resolveFirmware), when the domain does not boot QEMU's default BIOS. */
  readonly firmware?: FirmwarePaths;
  /** Where sockets of devices go (VNC, channels): the root's `run/`. */
  readonly runDir?: string;
  /** The start time, for a clock with a `variable` offset (milliseconds since the epoch). */
  readonly nowMs?: number;
}

/** The command line, environment and the taints it implies. */
export interface CommandLine {
  readonly argv: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  readonly taints: readonly string[];
  /** The definition with defaults the command line chose (aliases, MACs, serial paths) filled in. */
  readonly live: DomainDefinition;
}

/** QEMU's option syntax doubles commas inside values. */
const esc = (value: string): string => value.replaceAll(',', ',,');

/**
 * Turns a definition into QEMU's argv, deterministically: the same definition and context always
 * give the same argv. QEMU always starts with `-S`; the start-up sequence resumes it.
 */
export function buildCommandLine(def: DomainDefinition, ctx: CommandLineContext): CommandLine {
  const argv: string[] = [];
  const add = (...args: string[]) => argv.push(...args);
  const taints: string[] = [];

  add('-name', `guest=${def.name},debug-threads=on`, '-S', '-uuid', def.uuid);
  add('-no-user-config', '-nodefaults', '-msg', 'timestamp=on');
  const acpi = def.features?.acpi ?? true;
  const machineExtra = machineProps(def, ctx.firmware)
    .map((p) => `,${p}`)
    .join('');
  add(
    '-machine',
    `${def.os.machine ?? 'pc'},usb=off,dump-guest-core=off,acpi=${acpi ? 'on' : 'off'}${machineExtra}`,
  );
  add('-accel', def.type === 'kvm' ? 'kvm' : 'tcg');
  const cpuFeatures =
    (def.cpu?.features ?? [])
      .filter((f) => f.policy !== 'optional')
      .map((f) => `,${f.policy === 'require' || f.policy === 'force' ? '+' : '-'}${f.name}`)
      .join('') + cpuProps(def);
  let cpuModel: string | undefined;
  if (def.cpu?.mode === 'host-passthrough' && def.type !== 'kvm') {
    // As libvirt at start: TCG emulates a CPU and has no host CPU to pass through (QEMU's `-cpu
    // host` needs KVM). A definition stays valid: it may be started on a KVM host as type kvm.
    throw new VirtError(
      ErrorCode.CONFIG_UNSUPPORTED,
      "CPU mode 'host-passthrough' needs KVM, and this domain's type is 'qemu' (TCG): use mode 'host-model' (TCG's 'max' CPU) or a named model, or type 'kvm'",
      { path: 'cpu.mode' },
    );
  }
  if (def.cpu?.mode === 'host-passthrough') cpuModel = 'host';
  else if (def.cpu?.model) cpuModel = def.cpu.model;
  else if (def.cpu?.mode === 'host-model') cpuModel = def.type === 'kvm' ? 'host' : 'max';
  else if (cpuFeatures) cpuModel = def.type === 'kvm' ? 'kvm64' : 'qemu64';
  if (cpuModel) add('-cpu', `${cpuModel}${cpuFeatures}`);

  let memory = `size=${bootMemoryKiB(def)}k`;
  if (def.maxMemory) memory += `,slots=${def.maxMemory.slots},maxmem=${def.maxMemory.kib}k`;
  add('-m', memory);
  add(...firmwareArgs(ctx.firmware));
  const hostNodes = numaBinding(def, undefined)?.['host-nodes'] ?? [];
  for (const m of def.numatune?.memnodes ?? []) hostNodes.push(...(parseCpuset(m.nodeset) ?? []));
  const online = ctx.hostNumaNodes;
  const missingNode = online ? hostNodes.find((n) => !online.includes(n)) : undefined;
  if (missingNode !== undefined) {
    // As libvirt's virNumaNodesetIsAvailable at start.
    throw new VirtError(
      ErrorCode.CONFIG_UNSUPPORTED,
      `host NUMA node ${missingNode} is unavailable (this host has nodes ${online?.join(',')}): change <numatune>`,
      { path: 'numatune' },
    );
  }
  const host: MemoryBackingHost = {
    memoryBackingDir: memoryBackingDir(ctx.homeDir),
    ...(ctx.hugepageMounts ? { hugepageMounts: ctx.hugepageMounts } : {}),
    ...(ctx.defaultHugepageKiB !== undefined ? { defaultHugepageKiB: ctx.defaultHugepageKiB } : {}),
  };
  // Without guest NUMA cells, one backend for all guest memory when anything asks for one.
  const ram = def.cpu?.numa ? undefined : memoryBackend(def, host, 'pc.ram', bootMemoryKiB(def), undefined);
  if (ram) {
    add('-object', JSON.stringify(ram));
    add('-machine', 'memory-backend=pc.ram');
  }
  if (def.memoryBacking?.locked) add('-overcommit', 'mem-lock=on');

  const topo = def.cpu?.topology ?? { sockets: def.vcpu.count, dies: 1, cores: 1, threads: 1 };
  add(
    '-smp',
    `${def.vcpu.current ?? def.vcpu.count},maxcpus=${def.vcpu.count},sockets=${topo.sockets},dies=${topo.dies},cores=${topo.cores},threads=${topo.threads}`,
  );
  add(...numaArgs(def, host));
  add(...dimmArgs(def));
  add(...smbiosArgs(def));
  for (let i = 1; i <= def.iothreads; i++) add('-object', `iothread,id=iothread${i}`);

  add('-chardev', `socket,id=charmonitor,fd=${ctx.monitorFd},server=on,wait=off`);
  add('-mon', 'chardev=charmonitor,id=monitor,mode=control');
  add(...clockArgs(def, ctx.nowMs ?? Date.now()));
  if (def.onPoweroff === 'restart') add('-no-shutdown');
  if (def.onReboot === 'destroy') add('-no-reboot');
  add(...pmArgs(def));
  add(...bootArgs(def));
  if (def.os.kernel) add('-kernel', def.os.kernel);
  if (def.os.initrd) add('-initrd', def.os.initrd);
  if (def.os.cmdline !== undefined) add('-append', def.os.cmdline);

  // Aliases, addresses and controllers were assigned at define time; a definition stored before
  // that gets them here, the same way.
  const full = assignDevices(def);
  const json = (flag: string, value: QapiObject) => add(flag, JSON.stringify(value));
  // PCI controllers first: the devices of the others sit on their buses.
  const controllers = [...full.controllers].sort(
    // …in index order: a bridge's bus has a lower index than the bridge (checked at define time).
    (a, b) =>
      Number(b.type === 'pci') - Number(a.type === 'pci') ||
      (a.type === 'pci' && b.type === 'pci' ? (a.index ?? 0) - (b.index ?? 0) : 0),
  );
  add(...pciRootGlobals(full));
  // libvirt's qemuBuildIOMMUCommandLine: before every PCI device, which QEMU attaches to it as made.
  if (full.iommu) {
    const d = full.iommu.driver;
    if (d?.eim && def.type !== 'kvm')
      // QEMU's vtd_decide_config: x2APIC interrupt remapping needs KVM's split irqchip.
      throw new VirtError(
        ErrorCode.CONFIG_UNSUPPORTED,
        "the intel IOMMU's eim needs KVM, and this domain's type is 'qemu' (TCG): remove eim or use type 'kvm'",
        { path: 'iommu.driver.eim' },
      );
    json('-device', {
      driver: 'intel-iommu',
      id: full.iommu.alias ?? 'iommu0',
      ...(d?.intremap !== undefined ? { intremap: d.intremap ? 'on' : 'off' } : {}),
      ...(d?.cachingMode !== undefined ? { 'caching-mode': d.cachingMode } : {}),
      ...(d?.eim !== undefined ? { eim: d.eim ? 'on' : 'off' } : {}),
      ...(d?.iotlb !== undefined ? { 'device-iotlb': d.iotlb } : {}),
      ...(d?.awBits !== undefined ? { 'aw-bits': d.awBits } : {}),
    });
  }
  for (const c of controllers) {
    const device = controllerDevice(full, c);
    if (device) json('-device', device);
  }
  const fdsets = new Map<number, string>();
  full.disks.forEach((disk, i) => {
    if (disk.network) {
      // QEMU connects to the server itself: no descriptor to hand over.
      for (const node of diskBlockdevs(disk)) json('-blockdev', node);
      json('-device', diskDevice(full, disk, `disks.${i}`));
      return;
    }
    if (disk.source === undefined) {
      // An empty CD-ROM: the drive with no medium in its tray, no block node (as libvirt 9).
      if (disk.target.bus === 'virtio' || disk.target.bus === 'usb')
        throw new VirtError(
          ErrorCode.CONFIG_UNSUPPORTED,
          `an empty CD-ROM on bus ${disk.target.bus}: use sata, ide or scsi`,
          {
            path: `disks.${i}.target.bus`,
          },
        );
      const { drive: _, ...empty } = diskDevice(full, disk, `disks.${i}`);
      json('-device', empty);
      return;
    }
    const source = disk.source;
    const fd = ctx.diskFds[i];
    if (fd === undefined) throw new VirtError(ErrorCode.INTERNAL_ERROR, `no descriptor for disk ${i}`);
    const alias = disk.alias as string;
    const set = fdsetIdOf(alias);
    const clash = fdsets.get(set);
    if (clash !== undefined) {
      throw new VirtError(
        ErrorCode.CONFIG_UNSUPPORTED,
        `the disk aliases '${clash}' and '${alias}' map to one fdset; rename one`,
        {
          path: `disks.${i}.alias`,
        },
      );
    }
    fdsets.set(set, alias);
    // QEMU never opens the image itself: it uses the descriptor the pre-exec phase opened.
    add('-add-fd', `fd=${fd},set=${set},opaque=${esc(source)}`);
    if (disk.backingStore) {
      const backingFd = ctx.backingFds?.[i];
      if (backingFd === undefined)
        throw new VirtError(ErrorCode.INTERNAL_ERROR, `no descriptor for the backing image of disk ${i}`);
      const backingSet = fdsetIdOf(backingAlias(alias));
      const taken = fdsets.get(backingSet);
      if (taken !== undefined) {
        throw new VirtError(
          ErrorCode.CONFIG_UNSUPPORTED,
          `the backing image of disk '${alias}' and '${taken}' map to one fdset; rename the disk`,
          { path: `disks.${i}.alias` },
        );
      }
      fdsets.set(backingSet, backingAlias(alias));
      add('-add-fd', `fd=${backingFd},set=${backingSet},opaque=${esc(disk.backingStore.source)}`);
      for (const node of backingBlockdevs(disk)) json('-blockdev', node);
    }
    for (const node of diskBlockdevs(disk)) json('-blockdev', node);
    const bootIndex = floppyBootIndex(full, disk);
    if (bootIndex) add('-global', bootIndex);
    json('-device', diskDevice(full, disk, `disks.${i}`));
  });

  full.interfaces.forEach((nic, i) => {
    const fds = nic.type === 'ethernet' ? ctx.tapFds[i] : undefined;
    if (nic.type === 'ethernet' && !fds?.length)
      throw new VirtError(ErrorCode.INTERNAL_ERROR, `no TAP descriptor for interface ${i}`);
    json('-netdev', netdevOf(nic, fds));
    json('-device', nicDevice(full, nic));
  });

  const serials = def.serials.map((serial, i) => {
    add('-chardev', chardevArg(`charserial${i}`, serial, ctx.consolePath));
    json('-device', serialDevice(i));
    if (serial.type === 'file') return { ...serial, path: serial.path ?? ctx.consolePath };
    // The pty QEMU allocates is read back once it runs; a path given in the definition is not it.
    if (serial.type === 'pty')
      return serial.log ? { type: 'pty' as const, log: serial.log } : { type: 'pty' as const };
    return serial;
  });
  // libvirt's qemuBuildParallelsCommandLine: an isa-parallel per port, LPT1 onwards.
  const parallels = def.parallels?.map((parallel, i) => {
    // A file port without a path writes next to the console log.
    const file = ctx.consolePath.replace(/\.console\.log$/, '') + `.parallel${i}.log`;
    add('-chardev', chardevArg(`charparallel${i}`, parallel, file, true));
    json('-device', { driver: 'isa-parallel', chardev: `charparallel${i}`, id: `parallel${i}` });
    return parallel.type === 'file' ? { ...parallel, path: parallel.path ?? file } : parallel;
  });

  // A currentMemory below memory is honoured as libvirt does: a balloon, whose target the start
  // sequence sets once QEMU runs.
  const balloon = balloonDevice(full);
  if (balloon) json('-device', balloon);
  add(...extraDeviceArgs(full, ctx.runDir ?? ctx.homeDir));
  add(...featureDevices(def));
  add('-display', 'none');

  const env: Record<string, string> = {
    LC_ALL: 'C',
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: ctx.homeDir,
  };
  if (def.qemuCommandline) {
    add(...def.qemuCommandline.args);
    for (const { name, value } of def.qemuCommandline.env) env[name] = value;
    taints.push('custom-argv');
  }
  return { argv, env, taints, live: { ...full, serials, ...(parallels ? { parallels } : {}) } };
}

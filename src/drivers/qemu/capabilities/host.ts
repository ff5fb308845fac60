import { readdirSync, readFileSync } from 'node:fs';
import { machine } from 'node:os';
import type { HostCapabilities, HostCpuCell, HostPages } from '../../../stable/capabilities.js';
import { parseCpuset } from '../../../util/cpuset.js';

function cpuset(text: string): number[] {
  return parseCpuset(text) ?? [];
}

/*
 * The host half of `getCapabilities()`, read the way libvirt reads it on Linux: the CPU from
 * /proc/cpuinfo, topology and NUMA cells from sysfs, page sizes from /sys/kernel/mm/hugepages.
 */

const SYS_CPU = '/sys/devices/system/cpu';
const SYS_NODE = '/sys/devices/system/node';

/** Linux's /proc/cpuinfo flag names where libvirt's CPU map spells the feature differently. */
const LIBVIRT_FEATURE_NAMES: Readonly<Record<string, string>> = {
  pclmulqdq: 'pclmuldq',
  sse4_1: 'sse4.1',
  sse4_2: 'sse4.2',
  cr8_legacy: 'cr8legacy',
  sha_ni: 'sha-ni',
  avx_vnni: 'avx-vnni',
  avx512_vnni: 'avx512vnni',
  avx512_bitalg: 'avx512bitalg',
  avx512_vbmi2: 'avx512vbmi2',
  avx512_vpopcntdq: 'avx512-vpopcntdq',
  avx512_vp2intersect: 'avx512-vp2intersect',
  avx512_bf16: 'avx512-bf16',
  avx512_fp16: 'avx512-fp16',
  tsc_deadline_timer: 'tsc-deadline',
  arch_capabilities: 'arch-capabilities',
  flush_l1d: 'flush-l1d',
  md_clear: 'md-clear',
  spec_ctrl: 'spec-ctrl',
  amd_ssbd: 'amd-ssbd',
  virt_ssbd: 'virt-ssbd',
  amd_stibp: 'amd-stibp',
  tsc_adjust: 'tsc_adjust',
  nrip_save: 'nrip-save',
  svme_addr_chk: 'svme-addr-chk',
  vmx_apicv_xapic: 'vmx-apicv-xapic',
};

const VENDORS: Readonly<Record<string, string>> = {
  GenuineIntel: 'Intel',
  AuthenticAMD: 'AMD',
  HygonGenuine: 'Hygon',
  CentaurHauls: 'VIA',
};

function read(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

function readInt(path: string): number | undefined {
  const text = read(path)?.trim();
  return text === undefined || text === '' ? undefined : Number.parseInt(text, 10);
}

/** The first processor's block of /proc/cpuinfo as key → value. */
function firstCpuinfo(): Map<string, string> {
  const block = (read('/proc/cpuinfo') ?? '').split('\n\n')[0] ?? '';
  const fields = new Map<string, string>();
  for (const line of block.split('\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) fields.set(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
  }
  return fields;
}

/** CPU features in libvirt's names, sorted; `invtsc` when the TSC is constant and non-stop. */
function features(flags: readonly string[]): string[] {
  const out = new Set<string>();
  for (const flag of flags) out.add(LIBVIRT_FEATURE_NAMES[flag] ?? flag);
  if (out.has('constant_tsc') && out.has('nonstop_tsc')) out.add('invtsc');
  return [...out].sort();
}

/** Online CPUs from sysfs (`online` is a cpuset; CPUs absent from it are offline). */
function onlineCpus(): number[] {
  const online = read(`${SYS_CPU}/online`)?.trim();
  return online ? cpuset(online).sort((a, b) => a - b) : [0];
}

interface CpuTopology {
  readonly socket: number;
  readonly die: number;
  readonly core: number;
  readonly siblings: string;
}

function cpuTopology(cpu: number): CpuTopology {
  const dir = `${SYS_CPU}/cpu${cpu}/topology`;
  return {
    socket: readInt(`${dir}/physical_package_id`) ?? 0,
    die: readInt(`${dir}/die_id`) ?? 0,
    core: readInt(`${dir}/core_id`) ?? cpu,
    siblings: read(`${dir}/thread_siblings_list`)?.trim() || String(cpu),
  };
}

/** Huge page sizes in KiB, from /sys/kernel/mm/hugepages (`hugepages-2048kB`…). */
function hugePageSizes(): number[] {
  try {
    return readdirSync('/sys/kernel/mm/hugepages')
      .map((d) => /^hugepages-(\d+)kB$/.exec(d)?.[1])
      .filter((s): s is string => s !== undefined)
      .map(Number)
      .sort((a, b) => a - b);
  } catch {
    return [];
  }
}

function cells(cpus: readonly number[], topo: ReadonlyMap<number, CpuTopology>): HostCpuCell[] {
  const hugeSizes = hugePageSizes();
  const nodes = (() => {
    try {
      return readdirSync(SYS_NODE)
        .map((d) => /^node(\d+)$/.exec(d)?.[1])
        .filter((s): s is string => s !== undefined)
        .map(Number)
        .sort((a, b) => a - b);
    } catch {
      return [];
    }
  })();
  const cellCpus = (ids: readonly number[]) =>
    ids.map((id) => {
      const t = topo.get(id) ?? cpuTopology(id);
      return { id, socketId: t.socket, dieId: t.die, coreId: t.core, siblings: t.siblings };
    });
  const pagesOf = (memoryKiB: number, hugeCount: (size: number) => number): HostPages[] => {
    const huge = hugeSizes.map((sizeKiB) => ({ sizeKiB, count: hugeCount(sizeKiB) }));
    const hugeKiB = huge.reduce((sum, p) => sum + p.sizeKiB * p.count, 0);
    return [{ sizeKiB: 4, count: Math.floor((memoryKiB - hugeKiB) / 4) }, ...huge];
  };
  if (nodes.length === 0) {
    // A kernel without NUMA: one cell with all memory and CPUs, as libvirt fakes it.
    const memoryKiB = Number(/MemTotal:\s+(\d+)/.exec(read('/proc/meminfo') ?? '')?.[1] ?? 0);
    return [
      {
        id: 0,
        memoryKiB,
        pages: pagesOf(
          memoryKiB,
          (size) => readInt(`/sys/kernel/mm/hugepages/hugepages-${size}kB/nr_hugepages`) ?? 0,
        ),
        distances: [{ id: 0, value: 10 }],
        cpus: cellCpus(cpus),
      },
    ];
  }
  return nodes.map((node) => {
    const dir = `${SYS_NODE}/node${node}`;
    const memoryKiB = Number(/MemTotal:\s+(\d+)/.exec(read(`${dir}/meminfo`) ?? '')?.[1] ?? 0);
    const distances = (read(`${dir}/distance`) ?? '10')
      .trim()
      .split(/\s+/)
      .map((value, i) => ({ id: nodes[i] ?? i, value: Number(value) }));
    const list = read(`${dir}/cpulist`)?.trim();
    const ids = list
      ? cpuset(list)
          .filter((c) => cpus.includes(c))
          .sort((a, b) => a - b)
      : [];
    return {
      id: node,
      memoryKiB,
      pages: pagesOf(memoryKiB, (size) => readInt(`${dir}/hugepages/hugepages-${size}kB/nr_hugepages`) ?? 0),
      distances,
      cpus: cellCpus(ids),
    };
  });
}

/**
 * The host: CPU (architecture, vendor, signature, topology, features in libvirt's names, page
 * sizes), NUMA cells and the security model (`none`: virtkit applies no SELinux/AppArmor/DAC
 * labels).
 *
 * The CPU `model` is left out: libvirt names it by matching the features against its own CPU map
 * (`/usr/share/libvirt/cpu_map`), which virtkit does not ship; `features` therefore lists every
 * feature the kernel reports in /proc/cpuinfo, not only those beyond a model. libvirt reads CPUID
 * itself, so it also names features the kernel disabled or does not report (`osxsave`).
 *
 * @internal
 */
export function hostCapabilities(): HostCapabilities {
  const info = firstCpuinfo();
  const cpus = onlineCpus();
  const topo = new Map(cpus.map((c) => [c, cpuTopology(c)]));
  const t0 = topo.get(cpus[0] ?? 0) ?? cpuTopology(0);
  const sameSocket = [...topo.values()].filter((t) => t.socket === t0.socket);
  const sameDie = sameSocket.filter((t) => t.die === t0.die);
  const family = info.get('cpu family');
  const model = info.get('model');
  const stepping = info.get('stepping');
  const vendorId = info.get('vendor_id');
  return {
    cpu: {
      arch: machine(),
      ...(vendorId ? { vendor: VENDORS[vendorId] ?? vendorId } : {}),
      ...(family && model && stepping
        ? { signature: { family: Number(family), model: Number(model), stepping: Number(stepping) } }
        : {}),
      topology: {
        sockets: new Set([...topo.values()].map((t) => t.socket)).size,
        dies: new Set(sameSocket.map((t) => t.die)).size,
        cores: new Set(sameDie.map((t) => t.core)).size,
        threads: cpuset(t0.siblings).length,
      },
      features: features((info.get('flags') ?? '').split(/\s+/).filter(Boolean)),
      pageSizesKiB: [4, ...hugePageSizes()],
    },
    cells: cells(cpus, topo),
    secmodel: 'none',
  };
}

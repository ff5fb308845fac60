/*
 * Hotplug latency, virtkit against raw QMP on the same running TCG guest (the test kernel in its
 * "devices" mode, so it lets go of an unplugged disk):
 *
 * - disk attach: `dom.attachDevice(<disk>, { live })` (storage.openFile built-in, add-fd,
 *   blockdev-add ×2, device_add, live definition written) against the same QMP commands sent by
 *   hand over a second monitor (add-fd + blockdev-add ×2 + device_add), alternating per iteration;
 *   both sides use virtkit's QMP client, so the ratio is what the driver adds on top of QEMU;
 * - vCPU hotplug on a paused firmware-only domain (`<vcpu current='1'>N</vcpu>`):
 *   `setVcpus(n + 1)` without cputune (nothing to place) and with pins and vcpusched (cgroup
 *   placement and scheduling of the new thread, built-ins) against query-hotpluggable-cpus +
 *   device_add + query-cpus-fast by hand, one domain per contender, adding in turns. QEMU's TCG
 *   cannot unplug vCPUs safely, so each sample adds one to a fresh slot. The same with
 *   in-process handlers (`openInternal(...).setHandler`) for `cgroup.placeThreads` and
 *   `thread.setScheduler` doing the same placement and scheduling: the cost of the hand-over;
 * - DIMM hotplug on a paused domain with `<maxMemory slots='8'>`: `attachDevice(<memory
 *   model='dimm'>)` (memlock rule, object-add, device_add, live definition written) against
 *   object-add + device_add by hand, one domain per contender, in turns, each sample a fresh slot.
 *
 * The machine is shared: the load average is recorded before and after each part.
 *
 * Run: npm run bench:hotplug      Knobs (env): BENCH_HP_N (20),
 *   BENCH_HP_BEFORE (another checkout of virtkit, with node_modules: its driver runs as a third
 *   contender, "virtkit (before)", on a guest of its own with raw QMP beside it, alternating with
 *   the others, for a before/after in one run), BENCH_HP_NAME (results in
 *   bench/results/<name>.md and .json; default hotplug).
 */

import diagnosticsChannel from 'node:diagnostics_channel';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { QmpClient } from '../src/drivers/qemu/qmp/client.js';
import {
  type Connection,
  connect,
  type Domain,
  diagnosticsChannels,
  type QmpCommandMessage,
} from '../src/index.js';
import { openInternal } from '../src/internal/index.js';
import { threadGroups } from '../src/privileged/builtins.js';
import { placeThreads, releaseCgroups } from '../src/util/cgroup.js';
import { schedSet } from '../src/util/libc.js';
import { ensureGuestImage } from '../test/fixtures/guest-image.js';
import { summarize } from './common.js';

const N = Number(process.env['BENCH_HP_N'] ?? 20);
const VCPUS = 8;
const BEFORE = process.env['BENCH_HP_BEFORE'];
const NAME = process.env['BENCH_HP_NAME'] ?? 'hotplug';
const dir = mkdtempSync(join(tmpdir(), 'vk-bench-hp-'));
const log = (msg: string) => process.stderr.write(`[bench:hotplug] ${msg}\n`);
const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

function image(name: string): string {
  const path = join(dir, name);
  writeFileSync(path, Buffer.alloc(1024 * 1024));
  return path;
}

/** One driver under test: this checkout's, or BENCH_HP_BEFORE's. */
interface Side {
  readonly name: 'virtkit' | 'before';
  readonly conn: Connection;
  /** A second connection of this checkout whose placement and scheduling go through in-process handlers. */
  readonly handled?: Connection;
}

/** The cgroup parent of the handlers' placements (the built-ins use the driver's own). */
const HANDLER_CGROUPS = `virtkit-bench-${process.pid}`;

/** A connection whose cgroup.placeThreads, cgroup.release and thread.setScheduler are handlers doing what the built-ins do. */
async function handledConnection(): Promise<Connection> {
  const conn = await connect(`qemu:///embed?root=${join(dir, 'root-handlers')}`);
  const internal = openInternal(conn, { apiVersion: '1.0' });
  internal.setHandler('cgroup.placeThreads', (ctx, args) => ({
    placements: placeThreads({
      parent: HANDLER_CGROUPS,
      name: `vk-${ctx.domain.uuid}`,
      pid: args.pid,
      groups: threadGroups(args),
    }).placements,
  }));
  internal.setHandler('cgroup.release', (ctx) =>
    releaseCgroups({ parent: HANDLER_CGROUPS, name: `vk-${ctx.domain.uuid}` }),
  );
  internal.setHandler('thread.setScheduler', (_ctx, args) => {
    for (const t of args.threads) schedSet(t.tid, t.policy, t.priority);
  });
  return conn;
}

/** A running guest of one side, with a second monitor for the raw QMP commands. */
interface DiskGuest {
  readonly side: Side;
  readonly dom: Domain;
  readonly qmp: QmpClient;
  readonly raw: number[];
  readonly virtkit: number[];
  /** Of each virtkit attach, the time no QMP command of its driver was under way: the driver's own. */
  readonly own: number[];
}

/**
 * When the QMP commands of a domain's driver ran, from the `virtkit:qmp:command` tracing channel
 * (both checkouts publish on it, with the domain's name): subtracted from an attach, what is left is
 * the driver's own time, which the load of the QEMU side does not blur.
 */
const qmpSpans = new Map<string, Array<[number, number]>>();
const started = new WeakMap<object, number>();
diagnosticsChannel.tracingChannel<string, QmpCommandMessage>(diagnosticsChannels.qmpCommand).subscribe({
  start: (m) => {
    if (m.domain && qmpSpans.has(m.domain.name)) started.set(m, performance.now());
  },
  asyncEnd: (m) => {
    const t0 = started.get(m);
    if (m.domain && t0 !== undefined) qmpSpans.get(m.domain.name)?.push([t0, performance.now()]);
  },
  end: () => undefined,
  asyncStart: () => undefined,
  error: () => undefined,
});

/** The length of the union of `spans` (pipelined commands overlap). */
function covered(spans: ReadonlyArray<[number, number]>): number {
  let total = 0;
  let until = Number.NEGATIVE_INFINITY;
  for (const [a, b] of [...spans].sort((x, y) => x[0] - y[0])) {
    if (b <= until) continue;
    total += b - Math.max(a, until);
    until = b;
  }
  return total;
}

async function diskGuest(side: Side): Promise<DiskGuest> {
  const image0 = ensureGuestImage();
  const probe = join(dir, `${side.name}-disk.qmp`);
  const dom = await side.conn.defineDomain({
    name: `bench-hp-disk-${side.name}`,
    type: 'qemu',
    memoryKiB: 128 * 1024,
    os: {
      kernel: image0.kernel,
      initrd: image0.initrd,
      cmdline: 'console=ttyS0 panic=-1 quiet virtkit.mode=devices',
    },
    serials: [{ type: 'file' }],
    qemuCommandline: { args: ['-qmp', `unix:${probe},server=on,wait=off`], env: [] },
  });
  await dom.start();
  const qmp = await QmpClient.connect(probe, { timeoutMs: 10_000 });
  return { side, dom, qmp, raw: [], virtkit: [], own: [] };
}

/** virtkit's attach (and detach) of a fresh disk on a guest. */
async function virtkitDisk(g: DiskGuest, i: number): Promise<number> {
  const path = image(`${g.side.name}-d${i}.img`);
  const spans: Array<[number, number]> = [];
  qmpSpans.set(g.dom.name, spans);
  const t0 = performance.now();
  await g.dom.attachDevice(
    `<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='${path}'/><target dev='vdb' bus='virtio'/></disk>`,
    { live: true },
  );
  const ms = performance.now() - t0;
  qmpSpans.delete(g.dom.name);
  g.own.push(ms - covered(spans));
  await g.dom.detachDevice('virtio-disk1', { live: true, timeoutMs: 30_000 });
  return ms;
}

/** The same QMP commands by hand over the guest's second monitor (and the unplug). */
async function rawDisk(g: DiskGuest, i: number): Promise<number> {
  const qmp = g.qmp;
  const rawPath = image(`${g.side.name}-r${i}.img`);
  const set = 900;
  const t1 = performance.now();
  const fd = openSync(rawPath, 'r+');
  await qmp.addFd(fd, { fdsetId: set, opaque: rawPath });
  closeSync(fd);
  await qmp.execute('blockdev-add', {
    driver: 'file',
    'node-name': 'raw-storage',
    filename: `/dev/fdset/${set}`,
  });
  await qmp.execute('blockdev-add', { driver: 'raw', 'node-name': 'raw-format', file: 'raw-storage' });
  await qmp.execute('device_add', { driver: 'virtio-blk-pci', id: 'raw-disk', drive: 'raw-format' });
  const ms = performance.now() - t1;
  // As the driver does: the backend goes only once QEMU has finalized the device.
  const deleted = qmp.waitForEvent('DEVICE_DELETED', (e) => e.data.device === 'raw-disk', {
    timeoutMs: 30_000,
  });
  await qmp.execute('device_del', { id: 'raw-disk' });
  await deleted;
  await qmp.execute('blockdev-del', { 'node-name': 'raw-format' });
  await qmp.execute('blockdev-del', { 'node-name': 'raw-storage' });
  await qmp.execute('remove-fd', { 'fdset-id': set });
  return ms;
}

/** One iteration on a guest: virtkit and raw back to back, which one first alternating. */
async function diskRound(g: DiskGuest, i: number): Promise<void> {
  if (i % 2) {
    g.raw.push(await rawDisk(g, i));
    g.virtkit.push(await virtkitDisk(g, i));
  } else {
    g.virtkit.push(await virtkitDisk(g, i));
    g.raw.push(await rawDisk(g, i));
  }
}

async function diskBench(sides: readonly Side[]): Promise<DiskGuest[]> {
  const guests: DiskGuest[] = [];
  try {
    for (const side of sides) guests.push(await diskGuest(side));
    // Let the guests boot and load virtio_blk: an unplug then completes at once.
    await new Promise((r) => setTimeout(r, 15_000));
    for (let i = 0; i < N; i++) {
      // Which side goes first alternates, so neither always follows the other's unplug.
      const order = i % 2 ? [...guests].reverse() : guests;
      for (const g of order) await diskRound(g, i);
    }
  } finally {
    for (const g of guests) {
      g.qmp.close();
      await g.dom.destroy({ graceMs: 1000 });
    }
  }
  return guests;
}

async function vcpuDomain(
  conn: Connection,
  name: string,
  tuned: boolean,
): Promise<{ dom: Domain; qmp: QmpClient }> {
  const probe = join(dir, `${name}.qmp`);
  const dom = await conn.defineDomain({
    name,
    type: 'qemu',
    memoryKiB: 64 * 1024,
    vcpu: { count: VCPUS, current: 1 },
    ...(tuned
      ? {
          cputune: {
            vcpupin: Array.from({ length: VCPUS }, (_, i) => ({ vcpu: i, cpuset: String(i % 2) })),
            vcpusched: [{ ids: `0-${VCPUS - 1}`, scheduler: 'batch' as const, priority: 0 }],
          },
        }
      : {}),
    qemuCommandline: { args: ['-qmp', `unix:${probe},server=on,wait=off`], env: [] },
  });
  await dom.start({ paused: true });
  return { dom, qmp: await QmpClient.connect(probe, { timeoutMs: 10_000 }) };
}

type VcpuKind = 'raw' | 'plain' | 'tuned' | 'handlers' | 'before-plain' | 'before-tuned';

/** One vCPU added by hand: the slots, the device_add, the thread ids, as the driver does. */
async function rawVcpu(qmp: QmpClient, n: number): Promise<void> {
  const slots =
    await qmp.execute<Array<{ type: string; props: Record<string, number>; 'qom-path'?: string }>>(
      'query-hotpluggable-cpus',
    );
  const free = slots.filter((s) => s['qom-path'] === undefined).at(-1);
  if (!free) throw new Error('no free vCPU slot');
  await qmp.execute('device_add', { driver: free.type, id: `raw-vcpu${n}`, ...free.props });
  await qmp.execute('query-cpus-fast');
}

/**
 * Each round starts one paused domain per contender and adds their vCPUs in turns (the order of
 * the contenders rotating), so that samples of all contenders come from the same moments.
 */
async function vcpuBench(sides: readonly Side[]): Promise<Record<VcpuKind, number[]>> {
  const out: Record<VcpuKind, number[]> = {
    raw: [],
    plain: [],
    tuned: [],
    handlers: [],
    'before-plain': [],
    'before-tuned': [],
  };
  const kinds: VcpuKind[] = ['plain', 'tuned', 'handlers', 'raw'];
  const before = sides.find((s) => s.name === 'before');
  if (before) kinds.push('before-plain', 'before-tuned');
  const rounds = Math.max(1, Math.ceil(N / (VCPUS - 1)));
  for (let r = 0; r < rounds; r++) {
    const doms = new Map<VcpuKind, { dom: Domain; qmp: QmpClient }>();
    try {
      for (const kind of kinds) {
        const own = sides[0] as Side;
        const conn =
          kind.startsWith('before') && before ? before.conn : kind === 'handlers' ? own.handled : own.conn;
        const tuned = kind.endsWith('tuned') || kind === 'handlers';
        doms.set(kind, await vcpuDomain(conn as Connection, `bench-hp-vcpu-${kind}-${r}`, tuned));
      }
      for (let n = 1; n < VCPUS; n++) {
        const shift = (n + r) % kinds.length;
        for (const kind of [...kinds.slice(shift), ...kinds.slice(0, shift)]) {
          const { dom, qmp } = doms.get(kind) as { dom: Domain; qmp: QmpClient };
          const t0 = performance.now();
          if (kind === 'raw') await rawVcpu(qmp, n);
          else await dom.setVcpus(n + 1, { live: true });
          out[kind].push(performance.now() - t0);
        }
      }
    } finally {
      for (const { dom, qmp } of doms.values()) {
        qmp.close();
        await dom.destroy({ graceMs: 1000 });
        await dom.undefine();
      }
    }
  }
  return out;
}

const DIMM_SLOTS = 8;
const DIMM_MIB = 128;

async function dimmDomain(conn: Connection, name: string): Promise<{ dom: Domain; qmp: QmpClient }> {
  const probe = join(dir, `${name}.qmp`);
  const dom = await conn.defineDomain({
    name,
    type: 'qemu',
    memoryKiB: 64 * 1024,
    maxMemory: { kib: (64 + DIMM_SLOTS * DIMM_MIB) * 1024, slots: DIMM_SLOTS },
    qemuCommandline: { args: ['-qmp', `unix:${probe},server=on,wait=off`], env: [] },
  });
  await dom.start({ paused: true });
  return { dom, qmp: await QmpClient.connect(probe, { timeoutMs: 10_000 }) };
}

type DimmKind = 'raw' | 'virtkit' | 'before';

/**
 * DIMM hotplug: each round starts one paused domain per contender and adds their DIMMs in turns
 * (the order rotating), each sample into a fresh slot (a paused guest cannot let go of memory).
 */
async function dimmBench(sides: readonly Side[]): Promise<Record<DimmKind, number[]>> {
  const out: Record<DimmKind, number[]> = { raw: [], virtkit: [], before: [] };
  const before = sides.find((s) => s.name === 'before');
  const kinds: DimmKind[] = ['virtkit', 'raw', ...(before ? (['before'] as const) : [])];
  const rounds = Math.max(1, Math.ceil(N / DIMM_SLOTS));
  const dimm = `<memory model='dimm'><target><size unit='MiB'>${DIMM_MIB}</size></target></memory>`;
  for (let r = 0; r < rounds; r++) {
    const doms = new Map<DimmKind, { dom: Domain; qmp: QmpClient }>();
    try {
      for (const kind of kinds) {
        const conn = kind === 'before' && before ? before.conn : (sides[0] as Side).conn;
        doms.set(kind, await dimmDomain(conn, `bench-hp-dimm-${kind}-${r}`));
      }
      for (let n = 0; n < DIMM_SLOTS; n++) {
        const shift = (n + r) % kinds.length;
        for (const kind of [...kinds.slice(shift), ...kinds.slice(0, shift)]) {
          const { dom, qmp } = doms.get(kind) as { dom: Domain; qmp: QmpClient };
          const t0 = performance.now();
          if (kind === 'raw') {
            const size = DIMM_MIB * 1024 * 1024;
            await qmp.execute('object-add', { 'qom-type': 'memory-backend-ram', id: `raw-mem${n}`, size });
            await qmp.execute('device_add', { driver: 'pc-dimm', id: `raw-dimm${n}`, memdev: `raw-mem${n}` });
          } else {
            await dom.attachDevice(dimm, { live: true });
          }
          out[kind].push(performance.now() - t0);
        }
      }
    } finally {
      for (const { dom, qmp } of doms.values()) {
        qmp.close();
        await dom.destroy({ graceMs: 1000 });
        await dom.undefine();
      }
    }
  }
  return out;
}

async function main(): Promise<void> {
  const sides: Side[] = [
    {
      name: 'virtkit',
      conn: await connect(`qemu:///embed?root=${join(dir, 'root')}`),
      handled: await handledConnection(),
    },
  ];
  if (BEFORE) {
    const other = (await import(resolve(BEFORE, 'src/index.ts'))) as { connect: typeof connect };
    sides.push({
      name: 'before',
      conn: await other.connect(`qemu:///embed?root=${join(dir, 'root-before')}`),
    });
    log(`before: ${resolve(BEFORE)}`);
  }
  let disk: DiskGuest[];
  let vcpu: Record<VcpuKind, number[]>;
  let dimm: Record<DimmKind, number[]>;
  const load: Record<string, string> = {};
  try {
    load['disk:start'] = loadavg();
    log(`disk attach, ${N} alternating iterations; load ${load['disk:start']}…`);
    disk = await diskBench(sides);
    load['vcpu:start'] = loadavg();
    log(`vCPU hotplug; load ${load['vcpu:start']}…`);
    vcpu = await vcpuBench(sides);
    load['dimm:start'] = loadavg();
    log(`DIMM hotplug; load ${load['dimm:start']}…`);
    dimm = await dimmBench(sides);
    load['end'] = loadavg();
  } finally {
    for (const side of sides) {
      for (const d of await side.conn.listDomains({ state: 'active' })) await d.destroy({ graceMs: 1000 });
      await side.conn.close();
      if (side.handled) {
        for (const d of await side.handled.listDomains({ state: 'active' }))
          await d.destroy({ graceMs: 1000 });
        await side.handled.close();
      }
    }
    for (const mount of ['/sys/fs/cgroup/cpuset', '/sys/fs/cgroup']) {
      if (existsSync(join(mount, HANDLER_CGROUPS))) rmdirSync(join(mount, HANDLER_CGROUPS));
    }
    rmSync(dir, { recursive: true, force: true });
  }
  const med = (xs: number[]) => summarize(xs).median;
  const percentile10 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 10)] as number;
  const row = (what: string, raw: number[], vk: number[]) =>
    `| ${what} | ${med(raw).toFixed(2)} | ${med(vk).toFixed(2)} | ${(med(vk) / med(raw)).toFixed(2)}× |`;
  const label = (g: DiskGuest) => (g.side.name === 'before' ? ' (before)' : '');
  // Per iteration (virtkit and raw back to back on one guest): what the load does to both cancels.
  const paired = (g: DiskGuest) => ({
    ratio: med(g.virtkit.map((v, i) => v / (g.raw[i] as number))),
    extraMs: med(g.virtkit.map((v, i) => v - (g.raw[i] as number))),
  });
  const md = [
    `Hotplug latency on TCG guests, medians (disk: ${N} alternating samples per guest; vCPU: ${vcpu.raw.length} per contender; DIMM: ${dimm.raw.length} per contender); load average (1, 5, 15 min) ${load['disk:start']} at the start, ${load['vcpu:start']} after the disks, ${load['dimm:start']} after the vCPUs, ${load['end']} at the end:`,
    '',
    '| | raw QMP (ms) | virtkit (ms) | ratio |',
    '|---|---|---|---|',
    ...disk.map((g) => row(`disk attach (add-fd, blockdev-add ×2, device_add)${label(g)}`, g.raw, g.virtkit)),
    row('vCPU add, no cputune', vcpu.raw, vcpu.plain),
    row(
      'vCPU add, pinned + vcpusched (placement and scheduling by the built-ins, no handler)',
      vcpu.raw,
      vcpu.tuned,
    ),
    row('vCPU add, pinned + vcpusched through in-process handlers', vcpu.raw, vcpu.handlers),
    ...(BEFORE
      ? [
          row('vCPU add, no cputune (before)', vcpu.raw, vcpu['before-plain']),
          row('vCPU add, pinned + vcpusched (before)', vcpu.raw, vcpu['before-tuned']),
        ]
      : []),
    row(`DIMM attach ${DIMM_MIB} MiB (object-add, device_add)`, dimm.raw, dimm.virtkit),
    ...(BEFORE ? [row('DIMM attach (before)', dimm.raw, dimm.before)] : []),
    '',
    ...disk.map((g) => {
      const p = paired(g);
      return `Disk attach${label(g)}, per iteration: median ratio ${p.ratio.toFixed(2)}×, median extra ${p.extraMs.toFixed(2)} ms over raw; the driver's own time (no QMP command under way) median ${med(g.own).toFixed(2)} ms, p10 ${percentile10(g.own).toFixed(2)} ms; fastest attach ${Math.min(...g.virtkit).toFixed(2)} ms against ${Math.min(...g.raw).toFixed(2)} ms raw.`;
    }),
    '',
  ].join('\n');
  process.stdout.write(md);
  const results = join(import.meta.dirname, 'results');
  mkdirSync(results, { recursive: true });
  writeFileSync(join(results, `${NAME}.md`), `# npm run bench:hotplug\n\n${md}`);
  const stats = (xs: number[]) => ({ ...summarize(xs), samples: xs.map((x) => Number(x.toFixed(3))) });
  writeFileSync(
    join(results, `${NAME}.json`),
    `${JSON.stringify(
      {
        date: new Date().toISOString(),
        n: N,
        before: BEFORE ? resolve(BEFORE) : undefined,
        load,
        disk: Object.fromEntries(
          disk.map((g) => [
            g.side.name,
            { raw: stats(g.raw), virtkit: stats(g.virtkit), own: stats(g.own), paired: paired(g) },
          ]),
        ),
        vcpu: Object.fromEntries(Object.entries(vcpu).map(([k, v]) => [k, stats(v)])),
        dimm: Object.fromEntries(Object.entries(dimm).map(([k, v]) => [k, stats(v)])),
      },
      null,
      2,
    )}\n`,
  );
}

await main();

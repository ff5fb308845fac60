/*
 * The benchmark suite: every contender in one run, alternating round-robin per iteration, on the
 * same QEMU binary and VM shape (2 vCPUs, 64 MiB, firmware only; KVM when it really runs guest
 * code here, else TCG). Writes bench/results/latest.md and bench/results/latest.json.
 *
 * Run: npm run bench            (installs what is missing, then runs)
 *      npm run bench:run        (runs only)
 * Knobs (env): BENCH_ITER (20), BENCH_WARMUP (3), BENCH_SCALE_N (32), BENCH_SCALE_ROUNDS (3),
 *              BENCH_DISPATCH_N (20000), BENCH_ACCEL (kvm|tcg: skip the probe), BENCH_TMPDIR.
 */

import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  type Accel,
  cleanupAll,
  machineDescription,
  markedProcesses,
  PYTHON,
  QEMU,
  qemuVersion,
  type Summary,
  summarize,
} from './common.js';
import { measureInProcessDispatch } from './dispatch.js';
import { probeKvm } from './kvm-probe.js';
import { type LibvirtContender as LibvirtC, LibvirtContender } from './libvirt.js';
import { measureDelegatedDispatch, Privd } from './privd.js';
import { RawContender } from './raw.js';
import { ScaleHost, type ScaleResult } from './scale-common.js';
import { VirtkitContender, VirtkitHost } from './virtkit.js';

const ITER = Number(process.env['BENCH_ITER'] ?? 20);
const WARMUP = Number(process.env['BENCH_WARMUP'] ?? 3);
const SCALE_N = Number(process.env['BENCH_SCALE_N'] ?? 32);
const SCALE_ROUNDS = Number(process.env['BENCH_SCALE_ROUNDS'] ?? 3);
const DISPATCH_N = Number(process.env['BENCH_DISPATCH_N'] ?? 20_000);
const DELEGATED_N = Number(process.env['BENCH_DELEGATED_N'] ?? 5000);
const RESULTS = join(import.meta.dirname, 'results');

interface Contender {
  id: string;
  label: string;
  start(count: boolean): Promise<number>;
  destroy(): Promise<number>;
  qmpCommands?: () => number | undefined;
  starts: number[];
  destroys: number[];
}

const log = (msg: string) => process.stderr.write(`[bench] ${msg}\n`);

/** Throws once a signal asked the run to stop, so main() unwinds into the clean-up. */
function checkAbort(): void {
  if (aborted) throw new Error(`stopped by ${aborted}`);
}

function preflight(): void {
  try {
    execFileSync(QEMU, ['--version'], { stdio: 'ignore' });
  } catch {
    throw new Error(`${QEMU} is missing: run 'bash scripts/bench-setup.sh' (npm run bench does)`);
  }
  try {
    execFileSync(PYTHON, ['-c', 'import libvirt'], { stdio: 'ignore' });
  } catch {
    throw new Error(
      `${PYTHON} cannot import libvirt: run 'bash scripts/bench-setup.sh' (npm run bench does)`,
    );
  }
}

async function main(): Promise<void> {
  preflight();
  const probe = await probeKvm();
  const accel: Accel = probe.accel;
  log(`accelerator: ${accel} (${probe.why})`);

  // ------------------------------------------------------------ contenders
  const rawPath = new RawContender('path', accel);
  const rawFd = new RawContender('fd', accel);
  const privd = await Privd.launch();
  log(`virtkit-privd listening on ${privd.socket} (pid ${privd.pid})`);
  const plainHost = await VirtkitHost.open('plain', { type: 'none' });
  const handlersHost = await VirtkitHost.open('handlers', { type: 'in-process' });
  const delegatedHost = await VirtkitHost.open('delegated', { type: 'delegated', socket: privd.socket });
  const vkPlain = await VirtkitContender.create(plainHost, 'plain', accel);
  const vkPaused = await VirtkitContender.create(plainHost, 'paused', accel);
  const vkHandlers = await VirtkitContender.create(handlersHost, 'handlers', accel);
  const vkDelegated = await VirtkitContender.create(delegatedHost, 'delegated', accel);
  const libvirt = await LibvirtContender.launch(accel);
  log(
    `libvirt ${libvirt.version} embedded driver open in ${libvirt.openMs.toFixed(1)} ms (pid ${libvirt.pid})`,
  );

  const contenders: Contender[] = [
    {
      id: 'raw-fd',
      label: 'raw QEMU, inherited listening socket',
      start: () => rawFd.start(),
      destroy: () => rawFd.destroy(),
      starts: [],
      destroys: [],
    },
    {
      id: 'raw-path',
      label: 'raw QEMU, -qmp unix:path (polled)',
      start: () => rawPath.start(),
      destroy: () => rawPath.destroy(),
      starts: [],
      destroys: [],
    },
    {
      id: 'virtkit',
      label: 'virtkit start',
      start: (c) => vkPlain.start(c),
      destroy: () => vkPlain.destroy(),
      qmpCommands: () => vkPlain.qmpCommands,
      starts: [],
      destroys: [],
    },
    {
      id: 'virtkit-paused',
      label: 'virtkit start paused',
      start: (c) => vkPaused.start(c),
      destroy: () => vkPaused.destroy(),
      qmpCommands: () => vkPaused.qmpCommands,
      starts: [],
      destroys: [],
    },
    {
      id: 'virtkit-handlers',
      label: 'virtkit start, in-process handlers (memlock, sched, cgroups)',
      start: (c) => vkHandlers.start(c),
      destroy: () => vkHandlers.destroy(),
      qmpCommands: () => vkHandlers.qmpCommands,
      starts: [],
      destroys: [],
    },
    {
      id: 'virtkit-delegated',
      label: 'virtkit start, same handlers delegated to virtkit-privd',
      start: (c) => vkDelegated.start(c),
      destroy: () => vkDelegated.destroy(),
      qmpCommands: () => vkDelegated.qmpCommands,
      starts: [],
      destroys: [],
    },
    {
      id: 'libvirt',
      label: `libvirt ${libvirt.version} embedded driver (create)`,
      start: () => libvirt.start(),
      destroy: () => libvirt.destroy(),
      starts: [],
      destroys: [],
    },
  ];

  // ------------------------------------------------------------ alternating start/destroy
  const total = WARMUP + ITER;
  for (let i = 0; i < total; i++) {
    const warm = i < WARMUP;
    // Round-robin, rotating who goes first so no contender always follows the same one.
    const order = contenders.map((_, k) => contenders[(i + k) % contenders.length] as Contender);
    for (const c of order) {
      checkAbort();
      const s = await c.start(warm);
      const d = await c.destroy();
      if (!warm) {
        c.starts.push(s);
        c.destroys.push(d);
      }
    }
    log(`iteration ${i + 1}/${total}${warm ? ' (warm-up)' : ''}`);
  }

  // ------------------------------------------------------------ libvirt's QMP commands per start
  let libvirtCount: Awaited<ReturnType<LibvirtC['count']>> | undefined;
  {
    const traced = await LibvirtContender.launch(accel, { countLog: true, label: 'libvirt-traced' });
    try {
      await traced.start();
      await traced.destroy();
      libvirtCount = await traced.count();
      await traced.destroy();
    } finally {
      await traced.quit();
    }
  }

  // ------------------------------------------------------------ dispatch
  checkAbort();
  log(`in-process dispatch, ${DISPATCH_N} calls`);
  const dispatch = await measureInProcessDispatch(DISPATCH_N);
  log(`delegated dispatch, ${DELEGATED_N} calls`);
  const delegated = await measureDelegatedDispatch(privd, accel, DELEGATED_N);

  // ------------------------------------------------------------ scale
  const scale = await ScaleHost.virtkit(SCALE_N, accel);
  const scaleRaw = await ScaleHost.raw(SCALE_N, accel);
  const scaleVk: ScaleResult[] = [];
  const scaleLv: ScaleResult[] = [];
  const scaleRw: ScaleResult[] = [];
  const sides = ['raw', 'virtkit', 'libvirt'] as const;
  for (let r = 0; r < SCALE_ROUNDS; r++) {
    // Rotating who goes first, as in the start/destroy rounds.
    for (let k = 0; k < sides.length; k++) {
      const which = sides[(r + k) % sides.length];
      checkAbort();
      if (which === 'virtkit') scaleVk.push(await scale.round());
      else if (which === 'raw') scaleRw.push(await scaleRaw.round());
      else scaleLv.push(await libvirt.scale(SCALE_N));
    }
    log(`scale round ${r + 1}/${SCALE_ROUNDS}`);
  }

  // ------------------------------------------------------------ results
  const stats = new Map(
    contenders.map((c) => [c.id, { start: summarize(c.starts), destroy: summarize(c.destroys) }]),
  );
  const st = (id: string) => stats.get(id) as { start: Summary; destroy: Summary };
  const get = (id: string) => contenders.find((c) => c.id === id) as Contender;
  const floorId = st('raw-fd').start.median <= st('raw-path').start.median ? 'raw-fd' : 'raw-path';
  const floor = get(floorId);
  /*
   * Ratios are the median of per-iteration ratios: the contenders of one iteration ran back to
   * back, so a slow moment of the machine (other load, host noise) hits both sides of a pair.
   * The ratio of the medians is reported next to it.
   */
  const paired = (a: number[], b: number[]) => summarize(a.map((x, i) => x / (b[i] as number))).median;
  const ratios = (c: Contender) => ({
    start: paired(c.starts, floor.starts),
    destroy: paired(c.destroys, floor.destroys),
    startOfMedians: st(c.id).start.median / st(floorId).start.median,
    destroyOfMedians: st(c.id).destroy.median / st(floorId).destroy.median,
  });
  const vk = ratios(get('virtkit'));
  const libvirtOverVirtkit = paired(get('libvirt').starts, get('virtkit').starts);
  const libvirtOverVirtkitOfMedians = st('libvirt').start.median / st('virtkit').start.median;
  const dispatchP50 = pctSorted(dispatch.dispatched, 50);
  const delegatedP50 = pctSorted(delegated.release, 50);
  const targets = [
    {
      name: 'virtkit start ≤ 1.3× raw floor',
      value: vk.start,
      ofMedians: vk.startOfMedians,
      limit: 1.3,
      unit: '×',
      pass: vk.start <= 1.3,
    },
    {
      name: 'virtkit destroy ≤ 2× raw kill',
      value: vk.destroy,
      ofMedians: vk.destroyOfMedians,
      limit: 2,
      unit: '×',
      pass: vk.destroy <= 2,
    },
    {
      name: 'virtkit start ≥ 5× faster than libvirt',
      value: libvirtOverVirtkit,
      ofMedians: libvirtOverVirtkitOfMedians,
      limit: 5,
      unit: '×',
      pass: libvirtOverVirtkit >= 5,
    },
    {
      name: 'in-process dispatch p50 ≤ 20 µs (cgroup.release)',
      value: dispatchP50,
      limit: 20,
      unit: 'µs',
      pass: dispatchP50 <= 20,
    },
    {
      name: 'delegated dispatch p50 ≤ 300 µs (cgroup.release)',
      value: delegatedP50,
      limit: 300,
      unit: 'µs',
      pass: delegatedP50 <= 300,
    },
  ];

  const medianOf = (rs: ScaleResult[], k: 'startMs' | 'destroyMs' | 'peakRssKiB' | 'baseRssKiB') =>
    summarize(rs.map((r) => r[k])).median;
  const scaleRows = [
    { who: 'raw QEMU (its own process, the floor)', rs: scaleRw },
    { who: `virtkit (its own process: ${scale.runner})`, rs: scaleVk },
    { who: `libvirt ${libvirt.version} (python3 process)`, rs: scaleLv },
  ].map(({ who, rs }) => ({
    who,
    rounds: rs.length,
    n: SCALE_N,
    startMs: medianOf(rs, 'startMs'),
    destroyMs: medianOf(rs, 'destroyMs'),
    peakRssKiB: Math.max(...rs.map((r) => r.peakRssKiB)),
    baseRssKiB: medianOf(rs, 'baseRssKiB'),
    raw: rs,
  }));

  const meta = {
    date: new Date().toISOString(),
    machine: machineDescription(),
    qemu: qemuVersion(),
    libvirt: libvirt.version,
    accel,
    accelWhy: probe.why,
    iterations: ITER,
    warmup: WARMUP,
    floor: floorId,
    privd: `virtkit-privd (the built dist/privd-cli.js) in its own process, policy: descendant QEMU targets, memlock ≤ 8 MiB, scheduler batch/other, cgroup parent ${privd.cgroupParent}`,
  };
  const json = {
    meta,
    contenders: contenders.map((c) => ({
      id: c.id,
      label: c.label,
      start: st(c.id).start,
      destroy: st(c.id).destroy,
      ratiosToFloor: ratios(c),
      qmpCommandsPerStart: c.qmpCommands?.() ?? (c.id === 'libvirt' ? libvirtCount?.qmp : undefined),
      samples: { start: c.starts, destroy: c.destroys },
    })),
    libvirtQmpCommands: libvirtCount?.commands,
    dispatch: {
      calls: DISPATCH_N,
      direct: { p50: pctSorted(dispatch.direct, 50), p99: pctSorted(dispatch.direct, 99) },
      inProcess: { p50: dispatchP50, p99: pctSorted(dispatch.dispatched, 99) },
      delegated: { calls: DELEGATED_N, p50: delegatedP50, p99: pctSorted(delegated.release, 99) },
      delegatedSetScheduler: {
        calls: DELEGATED_N,
        p50: pctSorted(delegated.setScheduler, 50),
        p99: pctSorted(delegated.setScheduler, 99),
      },
    },
    scale: scaleRows,
    targets,
  };
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(join(RESULTS, 'latest.json'), `${JSON.stringify(json, null, 2)}\n`);
  const md = markdown(json);
  writeFileSync(join(RESULTS, 'latest.md'), md);
  process.stdout.write(md);
}

function pctSorted(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? Number.NaN;
}

const f1 = (n: number | undefined) => (n === undefined || Number.isNaN(n) ? 'n/a' : n.toFixed(1));
const f2 = (n: number | undefined) => (n === undefined || Number.isNaN(n) ? 'n/a' : n.toFixed(2));
const mib = (kib: number) => `${(kib / 1024).toFixed(1)} MiB`;

function markdown(j: {
  meta: Record<string, unknown>;
  contenders: Array<{
    id: string;
    label: string;
    start: Summary;
    destroy: Summary;
    ratiosToFloor: { start: number; destroy: number; startOfMedians: number; destroyOfMedians: number };
    qmpCommandsPerStart: number | undefined;
  }>;
  libvirtQmpCommands: Record<string, number> | undefined;
  dispatch: {
    calls: number;
    direct: { p50: number; p99: number };
    inProcess: { p50: number; p99: number };
    delegated: { calls: number; p50: number; p99: number };
    delegatedSetScheduler: { calls: number; p50: number; p99: number };
  };
  scale: Array<{
    who: string;
    rounds: number;
    n: number;
    startMs: number;
    destroyMs: number;
    peakRssKiB: number;
    baseRssKiB: number;
  }>;
  targets: Array<{
    name: string;
    value: number;
    ofMedians?: number;
    limit: number;
    unit: string;
    pass: boolean;
  }>;
}): string {
  const m = j.meta;
  const lines: string[] = [];
  lines.push(`# virtkit benchmark — ${String(m['date'])}`, '');
  lines.push(`- machine: ${String(m['machine'])}`);
  lines.push(`- ${String(m['qemu'])}; libvirt ${String(m['libvirt'])}`);
  lines.push(`- accelerator: **${String(m['accel']).toUpperCase()}** — ${String(m['accelWhy'])}`);
  lines.push(
    `- VM: 2 vCPUs, 64 MiB, firmware only (SeaBIOS, no kernel, no disk), machine pc; ` +
      `${String(m['iterations'])} iterations per contender after ${String(m['warmup'])} warm-up, alternating round-robin`,
  );
  lines.push(
    `- floor: \`${String(m['floor'])}\` (the faster raw variant); reproduce with \`npm run bench\``,
    '',
  );
  lines.push('## Start and destroy (ms)', '');
  lines.push(
    '| contender | start median | start p95 | destroy median | destroy p95 | start / floor (of medians) | destroy / floor (of medians) | QMP cmds per start |',
  );
  lines.push('|---|---:|---:|---:|---:|---:|---:|---:|');
  for (const c of j.contenders) {
    lines.push(
      `| ${c.label} | ${f1(c.start.median)} | ${f1(c.start.p95)} | ${f1(c.destroy.median)} | ${f1(c.destroy.p95)} | ` +
        `${f2(c.ratiosToFloor.start)} (${f2(c.ratiosToFloor.startOfMedians)}) | ` +
        `${f2(c.ratiosToFloor.destroy)} (${f2(c.ratiosToFloor.destroyOfMedians)}) | ${c.qmpCommandsPerStart ?? '—'} |`,
    );
  }
  lines.push('', `Delegation: ${String(m['privd'])}.`, '');
  lines.push('## Targets', '');
  lines.push('| target | measured | ratio of medians | limit | result |', '|---|---:|---:|---:|---|');
  for (const t of j.targets) {
    const result = t.pass ? '**pass**' : '**MISS**';
    const om = t.ofMedians === undefined ? '' : `${f2(t.ofMedians)} ${t.unit}`;
    lines.push(`| ${t.name} | ${f2(t.value)} ${t.unit} | ${om} | ${t.limit} ${t.unit} | ${result} |`);
  }
  lines.push(
    '',
    'Ratios are medians of per-iteration ratios (the contenders of one iteration run back to back); the ratio of the medians is given next to them.',
  );
  lines.push('', `## Handler dispatch alone (${j.dispatch.calls} calls, µs)`, '');
  lines.push('| path | p50 | p99 |', '|---|---:|---:|');
  lines.push(`| handler called directly | ${f2(j.dispatch.direct.p50)} | ${f2(j.dispatch.direct.p99)} |`);
  lines.push(
    `| in-process: driver invoke() → handler | ${f2(j.dispatch.inProcess.p50)} | ${f2(j.dispatch.inProcess.p99)} |`,
  );
  lines.push(
    `| delegated: driver invoke() → delegate() → virtkit-privd → cgroup.release (${j.dispatch.delegated.calls} calls) | ${f2(j.dispatch.delegated.p50)} | ${f2(j.dispatch.delegated.p99)} |`,
    `| delegated: same, thread.setScheduler other/0 on a paused QEMU's vCPU (${j.dispatch.delegatedSetScheduler.calls} calls) | ${f2(j.dispatch.delegatedSetScheduler.p50)} | ${f2(j.dispatch.delegatedSetScheduler.p99)} |`,
    '',
    'In-process and the delegated target both dispatch cgroup.release (the in-process handler does nothing).',
    '',
  );
  lines.push(`## Scale: ${j.scale[0]?.n ?? 0} domains started concurrently, then destroyed concurrently`, '');
  lines.push(
    '| driver | rounds | start all (ms, median) | destroy all (ms, median) | start / raw | destroy / raw | driver peak RSS | driver RSS before | growth |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  );
  const floorScale = j.scale[0];
  for (const s of j.scale)
    lines.push(
      `| ${s.who} | ${s.rounds} | ${f1(s.startMs)} | ${f1(s.destroyMs)} | ${f2(s.startMs / (floorScale?.startMs ?? Number.NaN))} | ${f2(s.destroyMs / (floorScale?.destroyMs ?? Number.NaN))} | ${mib(s.peakRssKiB)} | ${mib(s.baseRssKiB)} | ${mib(s.peakRssKiB - s.baseRssKiB)} |`,
    );
  if (j.libvirtQmpCommands) {
    const top = Object.entries(j.libvirtQmpCommands)
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k} ${v}`)
      .join(', ');
    lines.push('', `libvirt's QMP commands for one start (from its monitor trace): ${top}.`);
  }
  lines.push(
    '',
    'Peak RSS is VmHWM of the process that hosts the driver (nothing else of the benchmark runs in it), reset (clear_refs) before each round; the largest of the rounds is shown.',
    '',
  );
  return lines.join('\n');
}

let exitCode = 0;
/** Set by SIGINT/SIGTERM: the run stops at the next step and cleans up. */
let aborted: NodeJS.Signals | undefined;
const onSignal = (sig: NodeJS.Signals) => {
  if (aborted) {
    log(`${sig}: still cleaning up`);
    return;
  }
  aborted = sig;
  exitCode = 130;
  log(`${sig}: stopping after the current step, then cleaning up`);
  // A step that hangs must not keep what the run made alive: clean up anyway after a while.
  setTimeout(() => void cleanupAll().finally(() => process.exit(130)), 30_000).unref();
};
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, onSignal);
try {
  await main();
} catch (err) {
  if (!aborted) {
    exitCode = 1;
    log(`failed: ${(err as Error).stack ?? String(err)}`);
  }
} finally {
  const notes = await cleanupAll();
  for (const n of notes) log(n);
  const left = markedProcesses();
  if (left.length) {
    exitCode = 1;
    log(`processes of this run still alive after clean-up: ${left.join(' ')}`);
  }
}
process.exit(exitCode);

/*
 * Before and after, in one run: the delegated round trip of this checkout against another one (a
 * built checkout of an earlier commit), each side's own virtkit-privd (its dist/privd-cli.js, in
 * its own process) and its own delegate() client, in alternating blocks of calls, so that both
 * sides see the same machine — on a shared machine the load moves more between two runs than most
 * changes do. Per side and operation: p50 and p99, and the helper's and the client's CPU per
 * call. Then, per side, cgroup.release while 1,000 clients are connected to that side's helper
 * and 100 of them call in a loop (one load process per side, this checkout's bench/privd-load.ts,
 * its loops running only while its side is measured), again in alternating blocks: p50, p99 of
 * all samples, and the median of the blocks' p99s.
 *
 * Run: npm run build && tsx bench/delegated-ab.ts /path/to/other/checkout
 *   (the other checkout built too; BENCH_ROUNDS rounds, default 10, of BENCH_BLOCK calls per side
 *   and operation, default 500, and BENCH_BUSY_BLOCK calls under load, default 300; BENCH_BUSY=0
 *   leaves the loaded rows out)
 */

import { type ChildProcess, spawn } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Delegate, InvocationContext } from '../src/internal/index.js';
import { percentile } from './common.js';

const OTHER = process.argv[2];
if (!OTHER) throw new Error('usage: tsx bench/delegated-ab.ts /path/to/other/checkout');
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 10);
const BLOCK = Number(process.env['BENCH_BLOCK'] ?? 500);
const BUSY = Number(process.env['BENCH_BUSY'] ?? 100);
const BUSY_BLOCK = Number(process.env['BENCH_BUSY_BLOCK'] ?? 300);
const CONNECTED = 999;

const dir = mkdtempSync(join(tmpdir(), 'vk-bench-ab-'));
const idle: ChildProcess = spawn('sleep', ['3600'], { stdio: 'ignore' });
const pid = idle.pid as number;
await new Promise((r) => idle.once('spawn', r));
const policyPath = join(dir, 'policy.json');
writeFileSync(
  policyPath,
  JSON.stringify({
    version: 1,
    peers: { uids: [process.getuid?.() ?? 0] },
    targets: { qualify: ['descendant'], emulators: [readlinkSync(`/proc/${pid}/exe`)] },
    scheduler: { policies: ['other'] },
    cgroup: { parent: 'virtkit-bench' },
    limits: { maxConnections: 2048, maxConnectionsPerUid: 1100 },
  }),
);

interface Side {
  readonly name: string;
  readonly helper: ChildProcess;
  readonly socket: string;
  readonly d: Delegate;
  load?: ChildProcess;
}

/** Resolves when `child` has printed `word` (after now). */
function said(child: ChildProcess, word: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let out = '';
    const exited = (code: number | null) => reject(new Error(`load process exited (${code}): ${out}`));
    const on = (b: Buffer) => {
      out += b.toString();
      if (!out.includes(word)) return;
      child.stdout?.off('data', on);
      child.off('exit', exited);
      resolve();
    };
    child.stdout?.on('data', on);
    child.once('exit', exited);
  });
}

/** A load process on `s`'s helper: CONNECTED connections, BUSY of them looping once resumed. */
async function startLoad(s: Side): Promise<void> {
  const load = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      join(import.meta.dirname, 'privd-load.ts'),
      s.socket,
      String(CONNECTED),
      String(BUSY),
      String(pid),
      'paused',
    ],
    { stdio: ['ignore', 'pipe', 'inherit'], cwd: resolve(import.meta.dirname, '..') },
  );
  s.load = load;
  await said(load, 'READY');
}

async function busyBlock(s: Side, n: number, samples: number[]): Promise<number[]> {
  const child = s.load as ChildProcess;
  const running = said(child, 'RUNNING');
  child.kill('SIGUSR1');
  await running;
  // The loops at full speed before anything counts.
  await new Promise((r) => setTimeout(r, 300));
  const mine: number[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const t0 = process.hrtime.bigint();
      await ops.release(s.d);
      mine.push(Number(process.hrtime.bigint() - t0) / 1000);
    }
  } finally {
    const paused = said(child, 'PAUSED');
    child.kill('SIGUSR2');
    await paused;
  }
  samples.push(...mine);
  return mine.sort((a, b) => a - b);
}

async function side(name: string, root: string): Promise<Side> {
  const cli = join(root, 'dist', 'privd-cli.js');
  if (!existsSync(cli)) throw new Error(`${cli} is missing: build that checkout first`);
  const socket = join(dir, `${name}.sock`);
  const log = join(dir, `${name}.audit.log`);
  const fd = openSync(log, 'a');
  const helper = spawn(process.execPath, [cli, '--socket', socket, '--policy', policyPath], {
    stdio: ['ignore', 'ignore', fd],
  });
  closeSync(fd);
  for (let t = Date.now(); !readFileSync(log, 'utf8').includes('listening on'); ) {
    if (helper.exitCode !== null || Date.now() - t > 30_000)
      throw new Error(`${name}: the helper did not start`);
    await new Promise((r) => setTimeout(r, 20));
  }
  const mod = (await import(pathToFileURL(join(root, 'src', 'internal', 'index.ts')).href)) as {
    delegate(path: string): Delegate;
  };
  return { name, helper, socket, d: mod.delegate(socket) };
}

const ctx = (phase: InvocationContext['phase']): InvocationContext => ({
  domain: { uuid: '00000000-0000-4000-8000-000000000000', name: 'bench', id: 1 },
  phase,
  pid,
  signal: new AbortController().signal,
  deadline: Date.now() + 60_000,
});
const threads = [{ tid: pid, role: 'vcpu' as const, index: 0, policy: 'other' as const, priority: 0 }];
const ops = {
  release: (d: Delegate) => d.handlers['cgroup.release'](ctx('release'), { pid, placements: [] }),
  setScheduler: (d: Delegate) => d.handlers['thread.setScheduler'](ctx('startup'), { pid, threads }),
};
type Op = keyof typeof ops;

/** CPU time (user + system, all threads) a process has used, in µs (10 ms ticks). */
function cpuMicros(p: number): number {
  const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) * 10_000;
}

interface Tally {
  samples: number[];
  helperCpu: number;
  clientCpu: number;
  calls: number;
}

async function block(s: Side, op: Op, n: number, t: Tally): Promise<void> {
  const h0 = cpuMicros(s.helper.pid as number);
  const c0 = process.cpuUsage();
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await ops[op](s.d);
    t.samples.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  const c = process.cpuUsage(c0);
  t.helperCpu += cpuMicros(s.helper.pid as number) - h0;
  t.clientCpu += c.user + c.system;
  t.calls += n;
}

const empty = (): Tally => ({ samples: [], helperCpu: 0, clientCpu: 0, calls: 0 });
const load = () =>
  loadavg()
    .map((l) => l.toFixed(1))
    .join(' ');
const sides = [await side('this', resolve(import.meta.dirname, '..')), await side('other', resolve(OTHER))];
const tallies = new Map<string, Tally>();
const tally = (key: string): Tally => {
  const t = tallies.get(key) ?? empty();
  tallies.set(key, t);
  return t;
};
const loadBefore = load();
try {
  // Warm-up: both sides' code optimised before anything counts.
  for (const s of sides) for (const op of Object.keys(ops) as Op[]) await block(s, op, 2000, empty());
  for (let r = 0; r < ROUNDS; r++) {
    const order = r % 2 === 0 ? sides : [...sides].reverse();
    for (const op of Object.keys(ops) as Op[])
      for (const s of order) await block(s, op, BLOCK, tally(`${s.name} ${op}`));
  }
  const lines = [
    `Delegated round trip, this checkout against ${resolve(OTHER)}, alternating blocks (µs); load average before ${loadBefore}, after ${load()}`,
    '',
    '| side | operation | calls | p50 | p99 | helper CPU/call | client CPU/call |',
    '|---|---|---:|---:|---:|---:|---:|',
  ];
  for (const [key, t] of tallies) {
    const [name, ...op] = key.split(' ');
    const s = t.samples.sort((a, b) => a - b);
    lines.push(
      `| ${name} | ${op.join(' ')} | ${t.calls} | ${percentile(s, 50).toFixed(1)} | ${percentile(s, 99).toFixed(1)} | ${(t.helperCpu / t.calls).toFixed(0)} | ${(t.clientCpu / t.calls).toFixed(0)} |`,
    );
  }
  if (BUSY > 0) {
    const loadBusy = load();
    for (const s of sides) await startLoad(s);
    const all = new Map(sides.map((s) => [s.name, [] as number[]]));
    const p99s = new Map(sides.map((s) => [s.name, [] as number[]]));
    for (let r = 0; r < ROUNDS; r++) {
      const order = r % 2 === 0 ? sides : [...sides].reverse();
      for (const s of order) {
        const block = await busyBlock(s, BUSY_BLOCK, all.get(s.name) as number[]);
        p99s.get(s.name)?.push(percentile(block, 99));
      }
    }
    lines.push(
      '',
      `cgroup.release with ${CONNECTED + 1} clients connected, ${BUSY} of them calling in a loop (µs); load average before ${loadBusy}, after ${load()}`,
      '',
      "| side | calls | p50 | p99 | median of the blocks' p99 |",
      '|---|---:|---:|---:|---:|',
    );
    for (const s of sides) {
      const a = (all.get(s.name) as number[]).sort((x, y) => x - y);
      const b = (p99s.get(s.name) as number[]).sort((x, y) => x - y);
      lines.push(
        `| ${s.name} | ${a.length} | ${percentile(a, 50).toFixed(1)} | ${percentile(a, 99).toFixed(1)} | ${percentile(b, 50).toFixed(1)} |`,
      );
    }
  }
  process.stdout.write(`${lines.join('\n')}\n`);
} finally {
  for (const s of sides) {
    s.load?.kill('SIGTERM');
    s.d.close();
    s.helper.kill('SIGTERM');
  }
  await Promise.all(
    sides.map(
      (s) =>
        new Promise((r) => (!s.load || s.load.exitCode !== null ? r(undefined) : s.load.once('exit', r))),
    ),
  );
  await Promise.all(
    sides.map(
      (s) => new Promise((r) => (s.helper.exitCode !== null ? r(undefined) : s.helper.once('exit', r))),
    ),
  );
  idle.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
}

/*
 * Round trip of one delegated privileged operation with virtkit-privd in its own process, as
 * deployed (the built dist/privd-cli.js, audit lines to a file): delegate() → Unix socket → helper
 * (peer check, policy, audit line, the built-in operation) → response. Two operations:
 * cgroup.release with no placements (no target process to inspect) and thread.setScheduler to
 * SCHED_OTHER/0 on an idle child (target checks in /proc plus sched_setscheduler), next to the
 * syscall alone and a bare Unix-socket echo between two Node processes (the floor).
 *
 * Then a well-behaved tenant's latency while 1,000 clients are connected (a load process of uid 0
 * holds 999 connections, idle after hello), and while 100 of them also call in a loop: the tenant
 * is another uid (`nobody`, bench/privd-tenant.ts in its own process, one call at a time), as the
 * issue asks (one allowed peer must not lock others out). The policy raises the per-uid connection
 * cap to 1,100 for the load's uid instead of spreading the load over created users. For comparison,
 * the bench process itself (uid 0, the load's uid) is measured under the same load too.
 *
 * Run: npm run build && npm run bench:delegated   (BENCH_N calls per row, default 5000;
 * PRIVD_PROF=dir writes CPU profiles of helper and client there; BENCH_NICE=-10 runs the helper
 * and the tenant, not the load, at that nice value)
 */

import { type ChildProcess, spawn } from 'node:child_process';
import {
  chmodSync,
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { connect as netConnect } from 'node:net';
import { loadavg, setPriority, tmpdir } from 'node:os';
import { join } from 'node:path';
import { delegate, type InvocationContext } from '../src/internal/index.js';
import { schedSet } from '../src/util/libc.js';
import { percentile, sampleMicros } from './common.js';

const N = Number(process.env['BENCH_N'] ?? 5000);
const LOADED_N = Number(process.env['BENCH_LOADED_N'] ?? 3000);
const PROF = process.env['PRIVD_PROF'];
/** BENCH_NICE: the helper's and the tenant's nice value (not the load's), to see them given a core. */
const NICE = process.env['BENCH_NICE'] ? Number(process.env['BENCH_NICE']) : undefined;
const ROOT = join(import.meta.dirname, '..');
const CLI = join(ROOT, 'dist', 'privd-cli.js');
if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build first`);

const dir = mkdtempSync(join(tmpdir(), 'vk-bench-privd-'));
// The tenant runs as nobody: it must reach the socket in here.
chmodSync(dir, 0o711);
const TENANT_UID = 65534;
const socketPath = join(dir, 'privd.sock');
const auditLog = join(dir, 'audit.log');
const idle: ChildProcess = spawn('sleep', ['600'], { stdio: 'ignore' });
const pid = idle.pid as number;
await new Promise((r) => idle.once('spawn', r));

writeFileSync(
  join(dir, 'policy.json'),
  JSON.stringify({
    version: 1,
    peers: { uids: [process.getuid?.() ?? 0, TENANT_UID] },
    // The idle child stands in for QEMU: its executable is the "emulator" here.
    targets: { qualify: ['descendant'], emulators: [readlinkSync(`/proc/${pid}/exe`)] },
    scheduler: { policies: ['other'] },
    cgroup: { parent: 'virtkit-bench' },
    // Every client of this bench is root: the per-uid cap must admit all 1,000 of them.
    limits: { maxConnections: 2048, maxConnectionsPerUid: 1100 },
  }),
);

function launch(args: string[], err: string): ChildProcess {
  const fd = openSync(err, 'a');
  const child = spawn(
    process.execPath,
    [...(PROF ? ['--cpu-prof', `--cpu-prof-dir=${PROF}`] : []), ...args],
    { stdio: ['pipe', 'pipe', fd], cwd: ROOT },
  );
  closeSync(fd);
  return child;
}

const helper = launch([CLI, '--socket', socketPath, '--policy', join(dir, 'policy.json')], auditLog);
if (NICE !== undefined) setPriority(helper.pid as number, NICE);
for (let t = Date.now(); !readFileSync(auditLog, 'utf8').includes('listening on'); ) {
  if (helper.exitCode !== null || Date.now() - t > 30_000)
    throw new Error(`virtkit-privd did not start: ${readFileSync(auditLog, 'utf8')}`);
  await new Promise((r) => setTimeout(r, 20));
}

const d = delegate(socketPath);
const ctx = (phase: InvocationContext['phase']): InvocationContext => ({
  domain: { uuid: '00000000-0000-4000-8000-000000000000', name: 'bench', id: 1 },
  phase,
  pid,
  signal: new AbortController().signal,
  deadline: Date.now() + 60_000,
});
const threads = [{ tid: pid, role: 'vcpu' as const, index: 0, policy: 'other' as const, priority: 0 }];
const release = async () => d.handlers['cgroup.release'](ctx('release'), { pid, placements: [] });
const measure = (fn: () => Promise<unknown>, n = N): Promise<number[]> =>
  sampleMicros(fn, n, Math.min(1000, n));

/** A Unix-socket echo in another Node process: the floor of any cross-process round trip. */
async function echoFloor(): Promise<number[]> {
  const path = join(dir, 'echo.sock');
  const server = spawn(
    process.execPath,
    [
      '-e',
      `require('net').createServer((s) => s.on('data', (d) => s.write(d))).listen(${JSON.stringify(path)}, () => console.log('up'))`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  await new Promise((r) => server.stdout?.once('data', r));
  const s = netConnect(path);
  await new Promise((r) => s.once('connect', r));
  const payload = Buffer.alloc(200, 0x61);
  const once = () =>
    new Promise<void>((resolve) => {
      let got = 0;
      const on = (b: Buffer) => {
        got += b.length;
        if (got >= payload.length) {
          s.off('data', on);
          resolve();
        }
      };
      s.on('data', on);
      s.write(payload);
    });
  try {
    return await measure(once);
  } finally {
    s.destroy();
    server.kill('SIGKILL');
  }
}

/** A process holding `n` connections to the helper (each greeted), `busy` of them calling in a loop. */
async function loadProcess(n: number, busy: number): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      join(import.meta.dirname, 'privd-load.ts'),
      socketPath,
      String(n),
      String(busy),
      String(pid),
    ],
    { stdio: ['pipe', 'pipe', 'inherit'], cwd: ROOT },
  );
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (b: Buffer) => {
      out += b.toString();
      if (out.includes('READY')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`load process exited (${code}): ${out}`)));
  });
  return child;
}

/** The well-behaved tenant (uid nobody, its own process): `n` sorted samples of cgroup.release. */
async function tenant(n: number): Promise<number[]> {
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      join(import.meta.dirname, 'privd-tenant.ts'),
      socketPath,
      String(n),
      String(Math.min(1000, n)),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'], cwd: ROOT, uid: TENANT_UID, gid: TENANT_UID },
  );
  if (NICE !== undefined) setPriority(child.pid as number, NICE);
  let out = '';
  child.stdout?.on('data', (b: Buffer) => {
    out += b.toString();
  });
  const code = await new Promise((r) => child.once('exit', r));
  if (code !== 0) throw new Error(`the tenant exited with ${code}: ${out}`);
  const { samples, failed } = JSON.parse(out) as { samples: number[]; failed: number };
  if (failed > 0) throw new Error(`${failed} of the tenant's calls failed`);
  return samples;
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const gone = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await gone;
}

/** CPU time (user + system) a process has used, in µs, from /proc/<pid>/stat (10 ms ticks). */
function cpuMicros(p: number | 'self'): number {
  const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) * 10_000;
}

/** Samples of `fn`, with the helper's and this process's CPU time per call. */
async function measureCpu(
  fn: () => Promise<unknown>,
  n = N,
): Promise<{ s: number[]; helper: number; client: number }> {
  const h0 = cpuMicros(helper.pid as number);
  const c0 = cpuMicros('self');
  const s = await measure(fn, n);
  const calls = n + Math.min(1000, n);
  return {
    s,
    helper: (cpuMicros(helper.pid as number) - h0) / calls,
    client: (cpuMicros('self') - c0) / calls,
  };
}

const row = (name: string, s: number[], cpu?: { helper: number; client: number }) =>
  `| ${name} | ${s.length} | ${percentile(s, 50).toFixed(1)} | ${percentile(s, 99).toFixed(1)} | ${cpu ? cpu.helper.toFixed(0) : ''} | ${cpu ? cpu.client.toFixed(0) : ''} |`;

try {
  const direct = await measure(async () => schedSet(pid, 'other', 0));
  const floor = await echoFloor();
  const rel = await measureCpu(release);
  const sched = await measureCpu(async () =>
    d.handlers['thread.setScheduler'](ctx('startup'), { pid, threads }),
  );
  const idleLoad = await loadProcess(999, 0);
  const rel1000 = await tenant(LOADED_N);
  await stopProcess(idleLoad);
  const busyLoad = await loadProcess(999, 100);
  const rel1000busy = await tenant(LOADED_N);
  const rel1000busySameUid = await measure(release, LOADED_N);
  await stopProcess(busyLoad);
  process.stdout.write(
    [
      `${new Date().toISOString()} load average ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}`,
      `Delegated round trip, virtkit-privd in its own process (dist/privd-cli.js, audit to a file) (µs)`,
      '',
      '| path | calls | p50 | p99 | helper CPU/call | client CPU/call |',
      '|---|---:|---:|---:|---:|---:|',
      row('sched_setscheduler called directly (no delegation)', direct),
      row('floor: 200-byte echo over a Unix socket, two Node processes', floor),
      row('delegated cgroup.release (no placements)', rel.s, rel),
      row('delegated thread.setScheduler (other/0, idle thread)', sched.s, sched),
      row('tenant (uid nobody) cgroup.release, 1,000 clients connected (999 idle, uid 0)', rel1000),
      row(
        'tenant (uid nobody) cgroup.release, 1,000 clients connected, 100 of them (uid 0) calling in a loop',
        rel1000busy,
      ),
      row('bench process (uid 0, the uid of the load) cgroup.release, same load', rel1000busySameUid),
      '',
    ].join('\n'),
  );
} finally {
  d.close();
  helper.kill('SIGTERM');
  await new Promise((r) => (helper.exitCode !== null ? r(undefined) : helper.once('exit', r)));
  idle.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
}

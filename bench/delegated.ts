/*
 * Round trip of one delegated privileged operation: delegate() → Unix socket → virtkit-privd
 * (peer check, policy, audit line, the built-in operation) → response, with helper and client in
 * one process on a temporary socket. Two operations: cgroup.release with no placements (no target
 * process to inspect) and thread.setScheduler to SCHED_OTHER/0 on an idle child (target checks in
 * /proc plus sched_setscheduler), next to calling the same built-in directly.
 * Run: npm run bench:delegated
 */

import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPrivilegedHelper, delegate, type InvocationContext } from '../src/internal/index.js';
import { schedSet } from '../src/util/libc.js';
import { percentile, sampleMicros } from './common.js';

const N = Number(process.env['BENCH_N'] ?? 5000);
const dir = mkdtempSync(join(tmpdir(), 'vk-bench-privd-'));
const socketPath = join(dir, 'privd.sock');
const idle: ChildProcess = spawn('sleep', ['600'], { stdio: 'ignore' });
const pid = idle.pid as number;
await new Promise((r) => idle.once('spawn', r));

const helper = createPrivilegedHelper({
  socketPath,
  policy: {
    version: 1,
    peers: { uids: [process.getuid?.() ?? 0] },
    // The idle child stands in for QEMU: its executable is the "emulator" here.
    targets: { qualify: ['descendant'], emulators: [readlinkSync(`/proc/${pid}/exe`)] },
    scheduler: { policies: ['other'] },
    cgroup: { parent: 'virtkit-bench' },
  },
  audit: () => {},
});
await helper.listen();
const d = delegate(socketPath);

const ctx = (phase: InvocationContext['phase']): InvocationContext => ({
  domain: { uuid: '00000000-0000-4000-8000-000000000000', name: 'bench', id: 1 },
  phase,
  pid,
  signal: new AbortController().signal,
  deadline: Date.now() + 60_000,
});
const threads = [{ tid: pid, role: 'vcpu' as const, index: 0, policy: 'other' as const, priority: 0 }];

const measure = (fn: () => unknown): Promise<number[]> =>
  sampleMicros(async () => fn(), N, Math.min(1000, N));

const pct = percentile;
const row = (name: string, s: number[]) =>
  `| ${name} | ${pct(s, 50).toFixed(1)} | ${pct(s, 99).toFixed(1)} |`;

try {
  const direct = await measure(() => schedSet(pid, 'other', 0));
  const release = await measure(() => d.handlers['cgroup.release'](ctx('release'), { pid, placements: [] }));
  const sched = await measure(() => d.handlers['thread.setScheduler'](ctx('startup'), { pid, threads }));
  process.stdout.write(
    [
      `Delegated round trip through virtkit-privd, ${N} calls each (µs)`,
      '',
      '| path | p50 | p99 |',
      '|---|---|---|',
      row('sched_setscheduler called directly (no delegation)', direct),
      row('delegated cgroup.release (no placements)', release),
      row('delegated thread.setScheduler (other/0, idle thread)', sched),
      '',
    ].join('\n'),
  );
} finally {
  d.close();
  await helper.close();
  idle.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
}

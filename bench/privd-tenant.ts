/*
 * The well-behaved tenant of bench/delegated.ts's loaded rows: a client in its own process, run by
 * the bench as another uid than the load's, calling cgroup.release one call at a time. Its target
 * is a `sleep` of its own (a descendant, as QEMU is the driver's). argv: socket, calls, warm-up
 * calls. Prints one JSON line: the sorted samples (µs) and how many calls failed.
 */
import { spawn } from 'node:child_process';
import { delegate, type InvocationContext } from '../src/internal/index.js';

const [socketPath, n, warmup] = [process.argv[2] as string, Number(process.argv[3]), Number(process.argv[4])];
const target = spawn('sleep', ['600'], { stdio: 'ignore' });
await new Promise((r) => target.once('spawn', r));
const pid = target.pid as number;
const d = delegate(socketPath);
const ctx: InvocationContext = {
  domain: { uuid: '00000000-0000-4000-8000-00000000000e', name: 'tenant', id: 1 },
  phase: 'release',
  pid,
  signal: new AbortController().signal,
  deadline: Date.now() + 600_000,
};
let failed = 0;
const call = async (): Promise<void> => {
  try {
    await d.handlers['cgroup.release'](ctx, { pid, placements: [] });
  } catch {
    failed++;
  }
};
try {
  for (let i = 0; i < warmup; i++) await call();
  const samples: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = process.hrtime.bigint();
    await call();
    samples.push(Number(process.hrtime.bigint() - t) / 1000);
  }
  process.stdout.write(`${JSON.stringify({ samples: samples.sort((a, b) => a - b), failed })}\n`);
} finally {
  d.close();
  target.kill('SIGKILL');
}

/*
 * In-process dispatch overhead of one privileged-operation invocation: the driver's invoke()
 * (deadline timer, AbortController, argument copy, result validation, post-check, log record)
 * around a handler that does nothing, side by side with calling that handler directly.
 * Run: npm run bench:dispatch
 */

import { invoke } from '../src/drivers/qemu/privileged/invoke.js';
import { HandlerTable } from '../src/internal/handler-table.js';

const N = Number(process.env['BENCH_N'] ?? 20_000);
const handlers = new HandlerTable();
const handler = async () => undefined;
handlers.set('cgroup.release', handler);
const scope = {
  handlers,
  domain: { uuid: '00000000-0000-4000-8000-000000000000', name: 'bench', id: 1 },
  pid: process.pid,
  taints: [] as string[],
  cgroupParent: 'virtkit',
  log: () => {},
};
const args = { pid: process.pid, placements: [{ tid: process.pid, cgroup: '/virtkit/bench/emulator' }] };

async function measure(label: string, fn: () => Promise<unknown>): Promise<number[]> {
  for (let i = 0; i < 2000; i++) await fn();
  const samples: number[] = [];
  for (let i = 0; i < N; i++) {
    const t = process.hrtime.bigint();
    await fn();
    samples.push(Number(process.hrtime.bigint() - t) / 1000);
  }
  samples.sort((a, b) => a - b);
  void label;
  return samples;
}

const pct = (s: number[], p: number) => s[Math.min(s.length - 1, Math.floor((s.length * p) / 100))] ?? 0;
const direct = await measure('direct', () => handler());
const dispatched = await measure('invoke', () => invoke(scope, 'cgroup.release', 'release', args));
const row = (name: string, s: number[]) =>
  `| ${name} | ${pct(s, 50).toFixed(2)} | ${pct(s, 99).toFixed(2)} |`;
process.stdout.write(
  [
    `In-process dispatch, ${N} calls (µs)`,
    '',
    '| path | p50 | p99 |',
    '|---|---|---|',
    row('handler called directly', direct),
    row('driver invoke() → handler', dispatched),
    '',
    `overhead p50: ${(pct(dispatched, 50) - pct(direct, 50)).toFixed(2)} µs (target <= 20 µs)`,
    '',
  ].join('\n'),
);

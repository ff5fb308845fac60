/*
 * In-process dispatch overhead of one privileged-operation invocation: the driver's invoke()
 * (deadline timer, AbortController, argument copy, result validation, post-check, log record)
 * around a handler that does nothing, side by side with calling that handler directly.
 * Run: npm run bench:dispatch (alone) — `npm run bench` runs it as part of the whole suite.
 */

import { pathToFileURL } from 'node:url';
import { HandlerTable } from '../src/privileged/handler-table.js';
import { invoke } from '../src/privileged/invoke.js';
import { sampleMicros } from './common.js';

export interface DispatchSamples {
  /** µs per call of the handler called directly. */
  direct: number[];
  /** µs per call through the driver's invoke(). */
  dispatched: number[];
}

/** Measures `n` calls each way after 2000 warm-up calls; samples sorted ascending, in µs. */
export async function measureInProcessDispatch(n: number): Promise<DispatchSamples> {
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

  const measure = (fn: () => Promise<unknown>) => sampleMicros(fn, n, 2000);

  const direct = await measure(() => handler());
  const dispatched = await measure(() => invoke(scope, 'cgroup.release', 'release', args));
  return { direct, dispatched };
}

const pct = (s: number[], p: number) => s[Math.min(s.length - 1, Math.floor((s.length * p) / 100))] ?? 0;

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const N = Number(process.env['BENCH_N'] ?? 20_000);
  const { direct, dispatched } = await measureInProcessDispatch(N);
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
}

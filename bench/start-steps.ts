/*
 * Where one start's time goes: raw QEMU (the floor), virtkit plain and virtkit with in-process
 * handlers (memlock, scheduler, cgroup placement), alternating in one process, with the time of
 * every start step (START_STEPS) and of every handler invocation (the `virtkit:handler` tracing
 * channel) per contender. Prints medians.
 *
 * Run: npx tsx bench/start-steps.ts   (BENCH_STEPS_N iterations, default 30)
 */

import { tracingChannel } from 'node:diagnostics_channel';
import { readFileSync } from 'node:fs';
import { START_STEPS } from '../src/drivers/qemu/start.js';
import { diagnosticsChannels } from '../src/stable/tracing.js';
import { type Accel, cleanupAll, summarize } from './common.js';
import { probeKvm } from './kvm-probe.js';
import { RawContender } from './raw.js';
import { VirtkitContender, VirtkitHost } from './virtkit.js';

const N = Number(process.env['BENCH_STEPS_N'] ?? 30);
const log = (msg: string) => process.stderr.write(`[bench:steps] ${msg}\n`);
const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

/** Time per step of the start under way (one start at a time here). */
let steps: Map<string, number> | undefined;
for (const step of START_STEPS) {
  const run = step.run;
  (step as { run: typeof run }).run = async (s) => {
    const t0 = performance.now();
    try {
      await run(s);
    } finally {
      steps?.set(step.name, (steps.get(step.name) ?? 0) + performance.now() - t0);
    }
  };
}
const handlerStart = new WeakMap<object, number>();
const tc = tracingChannel(diagnosticsChannels.handler);
tc.subscribe({
  start: (ctx) => handlerStart.set(ctx as object, performance.now()),
  end: () => undefined,
  asyncStart: () => undefined,
  asyncEnd: (ctx) => {
    const t0 = handlerStart.get(ctx as object);
    const op = (ctx as { operation?: string }).operation ?? '?';
    if (t0 !== undefined)
      steps?.set(`  handler ${op}`, (steps.get(`  handler ${op}`) ?? 0) + performance.now() - t0);
  },
  error: () => undefined,
});

async function main(): Promise<void> {
  const accel: Accel = (await probeKvm()).accel;
  const raw = new RawContender('fd', accel);
  const plainHost = await VirtkitHost.open('plain', { type: 'none' });
  const handlersHost = await VirtkitHost.open('handlers', { type: 'in-process' });
  const plain = await VirtkitContender.create(plainHost, 'plain', accel);
  const handlers = await VirtkitContender.create(handlersHost, 'handlers', accel);
  const sides = {
    raw: { start: () => raw.start(), destroy: () => raw.destroy() },
    plain: { start: () => plain.start(), destroy: () => plain.destroy() },
    handlers: { start: () => handlers.start(), destroy: () => handlers.destroy() },
  };
  const times: Record<string, number[]> = { raw: [], plain: [], handlers: [] };
  const perStep: Record<string, Record<string, number[]>> = { plain: {}, handlers: {} };
  const names = Object.keys(sides) as Array<keyof typeof sides>;
  for (let i = -3; i < N; i++) {
    const order = names.map((_, k) => names[(k + i + 3) % names.length] as keyof typeof sides);
    for (const k of order) {
      steps = new Map();
      const ms = await sides[k].start();
      await sides[k].destroy();
      if (i < 0) continue;
      times[k]?.push(ms);
      const table = perStep[k];
      if (!table) continue;
      for (const [name, t] of steps) {
        table[name] ??= [];
        table[name].push(t);
      }
    }
  }
  const floor = summarize(times['raw'] ?? []).median;
  for (const k of names) {
    const s = summarize(times[k] ?? []);
    log(
      `${k}: median ${s.median.toFixed(1)} ms (${(s.median / floor).toFixed(2)}× raw), p95 ${s.p95.toFixed(1)}`,
    );
    for (const [name, xs] of Object.entries(perStep[k] ?? {}))
      log(`    ${name.padEnd(28)} ${summarize(xs).median.toFixed(2)} ms`);
  }
  log(`load ${loadavg()}`);
}

try {
  await main();
} finally {
  for (const n of await cleanupAll()) log(n);
}
process.exit(0);

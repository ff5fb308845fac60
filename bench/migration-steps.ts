/*
 * Where one virtkit migration's time goes: a timeline (ms since the first step) of every start step
 * at the destination, every QMP command either side sends (with its duration) and every QMP event,
 * for BENCH_MIG_N migrations of a running 256 MiB TCG guest back and forth over TCP on loopback.
 *
 * Run: npx tsx bench/migration-steps.ts      Knobs (env): BENCH_MIG_N (3).
 */

import { mkdtempSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { START_STEPS } from '../src/drivers/qemu/start.js';
import type { Connection, Domain } from '../src/index.js';
import { closePlaces, openPlaces, startGuest, watchQmp } from './migration-common.js';

const N = Number(process.env['BENCH_MIG_N'] ?? 3);
const dir = mkdtempSync(join(tmpdir(), 'vk-bench-migsteps-'));
let t0 = 0;
let lines: string[] = [];
const note = (what: string): void => {
  lines.push(`${(performance.now() - t0).toFixed(1).padStart(7)}  ${what}`);
};

for (const step of START_STEPS) {
  const run = step.run;
  (step as { run: typeof run }).run = async (s) => {
    const at = performance.now();
    try {
      await run(s);
    } finally {
      note(`step ${step.name} ${(performance.now() - at).toFixed(1)} ms`);
    }
  };
}
const started = new WeakMap<object, number>();
watchQmp({
  sent: (m) => started.set(m, performance.now()),
  answered: (m) => {
    const at = started.get(m) ?? performance.now();
    note(`qmp ${m.command} ${(performance.now() - at).toFixed(1)} ms`);
  },
  event: (e) => note(`event ${e.event} ${e.event === 'MIGRATION' ? JSON.stringify(e.data) : ''}`),
});

async function main(): Promise<void> {
  const [a, b] = await openPlaces(dir);
  try {
    let dom: Domain = await startGuest(a);
    await new Promise((r) => setTimeout(r, 5000));
    const conns = [a, b];
    for (let i = 0; i < N; i++) {
      lines = [];
      t0 = performance.now();
      dom = await dom.migrateTo(conns[(i + 1) % 2] as Connection, { listen: 'tcp:127.0.0.1:0' });
      note('migrateTo returned');
      process.stdout.write(`#${i + 1} (load ${loadavg()[0]?.toFixed(2)})\n${lines.join('\n')}\n\n`);
    }
  } finally {
    await closePlaces([a, b], dir);
  }
}

await main();

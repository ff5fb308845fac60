/*
 * QMP client micro-benchmark against one real QEMU (`-machine none`, paused): round trips of
 * `query-status` through a hand-written net.Socket client (the floor), through QmpClient.execute
 * (unchecked) and QmpClient.command (reply validated), QmpClient.execute again while a subscriber
 * listens on the `virtkit:qmp:command` tracing channel (what tracing costs; the untraced row is what
 * it costs when nobody listens), and the connect + greeting + negotiation of
 * each, alternating per round so machine noise hits all alike. Prints a table of medians.
 *
 * Run: npx tsx bench/qmp.ts          Knobs (env): BENCH_QMP_N (2000 round trips per round),
 *      BENCH_QMP_ROUNDS (5), BENCH_QMP_CONNECTS (50 per round).
 */

import { spawn } from 'node:child_process';
import diagnosticsChannel from 'node:diagnostics_channel';
import { once } from 'node:events';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { QmpClient } from '../src/drivers/qemu/qmp/client.js';
import { diagnosticsChannels } from '../src/stable/tracing.js';
import { QEMU, summarize, tempDir } from './common.js';
import { connectPolling, RawQmp } from './raw-qmp.js';

const N = Number(process.env['BENCH_QMP_N'] ?? 2000);
const ROUNDS = Number(process.env['BENCH_QMP_ROUNDS'] ?? 5);
const CONNECTS = Number(process.env['BENCH_QMP_CONNECTS'] ?? 50);

async function rawConnect(path: string): Promise<RawQmp> {
  const qmp = new RawQmp(await connectPolling(path, 10_000));
  await qmp.next();
  await qmp.command('qmp_capabilities');
  return qmp;
}

/** Microseconds per call of `fn`, `n` calls one after the other. */
async function perCall(n: number, fn: () => Promise<unknown>): Promise<number> {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await fn();
  return Number(process.hrtime.bigint() - t0) / 1000 / n;
}

function noop(): void {}

async function main(): Promise<void> {
  const dir = tempDir('vk-bench-qmp-');
  const path = join(dir, 'qmp.sock');
  const child = spawn(
    QEMU,
    ['-S', '-machine', 'none', '-nodefaults', '-display', 'none', '-qmp', `unix:${path},server=on,wait=off`],
    { stdio: 'ignore' },
  );
  const exited = once(child, 'exit');
  try {
    const raw = await rawConnect(path);
    raw.close();
    const results: Record<string, number[]> = {
      'round trip, raw net.Socket (floor)': [],
      'round trip, QmpClient.execute': [],
      'round trip, QmpClient.command (validated)': [],
      'round trip, QmpClient.execute, traced (1 subscriber)': [],
      'connect+negotiate, raw net.Socket (floor)': [],
      'connect+negotiate, QmpClient': [],
    };
    for (let round = 0; round < ROUNDS; round++) {
      const r = await rawConnect(path);
      results['round trip, raw net.Socket (floor)']?.push(await perCall(N, () => r.command('query-status')));
      r.close();
      const c = await QmpClient.connect(path);
      results['round trip, QmpClient.execute']?.push(await perCall(N, () => c.execute('query-status')));
      results['round trip, QmpClient.command (validated)']?.push(
        await perCall(N, () => c.command('query-status')),
      );
      const subscriber = { start: noop, end: noop, asyncStart: noop, asyncEnd: noop, error: noop };
      const traced = diagnosticsChannel.tracingChannel(diagnosticsChannels.qmpCommand);
      traced.subscribe(subscriber);
      results['round trip, QmpClient.execute, traced (1 subscriber)']?.push(
        await perCall(N, () => c.execute('query-status')),
      );
      traced.unsubscribe(subscriber);
      c.close();
      results['connect+negotiate, raw net.Socket (floor)']?.push(
        await perCall(CONNECTS, async () => (await rawConnect(path)).close()),
      );
      results['connect+negotiate, QmpClient']?.push(
        await perCall(CONNECTS, async () => (await QmpClient.connect(path)).close()),
      );
    }
    const floor = (key: string): number => summarize(results[key] ?? []).median;
    console.log(`| measure (${ROUNDS} rounds) | median µs | vs floor |`);
    console.log('|---|---:|---:|');
    for (const [key, samples] of Object.entries(results)) {
      const p50 = summarize(samples).median;
      const base = key.startsWith('round trip')
        ? floor('round trip, raw net.Socket (floor)')
        : floor('connect+negotiate, raw net.Socket (floor)');
      console.log(`| ${key} | ${p50.toFixed(1)} | ${(p50 / base).toFixed(2)}× |`);
    }
  } finally {
    child.kill('SIGKILL');
    await exited;
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();

/*
 * The cost of capabilities: probing an emulator (QEMU on `-machine none` with QMP), reading the
 * cached probe from the root after a restart of the process (file), and answering from memory.
 *
 * Run: npx tsx bench/capabilities.ts      Knobs (env): BENCH_CAPS_N (5 probes), BENCH_CAPS_HITS (200).
 */

import { rmSync } from 'node:fs';
import { cachedProbe, forgetProbes } from '../src/drivers/qemu/capabilities/cache.js';
import { buildCapabilities } from '../src/drivers/qemu/capabilities/capabilities.js';
import { probeEmulator } from '../src/drivers/qemu/capabilities/probe.js';
import { QEMU, summarize, tempDir } from './common.js';

const N = Number(process.env['BENCH_CAPS_N'] ?? 5);
const HITS = Number(process.env['BENCH_CAPS_HITS'] ?? 200);

async function ms(fn: () => Promise<unknown>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

const dir = tempDir('caps');
try {
  const probe: number[] = [];
  const file: number[] = [];
  const memory: number[] = [];
  const full: number[] = [];
  for (let i = 0; i < N; i++) probe.push(await ms(() => probeEmulator(QEMU)));
  await cachedProbe(dir, QEMU);
  for (let i = 0; i < HITS; i++) {
    forgetProbes();
    file.push(await ms(() => cachedProbe(dir, QEMU)));
  }
  for (let i = 0; i < HITS; i++) memory.push(await ms(() => cachedProbe(dir, QEMU)));
  for (let i = 0; i < HITS; i++) full.push(await ms(() => buildCapabilities(dir, [QEMU])));
  const row = (label: string, s: number[]) => {
    const { median, p95 } = summarize(s);
    console.log(`| ${label} | ${s.length} | ${median.toFixed(3)} | ${p95.toFixed(3)} |`);
  };
  console.log('| capabilities | n | median ms | p95 ms |');
  console.log('|---|---:|---:|---:|');
  row('probe an emulator (QEMU -machine none, 5 QMP queries)', probe);
  row('cached probe read from the root (new process)', file);
  row('cached probe from memory', memory);
  row('getCapabilities() with a cached probe (host facts from /proc, /sys; XML)', full);
} finally {
  rmSync(dir, { recursive: true, force: true });
}

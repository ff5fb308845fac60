/*
 * virtkit's side of the scale test, in a process of its own (as libvirt's side runs in its own
 * python3 process), so the peak RSS measured is that of a process hosting the driver and nothing
 * else of the benchmark. Driven by bench/run.ts: one JSON command per stdin line, one JSON answer
 * per stdout line.
 *
 * Commands: {"cmd": "scale"} -> ScaleResult; {"cmd": "quit"}.
 * Usage: node --import tsx bench/scale-virtkit.ts <root> <n> <kvm|tcg>
 */

import { createInterface } from 'node:readline';
import { connect, type Domain } from '../src/stable/index.js';
import { type Accel, MARKER, msSince, resetHwm, vmHwmKiB, vmRssKiB } from './common.js';
import { benchDomain } from './virtkit.js';

const [root, nArg, accelArg] = process.argv.slice(2);
if (!root || !nArg || (accelArg !== 'kvm' && accelArg !== 'tcg')) {
  process.stderr.write('usage: scale-virtkit.ts <root> <n> <kvm|tcg>\n');
  process.exit(2);
}
const accel: Accel = accelArg;
const conn = await connect(`qemu:///embed?root=${root}`);
const doms: Domain[] = [];
for (let i = 0; i < Number(nArg); i++)
  doms.push(await conn.defineDomain(benchDomain(`${MARKER}-vkscale-${i}`, accel)));

async function round() {
  const baseRssKiB = vmRssKiB() ?? 0;
  resetHwm();
  let t0 = process.hrtime.bigint();
  const started = await Promise.allSettled(doms.map((d) => d.start()));
  const startMs = msSince(t0);
  t0 = process.hrtime.bigint();
  await Promise.all(
    doms.map((d, i) => (started[i]?.status === 'fulfilled' ? d.destroy() : Promise.resolve())),
  );
  const destroyMs = msSince(t0);
  const peakRssKiB = vmHwmKiB() ?? 0;
  const failed = started.filter((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed.length)
    throw new Error(`${failed.length} of ${doms.length} starts failed: ${failed[0]?.reason}`);
  return { n: doms.length, startMs, destroyMs, peakRssKiB, baseRssKiB };
}

async function shutdown(): Promise<void> {
  for (const d of await conn.listDomains({ state: 'active' }))
    await d.destroy({ graceMs: 2000 }).catch(() => {});
  await conn.close();
}

const reply = (obj: unknown) => process.stdout.write(`${JSON.stringify(obj)}\n`);
process.once('SIGTERM', () => void shutdown().finally(() => process.exit(0)));
// Ctrl-C reaches the whole process group; the runner ends this process (quit, or end of stdin).
process.on('SIGINT', () => {});
reply({ ready: true, pid: process.pid, rssKiB: vmRssKiB() });
for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const req = JSON.parse(line) as { cmd: string };
  if (req.cmd === 'quit') break;
  try {
    if (req.cmd === 'scale') reply(await round());
    else reply({ error: `unknown command ${req.cmd}` });
  } catch (err) {
    reply({ error: (err as Error).message });
  }
}
await shutdown();
reply({ bye: true });
process.exit(0);

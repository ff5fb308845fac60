/*
 * The floor of the scale test, in a process of its own (as virtkit's side runs in its own): `n`
 * raw QEMUs started at once the way a minimal program would (inherited listening socket, greeting,
 * qmp_capabilities, query-cpus-fast, cont), then SIGKILLed at once and reaped. Driven by
 * bench/scale.ts and bench/run.ts: one JSON command per stdin line, one JSON answer per stdout line.
 *
 * Commands: {"cmd": "scale", "paused"?: bool} -> ScaleResult; {"cmd": "quit"}.
 * Usage: node --import tsx bench/scale-raw.ts <n> <kvm|tcg>
 */

import { createInterface } from 'node:readline';
import { type Accel, msSince, removeTempDirs, resetHwm, vmHwmKiB, vmRssKiB } from './common.js';
import { RawContender } from './raw.js';
import { LoopDelay, liveHeapKiB, ThreadClock } from './scale-common.js';

const [nArg, accelArg] = process.argv.slice(2);
if (!nArg || (accelArg !== 'kvm' && accelArg !== 'tcg')) {
  process.stderr.write('usage: scale-raw.ts <n> <kvm|tcg>\n');
  process.exit(2);
}
const accel: Accel = accelArg;
const vms = Array.from({ length: Number(nArg) }, () => new RawContender('fd', accel));

async function round(paused: boolean) {
  const baseHeapKiB = liveHeapKiB();
  const baseRssKiB = vmRssKiB() ?? 0;
  resetHwm();
  const loop = new LoopDelay();
  const startClock = new ThreadClock();
  let t0 = process.hrtime.bigint();
  const started = await Promise.allSettled(vms.map((vm) => vm.start({ paused })));
  const startMs = msSince(t0);
  const startLoop = loop.stop();
  const startThread = startClock.stop();
  const runningRssKiB = vmRssKiB() ?? 0;
  const runningHeapKiB = liveHeapKiB();
  const destroyLoop = new LoopDelay();
  const destroyClock = new ThreadClock();
  t0 = process.hrtime.bigint();
  await Promise.all(
    vms.map((vm, i) => (started[i]?.status === 'fulfilled' ? vm.destroy() : Promise.resolve())),
  );
  const destroyMs = msSince(t0);
  const destroyThread = destroyClock.stop();
  const failed = started.filter((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed.length) throw new Error(`${failed.length} of ${vms.length} starts failed: ${failed[0]?.reason}`);
  return {
    n: vms.length,
    startMs,
    destroyMs,
    peakRssKiB: vmHwmKiB() ?? 0,
    baseRssKiB,
    runningRssKiB,
    baseHeapKiB,
    runningHeapKiB,
    startLoop,
    destroyLoop: destroyLoop.stop(),
    startThread,
    destroyThread,
  };
}

const reply = (obj: unknown) => process.stdout.write(`${JSON.stringify(obj)}\n`);
const killAll = () => Promise.all(vms.map((vm) => vm.killAll()));
process.once(
  'SIGTERM',
  () =>
    void killAll()
      .then(removeTempDirs)
      .finally(() => process.exit(0)),
);
process.on('SIGINT', () => {});
reply({ ready: true, pid: process.pid, rssKiB: vmRssKiB() });
for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const req = JSON.parse(line) as { cmd: string; paused?: boolean };
  if (req.cmd === 'quit') break;
  try {
    if (req.cmd === 'scale') reply(await round(req.paused === true));
    else reply({ error: `unknown command ${req.cmd}` });
  } catch (err) {
    reply({ error: (err as Error).message });
  }
}
await killAll();
removeTempDirs();
reply({ bye: true });
process.exit(0);

/*
 * virtkit's side of the scale test, in a process of its own (as libvirt's side runs in its own
 * python3 process), so the peak RSS measured is that of a process hosting the driver and nothing
 * else of the benchmark. Driven by bench/run.ts and bench/scale.ts: one JSON command per stdin
 * line, one JSON answer per stdout line.
 *
 * Commands: {"cmd": "scale", "paused"?: bool} -> ScaleResult
 *           {"cmd": "reconnect", "n": 100}     -> { n, connectMs, resumeMs, adopted }: n domains
 *             started paused, the connection closed (QEMU lives on), a new connect() timed, every
 *             adopted domain resumed (timed), all destroyed
 *           {"cmd": "list", "n": 1000, "running": k, "reps": 5} -> { n, running, ms: number[] }:
 *             listDomains() + getInfo() of every domain, n defined, k of them running (paused)
 *           {"cmd": "quit"}
 * Usage: node --import tsx bench/scale-virtkit.ts <root> <n> <kvm|tcg>
 */

import { rmSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { type Connection, connect, type Domain } from '../src/index.js';
import { type Accel, MARKER, msSince, resetHwm, vmHwmKiB, vmRssKiB } from './common.js';
import { LoopDelay, liveHeapKiB, ThreadClock } from './scale-common.js';
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
/** Other roots this process opened (reconnect, list), closed and removed at the end. */
const extra = new Map<string, Connection>();

async function round(paused: boolean) {
  const baseHeapKiB = liveHeapKiB();
  const baseRssKiB = vmRssKiB() ?? 0;
  resetHwm();
  const loop = new LoopDelay();
  const startClock = new ThreadClock();
  let t0 = process.hrtime.bigint();
  const started = await Promise.allSettled(doms.map((d) => d.start({ paused })));
  const startMs = msSince(t0);
  const startLoop = loop.stop();
  const startThread = startClock.stop();
  const runningRssKiB = vmRssKiB() ?? 0;
  const runningHeapKiB = liveHeapKiB();
  const destroyLoop = new LoopDelay();
  const destroyClock = new ThreadClock();
  t0 = process.hrtime.bigint();
  await Promise.all(
    doms.map((d, i) => (started[i]?.status === 'fulfilled' ? d.destroy() : Promise.resolve())),
  );
  const destroyMs = msSince(t0);
  const destroyThread = destroyClock.stop();
  const peakRssKiB = vmHwmKiB() ?? 0;
  const failed = started.filter((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed.length)
    throw new Error(`${failed.length} of ${doms.length} starts failed: ${failed[0]?.reason}`);
  return {
    n: doms.length,
    startMs,
    destroyMs,
    peakRssKiB,
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

/** A root of its own for one measure, with `n` domains defined (once, kept between rounds). */
async function side(label: string, n: number): Promise<{ conn: Connection; uri: string }> {
  const uri = `qemu:///embed?root=${root}-${label}`;
  let c = extra.get(uri);
  if (!c) {
    c = await connect(uri);
    extra.set(uri, c);
    const have = (await c.listDomains()).length;
    for (let i = have; i < n; i++) await c.defineDomain(benchDomain(`${MARKER}-vk${label}-${i}`, accel));
  }
  return { conn: c, uri };
}

async function reconnect(n: number) {
  const { conn: before, uri } = await side('rc', n);
  const all = await before.listDomains();
  await Promise.all(all.map((d) => d.start({ paused: true })));
  await before.close();
  const t0 = process.hrtime.bigint();
  const after = await connect(uri);
  const connectMs = msSince(t0);
  extra.set(uri, after);
  const active = await after.listDomains({ state: 'active' });
  const t1 = process.hrtime.bigint();
  await Promise.all(active.map((d) => d.resume()));
  const resumeMs = msSince(t1);
  await Promise.all(active.map((d) => d.destroy()));
  if (active.length !== n) throw new Error(`reconnect adopted ${active.length} of ${n} domains`);
  return { n, connectMs, resumeMs, adopted: active.length };
}

async function list(n: number, running: number, reps: number) {
  const { conn: c } = await side('list', n);
  const all = await c.listDomains();
  await Promise.all(all.slice(0, running).map((d) => d.start({ paused: true })));
  const ms: number[] = [];
  try {
    for (let r = 0; r < reps; r++) {
      const t0 = process.hrtime.bigint();
      const found = await c.listDomains();
      const infos = await Promise.all(found.map((d) => d.getInfo()));
      ms.push(msSince(t0));
      const active = infos.filter((i) => i.pid !== null).length;
      if (found.length !== n || active !== running)
        throw new Error(`list saw ${found.length} domains, ${active} running; expected ${n}, ${running}`);
    }
  } finally {
    await Promise.all(all.slice(0, running).map((d) => d.destroy().catch(() => undefined)));
  }
  return { n, running, ms };
}

async function shutdown(): Promise<void> {
  for (const c of [conn, ...extra.values()]) {
    if (c.closed) continue;
    for (const d of await c.listDomains({ state: 'active' }))
      await d.destroy({ graceMs: 2000 }).catch(() => {});
    await c.close();
  }
  for (const uri of extra.keys())
    rmSync(uri.slice(uri.indexOf('root=') + 5), { recursive: true, force: true });
}

const reply = (obj: unknown) => process.stdout.write(`${JSON.stringify(obj)}\n`);
process.once('SIGTERM', () => void shutdown().finally(() => process.exit(0)));
// Ctrl-C reaches the whole process group; the runner ends this process (quit, or end of stdin).
process.on('SIGINT', () => {});
reply({ ready: true, pid: process.pid, rssKiB: vmRssKiB() });
for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const req = JSON.parse(line) as {
    cmd: string;
    paused?: boolean;
    n?: number;
    running?: number;
    reps?: number;
  };
  if (req.cmd === 'quit') break;
  try {
    if (req.cmd === 'scale') reply(await round(req.paused === true));
    else if (req.cmd === 'reconnect') reply(await reconnect(req.n ?? 100));
    else if (req.cmd === 'list') reply(await list(req.n ?? 1000, req.running ?? 0, req.reps ?? 5));
    else reply({ error: `unknown command ${req.cmd}` });
  } catch (err) {
    reply({ error: (err as Error).message });
  }
}
await shutdown();
reply({ bye: true });
process.exit(0);

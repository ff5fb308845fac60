/*
 * Live migration, virtkit against raw QEMU driven by hand over QMP: the same binary, the same
 * running 256 MiB TCG guest (the test kernel counting on its console), the same URI type (TCP on
 * loopback), migrated back and forth between two places, alternating contender per iteration.
 * Total = from the first step (destination not yet started) until the destination runs and the
 * source QEMU has exited; downtime = what the source's QEMU reports (its own stop until the last
 * byte is sent, which the manager can only disturb by load); pause = what the guest sees, from the
 * source's STOP event to the destination's RESUME event (QEMU's timestamps, one host clock), which
 * includes how soon the manager resumes the destination. Total splits in three, on this process's
 * clock: setup (until the source's `migrate` command is sent: destination started and listening),
 * stream (until the source's STOP arrives) and tail (until the end: destination resumed, source gone).
 *
 * Both contenders wait for QEMU's MIGRATION events (no polling). Run: npm run bench:migration
 * Knobs (env): BENCH_MIG_N (10).
 */

import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Connection, Domain } from '../src/index.js';
import { QEMU, summarize } from './common.js';
import {
  closePlaces,
  cmdline,
  image,
  MEMORY_MIB,
  openPlaces,
  startGuest,
  watchQmp,
} from './migration-common.js';
import { connectPolling, RawQmp } from './raw-qmp.js';

const N = Number(process.env['BENCH_MIG_N'] ?? 10);
const dir = mkdtempSync(join(tmpdir(), 'vk-bench-mig-'));
const log = (msg: string) => process.stderr.write(`[bench:migration] ${msg}\n`);

interface Sample {
  totalMs: number;
  downtimeMs: number;
  pauseMs: number;
  setupMs: number;
  streamMs: number;
  tailMs: number;
}

type Stamp = { seconds: number; microseconds: number };
const ms = (t: Stamp): number => t.seconds * 1000 + t.microseconds / 1000;

/** The guest's pause of one migration: the last STOP seen, then the first RESUME after it. */
class PauseClock {
  #stop: number | undefined;
  #pause: number | undefined;
  /** When the migration's `migrate` command left and its STOP arrived, on this process's clock. */
  migrateSentAt = Number.NaN;
  stopSeenAt = Number.NaN;
  reset(): void {
    this.#stop = undefined;
    this.#pause = undefined;
    this.migrateSentAt = Number.NaN;
    this.stopSeenAt = Number.NaN;
  }
  /** setup, stream and tail of a migration that began at `t0` and ended at `t1`. */
  split(t0: number, t1: number): Pick<Sample, 'setupMs' | 'streamMs' | 'tailMs'> {
    return {
      setupMs: this.migrateSentAt - t0,
      streamMs: this.stopSeenAt - this.migrateSentAt,
      tailMs: t1 - this.stopSeenAt,
    };
  }
  see(event: string, at: Stamp): void {
    if (event === 'STOP') {
      this.#stop = ms(at);
      this.stopSeenAt = performance.now();
    } else if (event === 'RESUME' && this.#stop !== undefined && this.#pause === undefined)
      this.#pause = ms(at) - this.#stop;
  }
  get pauseMs(): number {
    return this.#pause ?? Number.NaN;
  }
}
const rawClock = new PauseClock();
const virtkitClock = new PauseClock();
watchQmp({
  event: (msg) => {
    if (msg.domain?.name === 'bench-mig') virtkitClock.see(msg.event, msg.timestamp);
  },
  sent: (m) => {
    if (m.command === 'migrate' && m.domain?.name === 'bench-mig')
      virtkitClock.migrateSentAt = performance.now();
  },
});

/** Raw QEMU: the argv a careful hand would write for the guest, plus `-incoming defer` on the destination. */
class RawSide {
  proc?: ChildProcess;
  exited?: Promise<void>;
  qmp?: RawQmp;
  constructor(readonly name: string) {}

  async launch(incoming: boolean): Promise<void> {
    const sock = join(dir, `${this.name}.qmp`);
    rmSync(sock, { force: true });
    const argv = [
      '-name',
      `guest=raw,debug-threads=on`,
      '-S',
      '-no-user-config',
      '-nodefaults',
      '-machine',
      'pc,usb=off,dump-guest-core=off,acpi=on',
      '-accel',
      'tcg',
      '-m',
      `${MEMORY_MIB}M`,
      '-smp',
      '1',
      '-kernel',
      image.kernel,
      '-initrd',
      image.initrd,
      '-append',
      cmdline,
      '-chardev',
      `file,id=s0,path=${join(dir, `${this.name}.console`)}`,
      '-device',
      'isa-serial,chardev=s0,id=serial0',
      '-qmp',
      `unix:${sock},server=on,wait=off`,
      '-display',
      'none',
      ...(incoming ? ['-incoming', 'defer'] : []),
    ];
    const proc = spawn(QEMU, argv, { stdio: 'ignore' });
    this.proc = proc;
    this.exited = new Promise((r) => proc.once('exit', () => r()));
    this.qmp = new RawQmp(await connectPolling(sock, 10_000));
    this.qmp.onEvent = (msg) => {
      rawClock.see(msg['event'] as string, msg['timestamp'] as Stamp);
      const status = (msg['data'] as { status?: string } | undefined)?.status;
      if (msg['event'] === 'MIGRATION' && status && ['completed', 'failed', 'cancelled'].includes(status))
        this.#ended?.(status);
    };
    await this.qmp.next();
    await this.qmp.command('qmp_capabilities');
  }

  #ended: ((status: string) => void) | undefined;
  /** Settles with this QEMU's next terminal MIGRATION event (the `events` capability is on). */
  migrationEnd(): Promise<string> {
    return new Promise((resolve) => {
      this.#ended = resolve;
    });
  }

  async quit(): Promise<void> {
    await this.qmp?.command('quit').catch(() => undefined);
    this.qmp?.close();
    await this.exited;
  }
}

async function rawMigrate(from: RawSide, to: RawSide): Promise<Sample> {
  rawClock.reset();
  const t0 = performance.now();
  await to.launch(true);
  const dst = to.qmp as RawQmp;
  const src = from.qmp as RawQmp;
  // Waiting for QEMU's MIGRATION events, as virtkit does, rather than polling query-migrate, which
  // takes QEMU's big lock while the migration thread works: the floor stays a floor under load.
  const events = { capabilities: [{ capability: 'events', state: true }] };
  await dst.command('migrate-set-capabilities', events);
  const dstEnd = to.migrationEnd();
  await dst.command('migrate-incoming', { uri: 'tcp:127.0.0.1:0' });
  const info = await dst.command<{ 'socket-address': Array<{ port: string }> }>('query-migrate');
  const port = info['socket-address'][0]?.port;
  await src.command('migrate-set-capabilities', events);
  const srcEnd = from.migrationEnd();
  rawClock.migrateSentAt = performance.now();
  await src.command('migrate', { uri: `tcp:127.0.0.1:${port}` });
  const status = await srcEnd;
  if (status !== 'completed') throw new Error(`raw migration ${status}`);
  const { downtime = 0 } = await src.command<{ downtime?: number }>('query-migrate');
  if ((await dstEnd) !== 'completed') throw new Error('raw incoming migration failed');
  await dst.command('cont');
  await from.quit();
  const t1 = performance.now();
  return { totalMs: t1 - t0, downtimeMs: downtime, pauseMs: rawClock.pauseMs, ...rawClock.split(t0, t1) };
}

async function virtkitMigrate(dom: Domain, to: Connection): Promise<{ sample: Sample; moved: Domain }> {
  let downtime = 0;
  virtkitClock.reset();
  const t0 = performance.now();
  const moved = await dom.migrateTo(to, {
    listen: 'tcp:127.0.0.1:0',
    onProgress: (p) => {
      if (p.downtimeMs !== undefined) downtime = p.downtimeMs;
    },
  });
  const t1 = performance.now();
  return {
    sample: {
      totalMs: t1 - t0,
      downtimeMs: downtime,
      pauseMs: virtkitClock.pauseMs,
      ...virtkitClock.split(t0, t1),
    },
    moved,
  };
}

async function main(): Promise<void> {
  const loadAtStart = loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
  const [a, b] = await openPlaces(dir);
  const raw = [new RawSide('raw-a'), new RawSide('raw-b')] as const;
  const results = { raw: [] as Sample[], virtkit: [] as Sample[] };
  let dom: Domain | undefined;
  try {
    dom = await startGuest(a);
    await raw[0].launch(false);
    await raw[0].qmp?.command('cont');
    // Let both guests boot to their counting loop before the first measurement.
    await new Promise((r) => setTimeout(r, 5000));
    const conns = [a, b];
    for (let i = 0; i < N; i++) {
      const r = await rawMigrate(raw[i % 2] as RawSide, raw[(i + 1) % 2] as RawSide);
      results.raw.push(r);
      const v = await virtkitMigrate(dom, conns[(i + 1) % 2] as Connection);
      dom = v.moved;
      results.virtkit.push(v.sample);
      const parts = (s: Sample) =>
        `${s.totalMs.toFixed(0)} ms = ${s.setupMs.toFixed(0)}+${s.streamMs.toFixed(0)}+${s.tailMs.toFixed(0)} (downtime ${s.downtimeMs}, pause ${s.pauseMs.toFixed(1)})`;
      log(`#${i + 1}: raw ${parts(r)}, virtkit ${parts(v.sample)}; load ${loadavg()[0]?.toFixed(2)}`);
    }
  } finally {
    for (const side of raw) await side.quit().catch(() => undefined);
    await closePlaces([a, b], dir);
  }
  const row = (what: string, pick: (s: Sample) => number) => {
    const raws = summarize(results.raw.map(pick));
    const vks = summarize(results.virtkit.map(pick));
    return `| ${what} | ${raws.median.toFixed(1)} | ${vks.median.toFixed(1)} | ${(vks.median / raws.median).toFixed(2)}× |`;
  };
  process.stdout.write(
    [
      `Live migration, ${MEMORY_MIB} MiB running TCG guest, TCP on loopback, ${N} alternating iterations (medians):`,
      '',
      '| | raw QEMU (ms) | virtkit (ms) | ratio |',
      '|---|---|---|---|',
      row('total', (s) => s.totalMs),
      row('· setup (until `migrate`)', (s) => s.setupMs),
      row('· stream (until STOP)', (s) => s.streamMs),
      row('· tail (until the end)', (s) => s.tailMs),
      row('downtime (QEMU)', (s) => s.downtimeMs),
      row('pause (STOP → RESUME)', (s) => s.pauseMs),
      '',
      `load average at the start: ${loadAtStart}, at the end: ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')} (${cpus().length} CPUs)`,
      '',
    ].join('\n'),
  );
}

await main();

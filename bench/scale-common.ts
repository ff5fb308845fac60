/*
 * Pieces both sides of the scale test share: the event-loop delay during a burst (what a QMP
 * greeting or an application's own timer waits for when the driver hogs the loop).
 */

import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { type IntervalHistogram, monitorEventLoopDelay } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { type Accel, MARKER, onCleanup, quitChild, tempDir } from './common.js';

/** Event-loop delay over a burst, in ms. */
export interface LoopStats {
  p50: number;
  p99: number;
  max: number;
}

/** Samples the event-loop delay (1 ms resolution) from construction until {@link stop}. */
export class LoopDelay {
  readonly #h: IntervalHistogram = monitorEventLoopDelay({ resolution: 1 });

  constructor() {
    this.#h.enable();
  }

  stop(): LoopStats {
    this.#h.disable();
    const ms = (ns: number) => ns / 1e6;
    return { p50: ms(this.#h.percentile(50)), p99: ms(this.#h.percentile(99)), max: ms(this.#h.max) };
  }
}

/**
 * The main thread's (the event loop's) CPU time and time spent runnable but waiting for a CPU,
 * from /proc/<pid>/task/<pid>/schedstat, in ms: what separates the driver's own work from the
 * scheduler's share in an event-loop delay.
 */
export interface ThreadTimes {
  cpuMs: number;
  waitMs: number;
  /** Times the thread got a CPU. */
  slices: number;
}

function threadTimesNow(): ThreadTimes {
  try {
    const [cpu, wait, slices] = readFileSync(`/proc/${process.pid}/task/${process.pid}/schedstat`, 'utf8')
      .trim()
      .split(' ')
      .map(Number);
    return {
      cpuMs: (cpu ?? Number.NaN) / 1e6,
      waitMs: (wait ?? Number.NaN) / 1e6,
      slices: slices ?? Number.NaN,
    };
  } catch {
    return { cpuMs: Number.NaN, waitMs: Number.NaN, slices: Number.NaN };
  }
}

/** Measures the main thread's {@link ThreadTimes} from construction until {@link stop}. */
export class ThreadClock {
  readonly #t0 = threadTimesNow();

  stop(): ThreadTimes {
    const t = threadTimesNow();
    return {
      cpuMs: t.cpuMs - this.#t0.cpuMs,
      waitMs: t.waitMs - this.#t0.waitMs,
      slices: t.slices - this.#t0.slices,
    };
  }
}

/** The JS heap and external memory after a full GC (needs --expose-gc; else without the GC), KiB. */
export function liveHeapKiB(): number {
  (globalThis as { gc?: () => void }).gc?.();
  const m = process.memoryUsage();
  return (m.heapUsed + m.external) / 1024;
}

/** One round of `n` domains started at once, then destroyed at once. */
export interface ScaleResult {
  n: number;
  startMs: number;
  destroyMs: number;
  /** Peak RSS of the driver process during the round (VmHWM, reset before the round). */
  peakRssKiB: number;
  /** RSS of the driver process right before the round. */
  baseRssKiB: number;
  /** RSS of the driver process with all `n` running (absent for libvirt). */
  runningRssKiB?: number;
  /** JS heap and external memory after a full GC, before the round and with all `n` running. */
  baseHeapKiB?: number;
  runningHeapKiB?: number;
  /** Event-loop delay of the driver process while starting, and while destroying. */
  startLoop?: LoopStats;
  destroyLoop?: LoopStats;
  /** The driver's main thread while starting and while destroying (absent from older checkouts). */
  startThread?: ThreadTimes;
  destroyThread?: ThreadTimes;
}

/**
 * How to run a bench child script: bundled by esbuild into bench/.build/ and run by plain node,
 * so the RSS measured is the driver's and not that of the tsx transpiler (about 40 MiB more);
 * through tsx when esbuild cannot be loaded.
 */
async function entry(script: string, benchDir = import.meta.dirname): Promise<string[]> {
  const source = join(benchDir, `${script}.ts`);
  const outfile = join(benchDir, '.build', `${script}.mjs`);
  try {
    const esbuild = await import('esbuild');
    await esbuild.build({
      entryPoints: [source],
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      packages: 'external',
      outfile,
      logLevel: 'warning',
    });
    onCleanup(() => rmSync(join(benchDir, '.build'), { recursive: true, force: true }));
    return [outfile];
  } catch {
    return ['--import', 'tsx', source];
  }
}

/**
 * One side of the scale test in a process of its own (bench/scale-virtkit.ts or
 * bench/scale-raw.ts), driven by JSON lines.
 */
export class ScaleHost {
  readonly #child: ChildProcess;
  readonly #lines: AsyncIterator<string>;
  readonly #exited: Promise<void>;
  /** How the child runs: `node (esbuild bundle)` or `node --import tsx`. */
  readonly runner: string;

  private constructor(child: ChildProcess, lines: AsyncIterator<string>, runner: string) {
    this.#child = child;
    this.#lines = lines;
    this.runner = runner;
    this.#exited = new Promise((r) => child.once('exit', () => r()));
  }

  /**
   * The virtkit side: a driver on a fresh root with `n` bench domains defined; `checkout`, another
   * checkout of virtkit (with node_modules) whose own bench/scale-virtkit.ts and sources run instead.
   */
  static virtkit(n: number, accel: Accel, checkout?: string): Promise<ScaleHost> {
    return ScaleHost.launch(
      'scale-virtkit',
      [tempDir('vk-scale'), String(n), accel],
      checkout ? join(checkout, 'bench') : undefined,
    );
  }

  /** The floor: `n` raw QEMUs driven by hand. */
  static raw(n: number, accel: Accel): Promise<ScaleHost> {
    return ScaleHost.launch('scale-raw', [String(n), accel]);
  }

  static async launch(script: string, args: string[], benchDir?: string): Promise<ScaleHost> {
    const argv = await entry(script, benchDir);
    // BENCH_SCALE_PROF=<dir>: a CPU profile of each side's process, for `node --cpu-prof` analysis.
    const prof = process.env['BENCH_SCALE_PROF'];
    const flags = prof
      ? [
          '--cpu-prof',
          `--cpu-prof-dir=${prof}`,
          `--cpu-prof-name=${benchDir ? 'other-' : ''}${script}-${Date.now()}.cpuprofile`,
        ]
      : [];
    const child = spawn(process.execPath, [...flags, ...argv, ...args], {
      cwd: join(benchDir ?? import.meta.dirname, '..'),
      env: { ...process.env, BENCH_MARKER: MARKER },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })[Symbol.asyncIterator]();
    const first = await lines.next();
    if (first.done || !(JSON.parse(first.value) as { ready?: boolean }).ready)
      throw new Error(`the ${script} process did not start`);
    const runner = argv[0] === '--import' ? 'node --import tsx (sources)' : 'plain node (esbuild bundle)';
    const host = new ScaleHost(child, lines, runner);
    onCleanup(() => host.quit());
    return host;
  }

  /** Sends one command and returns its answer; an `error` answer throws. */
  async request<T>(cmd: Record<string, unknown>): Promise<T> {
    this.#child.stdin?.write(`${JSON.stringify(cmd)}\n`);
    const line = await this.#lines.next();
    if (line.done) throw new Error('the scale process exited');
    const msg = JSON.parse(line.value) as T & { error?: string };
    if (msg.error) throw new Error(`scale ${String(cmd['cmd'])}: ${msg.error}`);
    return msg;
  }

  round(paused = false): Promise<ScaleResult> {
    return this.request<ScaleResult>({ cmd: 'scale', paused });
  }

  async quit(): Promise<void> {
    await quitChild(this.#child, this.#exited);
  }
}

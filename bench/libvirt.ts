/*
 * libvirt's embedded QEMU driver as a contender: a long-lived python3 process
 * (bench/libvirt_bench.py) holding one `qemu:///embed?root=…` connection, one JSON command per
 * line. The timings are taken inside that process around each libvirt call.
 */

import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import {
  type Accel,
  MARKER,
  MEMORY_KIB,
  onCleanup,
  PYTHON,
  QEMU,
  quitChild,
  registerCgroupParentIfNew,
  registerDirIfNew,
  tempDir,
  VCPUS,
} from './common.js';

export interface LibvirtScale {
  n: number;
  startMs: number;
  destroyMs: number;
  peakRssKiB: number;
  baseRssKiB: number;
}

export interface LibvirtCount {
  ms: number;
  qmp: number;
  commands: Record<string, number>;
}

export class LibvirtContender {
  readonly root: string;
  readonly pid: number;
  readonly version: string;
  readonly openMs: number;
  readonly #child: ChildProcess;
  readonly #lines: AsyncIterator<string>;
  #exited: Promise<void>;

  private constructor(
    child: ChildProcess,
    lines: AsyncIterator<string>,
    root: string,
    ready: { pid: number; libvirt: number; openMs: number },
  ) {
    this.#child = child;
    this.#lines = lines;
    this.root = root;
    this.pid = ready.pid;
    const v = ready.libvirt;
    this.version = `${Math.floor(v / 1_000_000)}.${Math.floor(v / 1000) % 1000}.${v % 1000}`;
    this.openMs = ready.openMs;
    this.#exited = new Promise((r) => child.once('exit', () => r()));
  }

  /** Starts the python driver process; with `countLog`, libvirt traces its monitor to that file. */
  static async launch(accel: Accel, options: { countLog?: boolean; label?: string; root?: string } = {}) {
    const root = options.root ?? tempDir(options.label ?? 'libvirt');
    // libvirt creates its default partition /machine in every hierarchy and leaves it behind.
    registerCgroupParentIfNew('machine');
    // …and its per-host state (a token, the host-device manager) in /run/libvirt, even embedded.
    registerDirIfNew('/run/libvirt');
    const env: NodeJS.ProcessEnv = { ...process.env, BENCH_MARKER: MARKER };
    const args = [
      join(import.meta.dirname, 'libvirt_bench.py'),
      '--root',
      root,
      '--accel',
      accel,
      '--prefix',
      `${MARKER}-${options.label ?? 'libvirt'}`,
      '--memory-kib',
      String(MEMORY_KIB),
      '--vcpus',
      String(VCPUS),
      '--emulator',
      QEMU,
    ];
    if (options.countLog) {
      const log = join(root, 'monitor-trace.log');
      env['LIBVIRT_LOG_FILTERS'] = '1:qemu.qemu_monitor';
      env['LIBVIRT_LOG_OUTPUTS'] = `1:file:${log}`;
      args.push('--count-log', log);
    }
    const child = spawn(PYTHON, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr?.on('data', (d) => {
      stderr = (stderr + String(d)).slice(-4000);
    });
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })[Symbol.asyncIterator]();
    const first = await lines.next();
    if (first.done) throw new Error(`libvirt contender did not start: ${stderr.trim()}`);
    const ready = JSON.parse(first.value) as {
      ready?: boolean;
      pid: number;
      libvirt: number;
      openMs: number;
    };
    if (!ready.ready) throw new Error(`libvirt contender: ${first.value}`);
    const c = new LibvirtContender(child, lines, root, ready);
    onCleanup(() => c.quit());
    return c;
  }

  async #call<T>(req: Record<string, unknown>): Promise<T> {
    this.#child.stdin?.write(`${JSON.stringify(req)}\n`);
    const line = await this.#lines.next();
    if (line.done) throw new Error(`libvirt contender exited during ${String(req['cmd'])}`);
    const msg = JSON.parse(line.value) as T & { error?: string };
    if (msg.error) throw new Error(`libvirt ${String(req['cmd'])}: ${msg.error}`);
    return msg;
  }

  async start(): Promise<number> {
    return (await this.#call<{ ms: number }>({ cmd: 'start' })).ms;
  }

  async destroy(): Promise<number> {
    return (await this.#call<{ ms: number }>({ cmd: 'destroy' })).ms;
  }

  /** One start with the monitor traced (only with `countLog`); the domain is left running. */
  count(): Promise<LibvirtCount> {
    return this.#call<LibvirtCount>({ cmd: 'count' });
  }

  scale(n: number): Promise<LibvirtScale> {
    return this.#call<LibvirtScale>({ cmd: 'scale', n });
  }

  /** Defines `n` more domains and starts them paused, all at once. */
  startPaused(n: number): Promise<{ ms: number }> {
    return this.#call<{ ms: number }>({ cmd: 'start-paused', n });
  }

  /** Ends the process at once, leaving its QEMUs running, as a killed manager would. */
  async leave(): Promise<void> {
    await this.#call<{ left: boolean }>({ cmd: 'leave' });
    await this.#exited;
  }

  /** Resumes, then destroys, the `n` running domains this process's open() adopted. */
  adopt(n: number): Promise<{ listMs: number; resumeMs: number; adopted: number }> {
    return this.#call({ cmd: 'adopt', n });
  }

  /** Destroys and undefines every domain, closes the connection, ends the process. */
  async quit(): Promise<void> {
    await quitChild(this.#child, this.#exited);
  }
}

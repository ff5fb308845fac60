/*
 * The floor: QEMU spawned by hand, the way a minimal program would drive it, with the same VM
 * shape and the same device set as virtkit's command line. Start = spawn -> QMP greeting ->
 * qmp_capabilities -> query-cpus-fast -> cont (reply received). Destroy = SIGKILL -> reaped
 * (SIGTERM with BENCH_RAW_DESTROY_SIGNAL=SIGTERM).
 *
 * QEMU runs in a session of its own, as virtkit's and libvirt's do: with the kernel's scheduler
 * autogroups, a session is also a scheduling group, so sharing the runner's session would give
 * many raw QEMUs together the CPU share of one process while virtkit's each get their own.
 *
 * Two ways to reach the monitor, both measured, the faster is the floor:
 *  - `path`:  `-qmp unix:PATH,server=on,wait=off`, the client polls for the socket every 1 ms;
 *  - `fd`:    the listening socket is created first and inherited (as virtkit does), the client
 *             connects before QEMU runs and waits in the backlog for the greeting.
 */

import { type ChildProcess, spawn } from 'node:child_process';
import * as net from 'node:net';
import { join } from 'node:path';
import { closeFd, listenUnixSocket } from '../src/util/libc.js';
import { type Accel, MARKER, MEMORY_KIB, msSince, onCleanup, QEMU, tempDir, VCPUS } from './common.js';
import { connectPolling, RawQmp } from './raw-qmp.js';

export type RawMode = 'path' | 'fd';

/**
 * The floor kills (SIGKILL). BENCH_RAW_DESTROY_SIGNAL=SIGTERM makes it end QEMU the way virtkit's
 * and libvirt's destroy do (QEMU's orderly exit), to tell that exit's cost from the driver's own.
 */
const DESTROY_SIGNAL: NodeJS.Signals =
  process.env['BENCH_RAW_DESTROY_SIGNAL'] === 'SIGTERM' ? 'SIGTERM' : 'SIGKILL';

/** The argv of virtkit's command line for the bench VM, minus the monitor. */
export function vmArgs(name: string, accel: Accel): string[] {
  return [
    '-name',
    `guest=${name},debug-threads=on`,
    '-S',
    '-no-user-config',
    '-nodefaults',
    '-msg',
    'timestamp=on',
    '-machine',
    'pc,usb=off,dump-guest-core=off,acpi=on',
    '-accel',
    accel,
    '-m',
    `size=${MEMORY_KIB}k`,
    '-smp',
    `${VCPUS},maxcpus=${VCPUS},sockets=${VCPUS},dies=1,cores=1,threads=1`,
    '-rtc',
    'base=utc',
    '-boot',
    'strict=on',
    '-display',
    'none',
  ];
}

interface Running {
  child: ChildProcess;
  exited: Promise<void>;
  qmp: RawQmp;
  vcpuTids: number[];
}

export class RawContender {
  readonly mode: RawMode;
  readonly accel: Accel;
  readonly #dir = tempDir('raw');
  #seq = 0;
  #running: Running | undefined;
  readonly #live = new Set<ChildProcess>();

  constructor(mode: RawMode, accel: Accel) {
    this.mode = mode;
    this.accel = accel;
    onCleanup(() => this.killAll());
  }

  /** Pid of the running VM. */
  get pid(): number {
    return this.#running?.child.pid as number;
  }

  /** vCPU thread ids of the running VM, by index. */
  get vcpuTids(): number[] {
    return this.#running?.vcpuTids ?? [];
  }

  /** Starts one VM (resumed unless `paused`); returns the wall time in ms. */
  async start(options: { paused?: boolean } = {}): Promise<number> {
    const name = `${MARKER}-raw-${this.mode}-${this.#seq++}`;
    const sock = join(this.#dir, `${this.#seq}.qmp`);
    const t0 = process.hrtime.bigint();
    let child: ChildProcess;
    let socket: Promise<net.Socket>;
    if (this.mode === 'fd') {
      const fd = listenUnixSocket(sock);
      const client = net.createConnection(sock);
      child = spawn(
        QEMU,
        [
          ...vmArgs(name, this.accel),
          '-chardev',
          'socket,id=charmonitor,fd=3,server=on,wait=off',
          '-mon',
          'chardev=charmonitor,id=monitor,mode=control',
        ],
        { stdio: ['ignore', 'ignore', 'ignore', fd], detached: true },
      );
      closeFd(fd);
      socket = Promise.resolve(client);
    } else {
      child = spawn(QEMU, [...vmArgs(name, this.accel), '-qmp', `unix:${sock},server=on,wait=off`], {
        stdio: 'ignore',
        detached: true,
      });
      socket = connectPolling(sock, 30_000);
    }
    this.#live.add(child);
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    void exited.then(() => this.#live.delete(child));
    const qmp = new RawQmp(await socket);
    await qmp.next(); // greeting
    await qmp.command('qmp_capabilities');
    const cpus = await qmp.command<Array<{ 'cpu-index': number; 'thread-id': number }>>('query-cpus-fast');
    if (!options.paused) await qmp.command('cont');
    const ms = msSince(t0);
    const vcpuTids = cpus.sort((a, b) => a['cpu-index'] - b['cpu-index']).map((c) => c['thread-id']);
    this.#running = { child, exited, qmp, vcpuTids };
    return ms;
  }

  /** SIGKILL and reap; returns the wall time in ms. */
  async destroy(): Promise<number> {
    const run = this.#running;
    if (!run) throw new Error('raw: nothing running');
    this.#running = undefined;
    const t0 = process.hrtime.bigint();
    run.child.kill(DESTROY_SIGNAL);
    await run.exited;
    const ms = msSince(t0);
    run.qmp.close();
    return ms;
  }

  async killAll(): Promise<void> {
    const waits: Array<Promise<unknown>> = [];
    for (const child of this.#live) {
      waits.push(new Promise((r) => child.once('exit', r)));
      child.kill('SIGKILL');
    }
    await Promise.race([Promise.all(waits), new Promise((r) => setTimeout(r, 5000))]);
  }
}

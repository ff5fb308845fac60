import { type ChildProcess, spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { ErrorCode, VirtError } from '../../errors.js';
import { readProcLimits } from '../../util/proc.js';

/*
 * Raising another user's RLIMIT_MEMLOCK without CAP_SYS_RESOURCE. prlimit(2) on another process
 * needs CAP_SYS_RESOURCE or a caller whose *real* uid and gid equal the target's real, effective
 * and saved ids; containers often drop the capability even for root. So the call has to be made
 * with the target owner's real ids. The options, measured one request at a time (median of 200)
 * on the 2-core test machine while other test suites loaded it (load average ~12):
 *
 * - a prlimit(1) child per request (what the helper did): 188 ms, and one process per request in
 *   flight — 10 connections x 64 requests reached 639 children (131 in our attack test, with
 *   every request timing out);
 * - a raw syscall(SYS_setresuid/SYS_setresgid) around prlimit on one thread (credentials are per
 *   thread in the kernel; only glibc's wrappers broadcast them to every thread): 14 µs, no process
 *   at all. Rejected: while the thread's real uid is the peer's, the kernel's kill permission check
 *   (kill_ok_by_cred: sender's uid == target's real uid) lets that peer SIGKILL the thread — and
 *   with it the whole helper and every other tenant's service. A peer that loops kill(2) while
 *   flooding memlock requests would hit that window;
 * - a long-lived worker process per owner uid:gid, reused across requests (this): 0.55 ms per
 *   request over a pipe, one start (~50 ms) per owner. It runs with nothing but the owner's ids, so
 *   the owner can kill or ptrace only its own worker and gain nothing; the number of workers is
 *   bounded (`limits.memlockWorkers`), an idle one exits after a while, and what a worker reports
 *   is re-checked in /proc/<pid>/limits, since its owner could have taken it over.
 */

/** The worker: reads `id pid soft hard` lines (`u` = RLIM_INFINITY), answers `id errno` lines. */
const WORKER_SOURCE = `'use strict';
const koffi = require(process.argv[1]);
const prlimit = koffi.load('libc.so.6').func('int prlimit(int, int, void *, void *)');
const U = 18446744073709551615n;
let buf = '';
process.stdin.setEncoding('latin1');
process.stdin.on('data', (d) => {
  buf += d;
  if (buf.length > 65536) process.exit(2);
  let nl;
  while ((nl = buf.indexOf('\\n')) >= 0) {
    const [id, pid, soft, hard] = buf.slice(0, nl).split(' ');
    buf = buf.slice(nl + 1);
    const lim = Buffer.alloc(16);
    lim.writeBigUInt64LE(soft === 'u' ? U : BigInt(soft), 0);
    lim.writeBigUInt64LE(hard === 'u' ? U : BigInt(hard), 8);
    const rc = prlimit(Number(pid), 8, lim, null);
    process.stdout.write(id + ' ' + (rc === 0 ? 0 : koffi.errno()) + '\\n');
  }
});
process.stdin.on('end', () => process.exit(0));
`;

/** How long an unused worker stays. */
const IDLE_MS = 15_000;
/** An answer line longer than this means the worker is not the worker any more. */
const MAX_LINE = 64;

interface Pending {
  resolve(): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

interface Worker {
  readonly key: string;
  readonly uid: number;
  readonly child: ChildProcess;
  readonly pending: Map<number, Pending>;
  buf: string;
  idle: NodeJS.Timeout | undefined;
  lastUsed: number;
}

let koffiPath: string | undefined;

function koffiEntry(): string {
  koffiPath ??= createRequire(import.meta.url).resolve('koffi');
  return koffiPath;
}

/**
 * Long-lived, bounded worker processes, one per target owner (uid:gid), that set RLIMIT_MEMLOCK
 * as that owner. See the comment at the top of this file for why processes and not threads.
 */
export class OwnerWorkers {
  readonly #max: number;
  readonly #workers = new Map<string, Worker>();
  readonly #waiters: Array<() => void> = [];
  #nextId = 1;
  #closed = false;

  constructor(max: number) {
    this.#max = max;
  }

  /** Worker processes running now. */
  get size(): number {
    return this.#workers.size;
  }

  /**
   * Sets soft and hard RLIMIT_MEMLOCK of `pid` to `value` as `owner`, then checks /proc.
   *
   * @throws Error with the errno (e.g. `EPERM` when the hard limit is below `value`), or a
   *   VirtError `OPERATION_TIMEOUT` past the deadline
   */
  async setMemlock(
    owner: { uid: number; gid: number },
    pid: number,
    value: bigint | 'unlimited',
    deadline: number,
  ): Promise<void> {
    const worker = await this.#acquire(owner, deadline);
    const id = this.#nextId++;
    const v = value === 'unlimited' ? 'u' : value.toString();
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => {
          worker.pending.delete(id);
          reject(
            new VirtError(
              ErrorCode.OPERATION_TIMEOUT,
              `the memlock worker of uid ${owner.uid} did not answer`,
            ),
          );
          this.#settled(worker);
        },
        Math.max(1, deadline - Date.now()),
      );
      worker.pending.set(id, { resolve, reject, timer });
      worker.child.stdin?.write(`${id} ${pid} ${v} ${v}\n`);
    });
    // The worker runs as the owner, who may have taken it over: believe /proc, not its answer.
    const now = readProcLimits(pid).get('Max locked memory');
    if (now?.soft !== value || now?.hard !== value) {
      throw new Error(
        `the limit reads ${String(now?.soft)}:${String(now?.hard)} afterwards, not ${String(value)}`,
      );
    }
  }

  /** Ends every worker. */
  close(): void {
    this.#closed = true;
    for (const w of [...this.#workers.values()]) this.#end(w, new Error('the helper is closing'));
    for (const wake of this.#waiters.splice(0)) wake();
  }

  async #acquire(owner: { uid: number; gid: number }, deadline: number): Promise<Worker> {
    const key = `${owner.uid}:${owner.gid}`;
    for (;;) {
      if (this.#closed) throw new Error('the helper is closing');
      const existing = this.#workers.get(key);
      if (existing) {
        clearTimeout(existing.idle);
        existing.idle = undefined;
        existing.lastUsed = Date.now();
        return existing;
      }
      if (this.#workers.size >= this.#max) {
        const idle = [...this.#workers.values()]
          .filter((w) => w.pending.size === 0)
          .sort((a, b) => a.lastUsed - b.lastUsed)[0];
        if (idle) this.#end(idle, undefined);
      }
      if (this.#workers.size < this.#max) return this.#spawn(key, owner);
      // Every worker is busy for other owners: wait for one to settle (bounded by the work queue).
      if (Date.now() >= deadline) {
        throw new VirtError(ErrorCode.OPERATION_TIMEOUT, 'no memlock worker became free before the deadline');
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  #spawn(key: string, owner: { uid: number; gid: number }): Worker {
    const child = spawn(process.execPath, ['-e', WORKER_SOURCE, koffiEntry()], {
      uid: owner.uid,
      gid: owner.gid,
      env: {},
      cwd: '/',
      stdio: ['pipe', 'pipe', 'ignore'],
    });
    const worker: Worker = {
      key,
      uid: owner.uid,
      child,
      pending: new Map(),
      buf: '',
      idle: undefined,
      lastUsed: Date.now(),
    };
    this.#workers.set(key, worker);
    child.stdin?.on('error', () => {});
    child.on('error', (err) => this.#end(worker, err));
    child.on('exit', (code, signal) =>
      this.#end(worker, new Error(`the worker exited (${signal ?? code}) before answering`)),
    );
    child.stdout?.setEncoding('latin1');
    child.stdout?.on('data', (d: string) => this.#answer(worker, d));
    return worker;
  }

  #answer(worker: Worker, data: string): void {
    worker.buf += data;
    for (let nl = worker.buf.indexOf('\n'); nl >= 0; nl = worker.buf.indexOf('\n')) {
      const line = worker.buf.slice(0, nl);
      worker.buf = worker.buf.slice(nl + 1);
      const m = /^(\d{1,15}) (\d{1,4})$/.exec(line);
      if (!m) {
        this.#end(worker, new Error('the worker answered nonsense'));
        return;
      }
      const p = worker.pending.get(Number(m[1]));
      if (!p) continue;
      worker.pending.delete(Number(m[1]));
      clearTimeout(p.timer);
      const errno = Number(m[2]);
      if (errno === 0) p.resolve();
      else p.reject(new Error(`prlimit: errno ${errno}${errno === 1 ? ' (EPERM)' : ''}`));
    }
    if (worker.buf.length > MAX_LINE) this.#end(worker, new Error('the worker answered nonsense'));
    else this.#settled(worker);
  }

  /** After an answer: an idle worker wakes a waiter and starts its idle timer. */
  #settled(worker: Worker): void {
    if (worker.pending.size > 0 || this.#workers.get(worker.key) !== worker) return;
    clearTimeout(worker.idle);
    worker.idle = setTimeout(() => this.#end(worker, undefined), IDLE_MS);
    worker.idle.unref();
    this.#waiters.shift()?.();
  }

  #end(worker: Worker, err: Error | undefined): void {
    if (this.#workers.get(worker.key) === worker) this.#workers.delete(worker.key);
    clearTimeout(worker.idle);
    for (const p of worker.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err ?? new Error('the worker was stopped'));
    }
    worker.pending.clear();
    if (worker.child.exitCode === null && worker.child.signalCode === null) {
      worker.child.stdin?.end();
      worker.child.kill('SIGKILL');
    }
    this.#waiters.shift()?.();
  }
}

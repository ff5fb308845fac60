import { ErrorCode, VirtError } from '../errors.js';
import type { DomainIdentity } from './operations.js';
import { type InternalSeam, seamOf } from './seam.js';

/**
 * The first synthetic pid of the test driver. A running test domain with id N has the pid
 * `SIMULATED_PID_BASE + N * 1000`, above Linux's largest possible pid (2^22), so a handler that
 * calls the real `prlimit`/`sched_setscheduler` on it gets ESRCH instead of touching a real process.
 * Its threads: the pid itself and pid+1 (emulator threads), pid+10+n for vCPU n, pid+500+k for
 * iothread k.
 *
 * @public
 */
export const SIMULATED_PID_BASE = 5_000_000;

/**
 * A thread of a simulated QEMU process, with the state the test driver keeps for it.
 *
 * @public
 */
export interface SimulatedThread {
  /** The synthetic thread id. */
  readonly tid: number;
  /** What the thread does, as QMP would report it. */
  readonly role: 'vcpu' | 'iothread' | 'emulator';
  /** vCPU or iothread index; 0 for emulator threads. */
  readonly index: number;
  /** The scheduling policy (`other` until set). */
  readonly policy: 'fifo' | 'rr' | 'batch' | 'idle' | 'other';
  /** The static priority (0 until set). */
  readonly priority: number;
  /** The cgroup the thread is in (`/` until placed). */
  readonly cgroup: string;
}

/**
 * A simulated QEMU process of the test driver, as a handler would see it in `/proc`.
 *
 * @public
 */
export interface SimulatedProcess {
  /** The synthetic pid. */
  readonly pid: number;
  /** The domain the process runs. */
  readonly domain: DomainIdentity;
  /** RLIMIT_MEMLOCK; every simulated process starts with 8 MiB soft and hard (Debian's default). */
  readonly memlock: { readonly soft: bigint | 'unlimited'; readonly hard: bigint | 'unlimited' };
  /** Its threads: emulator, vCPU and iothread threads with their state. */
  readonly threads: readonly SimulatedThread[];
}

/**
 * The simulated host of a `test:///default` connection: where handlers under test produce their
 * effects (instead of `prlimit`, `sched_setscheduler` and cgroup files), and what the test driver's
 * post-checks read back. A handler that claims success without calling these fails the operation
 * with `POSTCONDITION_FAILED`, exactly as a lying handler does against real `/proc`. Calls on an
 * unknown pid or tid throw an Error with code `ESRCH`.
 *
 * @public
 */
export interface SimulatedHost {
  /** The simulated process of a pid, while its domain is starting or running. */
  process(pid: number): SimulatedProcess | undefined;
  /** `prlimit(pid, RLIMIT_MEMLOCK, …)`. */
  setMemLock(pid: number, limit: { soft: bigint | 'unlimited'; hard: bigint | 'unlimited' }): void;
  /** `sched_setscheduler(tid, policy, { priority })`. */
  setScheduler(tid: number, policy: 'fifo' | 'rr' | 'batch' | 'idle' | 'other', priority: number): void;
  /** Moves one thread into a cgroup (a path starting with `/`). */
  placeThread(tid: number, cgroup: string): void;
  /**
   * The driver's record of a domain's privileged operations, oldest first: one line per
   * invocation (`internal: <op> phase=<phase> via=<handler source|built-in> <ms>ms <outcome>`), as
   * the embedded driver writes to the domain's log.
   */
  log(uuid: string): readonly string[];
}

/** The seam of the test driver, which carries its simulated host. */
export interface SimulationSeam extends InternalSeam {
  readonly simulation: SimulatedHost;
}

/**
 * The simulated host of a `test:///default` connection; `OPERATION_INVALID` for any other.
 *
 * @public
 */
export function simulatedHost(connection: object): SimulatedHost {
  const seam = seamOf(connection) as Partial<SimulationSeam>;
  if (seam.driverKind !== 'test' || !seam.simulation) {
    throw new VirtError(
      ErrorCode.OPERATION_INVALID,
      'simulatedHost needs a test:///default connection; the embedded driver acts on real processes',
    );
  }
  return seam.simulation;
}

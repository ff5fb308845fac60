import { existsSync } from 'node:fs';
import { ErrorCode, VirtError } from '../errors.js';
import { readProcStartTime } from '../util/proc.js';

/*
 * Thread ids come from QMP, i.e. from QEMU, which is untrusted once guest code has run (and a
 * hostile emulator binary is untrusted from the start). Nothing privileged may be done to a tid,
 * and no handler may see it, before it is verified here to be a thread of the very QEMU process
 * the driver launched. Start-up, hotplug and migration all go through these functions.
 */

/** The process a set of thread ids must belong to: its pid and the start time recorded at launch. */
export interface ThreadOwner {
  readonly pid: number;
  /** The start time read when the driver launched or adopted the process (a reused pid differs). */
  readonly startTime?: bigint;
}

/** A thread id as QEMU reported it, with what QEMU says it is. */
export interface ReportedThread {
  readonly tid: number;
  readonly role: string;
  readonly index: number;
}

function refuse(message: string, details: Record<string, unknown>): VirtError {
  return new VirtError(
    ErrorCode.OPERATION_FAILED,
    `${message}; the emulator is misbehaving or compromised, so the driver refuses to act on its thread ids`,
    details,
  );
}

/** Throws unless `owner.pid` is still the process it was (same start time). */
export function verifyOwner(owner: ThreadOwner): void {
  const now = readProcStartTime(owner.pid);
  if (now === undefined) throw refuse(`QEMU pid ${owner.pid} no longer exists`, { pid: owner.pid });
  if (owner.startTime !== undefined && now !== owner.startTime) {
    throw refuse(`pid ${owner.pid} is no longer the QEMU process the driver launched (start time changed)`, {
      pid: owner.pid,
    });
  }
}

/** True when `tid` is a thread of `pid` right now (`/proc/<pid>/task/<tid>` exists). */
export function isThreadOf(pid: number, tid: number): boolean {
  return Number.isSafeInteger(tid) && tid > 0 && existsSync(`/proc/${pid}/task/${tid}`);
}

/**
 * Verifies that every reported thread is a thread of the owner process, and that the owner is
 * still the process the driver launched; throws `OPERATION_FAILED` naming the first offender.
 * Call it immediately before the privileged use (or handler call), and again after where it
 * matters: a tid that exits in between could be reused by another process.
 */
export function verifyThreads(
  owner: ThreadOwner,
  threads: readonly ReportedThread[],
  /**
   * The owner's thread ids as just listed from `/proc/<pid>/task`, when the caller read them anyway:
   * one reading of the directory instead of one look-up per thread. Taken only between the two
   * owner checks of this call, so a list from another process (a reused pid) is refused too.
   */
  tasks?: ReadonlySet<number>,
): void {
  verifyOwner(owner);
  const seen = new Set<number>();
  const isThread = tasks
    ? (tid: number) => Number.isSafeInteger(tid) && tasks.has(tid)
    : (tid: number) => isThreadOf(owner.pid, tid);
  for (const t of threads) {
    if (!isThread(t.tid)) {
      throw refuse(
        `QEMU reported thread ${t.tid} as ${t.role} ${t.index}, but it is not a thread of pid ${owner.pid}`,
        {
          pid: owner.pid,
          tid: t.tid,
          role: t.role,
          index: t.index,
        },
      );
    }
    if (t.role !== 'emulator' && seen.has(t.tid)) {
      throw refuse(`QEMU reported thread ${t.tid} twice`, { pid: owner.pid, tid: t.tid });
    }
    seen.add(t.tid);
  }
  // Checked last as well: the owner could have been replaced while the tids were looked at.
  verifyOwner(owner);
}

/**
 * Checks a reported set of vCPUs or iothreads against the definition before anything is stored:
 * exactly `expected` entries, each index in `[first, first + limit)` and none twice. A lying count
 * (200,000 vCPUs for a 1-vCPU domain) is refused here, never written to the status file.
 */
export function verifyThreadCount(
  role: 'vcpu' | 'iothread',
  reported: readonly { readonly index: number; readonly tid: number }[],
  expected: number,
  indices: { readonly first: number; readonly limit: number },
): void {
  if (reported.length !== expected) {
    throw refuse(`QEMU reported ${reported.length} ${role} thread(s), the definition has ${expected}`, {
      role,
      reported: reported.length,
      expected,
    });
  }
  const seen = new Set<number>();
  for (const t of reported) {
    const { index } = t;
    if (!Number.isInteger(index) || index < indices.first || index >= indices.first + indices.limit) {
      throw refuse(`QEMU reported ${role} index ${String(index)}, outside the definition`, { role, index });
    }
    if (seen.has(index)) throw refuse(`QEMU reported ${role} ${index} twice`, { role, index });
    seen.add(index);
    if (!Number.isSafeInteger(t.tid) || t.tid <= 0)
      throw refuse(`QEMU reported ${role} ${index} with thread id ${String(t.tid)}`, { role, index });
  }
}

import { spawn } from 'node:child_process';
import { closeSync, writeSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import type { Writable } from 'node:stream';
import { ErrorCode, VirtError } from '../../errors.js';
import { CONTROL_FD, STUB_ARGV0, STUB_SCRIPT } from '../../privileged/stub.js';
import { canSpawnInSession, pipeCloexec, spawnInSession } from '../../util/spawn-session.js';
import { leaderGone } from './emulator-kill.js';
import type { ExitInfo } from './exit-info.js';

/** Re-exported for the start-up code that lays out the child's descriptors. */
export { FIRST_CHILD_FD } from '../../privileged/stub.js';
export type { ExitInfo } from './exit-info.js';

/** A spawned stub waiting for its go-ahead. */
export interface Launch {
  readonly pid: number;
  /** Resolves when the process has exited and been reaped (unless {@link Launch.forget} came first). */
  readonly exited: Promise<ExitInfo>;
  /** Stops reporting the exit (the driver lets go of the domain); the process is still reaped. */
  forget(): void;
  /** Lets the stub exec QEMU. */
  proceed(): void;
  /** Makes the stub exit without running QEMU (a no-op once it has proceeded). */
  abandon(): void;
}

/**
 * How many QEMUs may be between the go-ahead and their QMP greeting at once, across every driver
 * of this process. Initialising takes tens of ms of CPU each, and each QEMU runs in a session of
 * its own, which the kernel's scheduler autogroups treat as a group of its own: a hundred
 * initialising at once leave the driver's process one share in a hundred, and every QMP reply
 * of the domains already up waits for them (event-loop delay p99 near a second at 128). Initialising
 * is not only CPU, though: fewer than about 32 at a time made bursts of 32 slower
 * (`npm run bench:scale`), so the bound only ever holds back the largest bursts.
 */
export const EXEC_SLOTS = Math.max(32, 8 * availableParallelism());
let execActive = 0;
const execWaiting: Array<() => void> = [];

/**
 * Waits for a slot to let a stub exec QEMU; resolves with its release (idempotent). Resolves at
 * once, with no slot taken, when `gone` settles first (the stub was killed while waiting).
 */
export function execSlot(gone: Promise<unknown>): Promise<() => void> {
  return new Promise((resolve) => {
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      const next = execWaiting.shift();
      if (next) next();
      else execActive--;
    };
    if (execActive < EXEC_SLOTS) {
      execActive++;
      resolve(release);
      return;
    }
    const granted = () => resolve(release);
    execWaiting.push(granted);
    void gone.then(() => {
      const i = execWaiting.indexOf(granted);
      if (i === -1) return;
      execWaiting.splice(i, 1);
      resolve(() => undefined);
    });
  });
}

/**
 * Spawns the stub in its own session, with stdout/stderr on the log, its control pipe at 3 and
 * `fds` at 4, 5, … Through `posix_spawn` where the host allows (no fork of this process, see
 * util/spawn-session.ts), else through `child_process.spawn`.
 */
export function launchStub(
  emulator: string,
  argv: readonly string[],
  env: Readonly<Record<string, string>>,
  logFd: number,
  fds: readonly number[],
): Launch {
  const args = ['-c', STUB_SCRIPT, STUB_ARGV0, emulator, ...argv];
  if (!canSpawnInSession()) return launchStubForked(args, env, logFd, fds);
  const [control, go] = pipeCloexec();
  let spawned: ReturnType<typeof spawnInSession>;
  try {
    spawned = spawnInSession('/bin/sh', ['/bin/sh', ...args], env, [null, logFd, logFd, control, ...fds]);
  } catch (err) {
    closeSync(go);
    throw new VirtError(ErrorCode.SYSTEM_ERROR, 'cannot spawn /bin/sh to start QEMU', {}, { cause: err });
  } finally {
    closeSync(control);
  }
  let open = true;
  const finish = (line: string) => {
    if (!open) return;
    open = false;
    try {
      // Three bytes into an empty pipe: never blocks. EPIPE: the stub is gone, which its exit reports.
      if (line) writeSync(go, line);
    } catch {
      // the stub was killed around its go-ahead
    } finally {
      closeSync(go);
    }
  };
  return {
    pid: spawned.pid,
    exited: spawned.exited,
    forget: spawned.forget,
    proceed: () => finish('go\n'),
    abandon: () => finish(''),
  };
}

/** {@link launchStub} through `child_process.spawn`: a fork of this process. */
function launchStubForked(
  args: readonly string[],
  env: Readonly<Record<string, string>>,
  logFd: number,
  fds: readonly number[],
): Launch {
  const child = spawn('/bin/sh', args, {
    detached: true,
    env,
    stdio: ['ignore', logFd, logFd, 'pipe', ...fds],
  });
  const exited = new Promise<ExitInfo>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', () => resolve({ code: null, signal: null }));
  });
  if (child.pid === undefined) {
    throw new VirtError(ErrorCode.SYSTEM_ERROR, 'cannot spawn /bin/sh to start QEMU');
  }
  const control = child.stdio[CONTROL_FD] as Writable;
  // The VM outlives this process: nothing here may keep Node's event loop alive.
  child.unref();
  (control as unknown as { unref?: () => void }).unref?.();
  // A stub killed around its go-ahead resets the pipe (ECONNRESET); its exit is what the start
  // sequence watches, and an unhandled stream error would crash the whole host process.
  control.on('error', () => undefined);
  let settled = false;
  const finish = (line: string) => {
    if (settled) return;
    settled = true;
    control.end(line);
  };
  return {
    pid: child.pid,
    exited,
    forget: () => child.removeAllListeners('exit'),
    proceed: () => finish('go\n'),
    abandon: () => finish(''),
  };
}

/**
 * Resolves when an adopted process (one this driver did not spawn, so cannot reap) has gone: not
 * merely a zombie, but with every thread finished, since exiting threads still hold their cgroups.
 * Only called once its monitor has disconnected, so the wait is short; the back-off bounds it.
 */
export async function waitAdoptedExit(pid: number, startTime: bigint): Promise<ExitInfo> {
  let delay = 1;
  while (!leaderGone({ pid, startTime })) {
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 100);
  }
  return { code: null, signal: null };
}

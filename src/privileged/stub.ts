/**
 * The stub the driver spawns and the helper recognises (virtkit-privd authorises a target that is
 * still the stub by its argv): one definition for both, so they cannot drift apart.
 */

import { readFileSync } from 'node:fs';
import { readProcState } from '../util/proc.js';

/** The fd the stub reads its go-ahead from; it closes it before exec, so QEMU never sees it. */
export const CONTROL_FD = 3;
/** The first fd free for QEMU: the monitor socket, then TAP and storage descriptors. */
export const FIRST_CHILD_FD = 4;

/*
 * The stub is the process QEMU will become. It blocks on one line from the control pipe; on "go"
 * it execs QEMU in place (same pid), on anything else (the driver closed the pipe, or died) it
 * exits without ever running QEMU. This gives the driver a window in which the pid is final but
 * QEMU has not run: the pre-exec phase, where resource limits are raised.
 */
export const STUB_SCRIPT = `IFS= read -r go <&${CONTROL_FD}; [ "$go" = go ] || exit 125; exec ${CONTROL_FD}<&-; exec "$@"`;
/** argv[0] of the stub: with the script, how a privileged helper recognises the stub of a driver. */
export const STUB_ARGV0 = 'virtkit-stub';

/**
 * Resolves once the process's command line is in place, normally the stub's. Spawning returns
 * once the exec has passed its point of no return, which is before the new program's arguments
 * are in place: for a moment `/proc/<pid>/cmdline` is empty. virtkit-privd recognises the stub by
 * its command line (it may raise the limits of the driver's stub only), so the delegate's
 * `process.setMaxMemLock` waits for it; a handler in the driver's process, or the built-in, does
 * not need to. Resolves at once for any other command line (the helper judges that process), if
 * the process is gone or a zombie (its exit is reported elsewhere), and after `timeoutMs` in any case.
 */
export async function stubExecuted(pid: number, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (let delay = 1; ; delay = Math.min(delay * 2, 50)) {
    let argv: string;
    try {
      argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      return;
    }
    if (argv !== '' || Date.now() >= until) return;
    const state = readProcState(pid);
    if (state === undefined || state === 'Z' || state === 'X') return;
    await new Promise((r) => setTimeout(r, delay));
  }
}

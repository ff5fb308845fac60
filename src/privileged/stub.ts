/**
 * The stub the driver spawns and the helper recognises (virtkit-privd authorises a target that is
 * still the stub by its argv): one definition for both, so they cannot drift apart.
 */

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

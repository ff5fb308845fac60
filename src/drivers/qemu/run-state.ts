import type { DomainStatus, PausedReason } from '../../stable/events.js';

/**
 * QEMU's run states (`query-status`, qapi/run-state.json) read as libvirt reads them
 * (`qemuMonitorVMStatusToPausedReason`): why a QEMU whose vCPUs do not run is paused.
 */
const PAUSED_BY_RUN_STATE: Readonly<Record<string, PausedReason>> = {
  paused: 'user',
  // A start still under way is settled by its job's rule; a QEMU left in prelaunch by a finished
  // start was started paused by the user (the reason itself is not kept in the status file).
  prelaunch: 'user',
  inmigrate: 'migration',
  postmigrate: 'migration',
  'finish-migrate': 'migration',
  'io-error': 'ioerror',
  'save-vm': 'save',
  shutdown: 'shutting-down',
  watchdog: 'watchdog',
  'guest-panicked': 'crashed',
};

/** The state of a QEMU in run state `status` (untrusted: an unknown value reads as `unknown`). */
export function statusOfRunState(status: string, running: boolean): DomainStatus {
  if (running || status === 'running') return { state: 'running', reason: 'unpaused' };
  return {
    state: 'paused',
    reason: Object.hasOwn(PAUSED_BY_RUN_STATE, status)
      ? (PAUSED_BY_RUN_STATE[status] as PausedReason)
      : 'unknown',
  };
}

/**
 * Why the vCPUs will stop, from an event QEMU sends just before its `STOP` (QEMU emits
 * `BLOCK_IO_ERROR`, `GUEST_PANICKED` and `WATCHDOG` before it stops the VM), or undefined when the
 * event does not pause the guest.
 */
export function pauseCauseOfEvent(event: string, action: unknown): PausedReason | undefined {
  if (event === 'BLOCK_IO_ERROR' && action === 'stop') return 'ioerror';
  if (event === 'GUEST_PANICKED' && action === 'pause') return 'crashed';
  if (event === 'WATCHDOG' && action === 'pause') return 'watchdog';
  return undefined;
}

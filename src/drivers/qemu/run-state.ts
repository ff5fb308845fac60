import { z } from 'zod';
import type { DomainStatus, PausedReason, RunningReason } from '../../stable/events.js';

/**
 * QEMU's run states (`query-status`, qapi/run-state.json) read as libvirt reads them
 * (`qemuMonitorVMStatusToPausedReason`): why a QEMU whose vCPUs do not run is paused.
 */
const PAUSED_BY_RUN_STATE: Readonly<Record<string, PausedReason>> = {
  paused: 'user',
  // A start still under way is settled by its job's rule; a QEMU left in prelaunch by a finished
  // start was started paused by the user (the status file keeps that reason too).
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
  if (event === 'GUEST_PANICKED' && (action === 'pause' || action === 'poweroff')) return 'crashed';
  if (event === 'WATCHDOG' && action === 'pause') return 'watchdog';
  return undefined;
}

const RUNNING_REASONS = [
  'unknown',
  'booted',
  'migrated',
  'restored',
  'from-snapshot',
  'unpaused',
  'migration-cancelled',
  'save-cancelled',
  'wakeup',
  'crashed',
  'postcopy',
  'postcopy-failed',
] as const satisfies readonly RunningReason[];

const PAUSED_REASONS = [
  'unknown',
  'user',
  'migration',
  'migrated',
  'save',
  'dump',
  'ioerror',
  'watchdog',
  'from-snapshot',
  'shutting-down',
  'snapshot',
  'crashed',
  'starting-up',
  'postcopy',
  'postcopy-failed',
  'api-error',
] as const satisfies readonly PausedReason[];

const recordedSchema = z.discriminatedUnion('state', [
  z.object({ state: z.literal('running'), reason: z.enum(RUNNING_REASONS) }).strict(),
  z.object({ state: z.literal('paused'), reason: z.enum(PAUSED_REASONS) }).strict(),
  z.object({ state: z.literal('crashed'), reason: z.enum(['unknown', 'panicked']) }).strict(),
]);

/**
 * The state a status file recorded (libvirt keeps it in its status XML), or undefined when there is
 * none or it is not one an active domain can be in (a file of an older or newer virtkit): the
 * domain is then read from QEMU alone.
 */
export function recordedStatus(raw: unknown): DomainStatus | undefined {
  const parsed = recordedSchema.safeParse(raw);
  return parsed.success ? parsed.data : undefined;
}

/** Paused reasons QEMU's run state cannot tell apart from a plain `stop` (or does not know). */
const GENERIC_PAUSE: ReadonlySet<PausedReason> = new Set(['user', 'unknown']);

/**
 * The state of an adopted domain from the recorded one and QEMU's run state, by libvirt's rule
 * (`qemuProcessUpdateState`): QEMU decides whether the vCPUs run; the recorded reason survives when
 * QEMU agrees on the state and cannot tell the reason itself. So a domain recorded running keeps
 * `booted` or `migrated`, one recorded paused keeps `migrated` or `user` while QEMU only says
 * `paused`; a QEMU that ran on (recorded paused) reads `unpaused`, one that stopped meanwhile
 * (recorded running) reads QEMU's reason. `starting-up` never survives: the start that set it is over.
 */
export function reconcileStatus(
  recorded: DomainStatus | undefined,
  status: string,
  running: boolean,
): DomainStatus {
  const found = statusOfRunState(status, running);
  // QEMU keeps a panicked guest in guest-panicked; on_crash=preserve recorded it as crashed.
  if (recorded?.state === 'crashed' && status === 'guest-panicked' && !running) return recorded;
  if (!recorded || recorded.state !== found.state) return found;
  if (found.state === 'running') return recorded;
  const kept = recorded.reason as PausedReason;
  if (kept === 'unknown' || kept === 'starting-up') return found;
  return GENERIC_PAUSE.has(found.reason as PausedReason) ? recorded : found;
}

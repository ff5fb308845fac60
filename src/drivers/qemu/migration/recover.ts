import { errorMessage } from '../../../errors.js';
import type { DriverContext } from '../context.js';
import type { DomainObject, Runtime } from '../domain-object.js';
import type { QmpClient } from '../qmp/client.js';
import type { JobRecord } from '../status.js';
import { type OutgoingRecord, setMigration } from './record.js';

/** What reconnect does with the QEMU of an interrupted migration job. */
export type MigrationRecovery =
  | { readonly kill: false; readonly why: string }
  | { readonly kill: true; readonly reason: 'failed' | 'migrated'; readonly why: string };

const CANCEL_WAIT_MS = 10_000;

/**
 * The rule per phase for a migration job a killed manager left (libvirt's
 * `qemuProcessRecoverMigrationOut`/`…In`; table in docs/jobs.md). The guest must run on exactly
 * one side: a source is resumed only while its stream cannot have completed, a destination is
 * kept only once its vCPUs ran.
 */
export async function recoverMigration(
  ctx: DriverContext,
  dom: DomainObject,
  run: Runtime & { qmp: QmpClient },
  job: JobRecord,
  qemuStatus: string,
): Promise<MigrationRecovery> {
  if (job.operation === 'migration-in') {
    if (job.phase === 'finish' && qemuStatus === 'running') {
      ctx.setState(dom, { state: 'running', reason: 'migrated' });
      run.migrating = undefined;
      return { kill: false, why: 'the incoming guest already ran here; adopted, running (migrated)' };
    }
    return {
      kill: true,
      reason: 'failed',
      why: `an incoming migration in phase ${job.phase} never resumed its vCPUs here; the source decides, this side is killed`,
    };
  }
  const sourceRan = job.data?.['sourceRan'] !== false;
  switch (job.phase) {
    case 'confirm':
      return {
        kill: true,
        reason: 'migrated',
        why: 'the migration was being confirmed: the guest runs at the destination; the source is killed',
      };
    case 'perform': {
      if (qemuStatus === 'postmigrate')
        return keepForConfirm(ctx, dom, run, sourceRan, 'the stream completed');
      const cancelled = await cancelStream(ctx, dom, run.qmp);
      if (cancelled === 'completed') return keepForConfirm(ctx, dom, run, sourceRan, 'the stream completed');
      await adoptResumed(ctx, run, dom, sourceRan);
      return { kill: false, why: 'the stream was still under way: cancelled, the source runs as before' };
    }
    case 'perform-done':
      return keepForConfirm(ctx, dom, run, sourceRan, 'the stream had completed');
    case 'confirm-cancelled':
      await adoptResumed(ctx, run, dom, sourceRan);
      return { kill: false, why: 'a cancelled confirm was under way: the source runs as before' };
    default:
      // begin, perform-failed: the stream never started or failed; QEMU's state is the truth.
      run.migrating = undefined;
      return { kill: false, why: `nothing to undo in phase ${job.phase}; adopted as QEMU reports it` };
  }
}

/** The stream completed: the guest may run at the destination; only the application may decide. */
function keepForConfirm(
  ctx: DriverContext,
  dom: DomainObject,
  run: Runtime,
  sourceRan: boolean,
  what: string,
): MigrationRecovery {
  ctx.setState(dom, { state: 'paused', reason: 'migration' });
  run.migrating = 'out';
  const record: OutgoingRecord = {
    role: 'out',
    phase: 'perform-done',
    wasRunning: sourceRan,
    held: undefined,
  };
  setMigration(dom, record);
  return {
    kill: false,
    why: `${what}; the source stays paused (migration) until the application confirms or cancels`,
  };
}

/** `migrate_cancel`, then waits until QEMU reports the stream over; its final status. */
async function cancelStream(ctx: DriverContext, dom: DomainObject, qmp: QmpClient): Promise<string> {
  try {
    await qmp.command('migrate_cancel');
    const deadline = Date.now() + CANCEL_WAIT_MS;
    for (;;) {
      const { status = 'none' } = await qmp.command('query-migrate');
      if (['completed', 'failed', 'cancelled', 'none'].includes(status) || Date.now() > deadline)
        return status;
      await new Promise((r) => setTimeout(r, 50));
    }
  } catch (err) {
    ctx.log(dom, `reconnect: cannot cancel the migration stream: ${errorMessage(err)}`);
    return 'unknown';
  }
}

/** A source whose migration is over: resumed if it ran before (QEMU usually has done so itself). */
async function adoptResumed(
  ctx: DriverContext,
  run: Runtime & { qmp: QmpClient },
  dom: DomainObject,
  sourceRan: boolean,
): Promise<void> {
  run.migrating = undefined;
  const { status } = await run.qmp.command('query-status');
  if (sourceRan && status !== 'running') await run.qmp.command('cont');
  ctx.setState(
    dom,
    sourceRan ? { state: 'running', reason: 'migration-cancelled' } : { state: 'paused', reason: 'user' },
  );
}

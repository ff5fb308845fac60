import { ErrorCode, errorMessage, toVirtError, VirtError } from '../../../errors.js';
import type { OutgoingMigration } from '../../../stable/driver.js';
import type {
  MigratePerformOptions,
  MigrationEndOptions,
  MigrationProgress,
} from '../../../stable/migration.js';
import { faultPoint } from '../../../util/fault-points.js';
import type { HeldJob, Job } from '../../jobs.js';
import { type DriverContext, within } from '../context.js';
import { listeningSockets } from '../devices/serial.js';
import type { DomainObject, Runtime } from '../domain-object.js';
import { emulatorOf, signalEmulator } from '../emulator-kill.js';
import { requireActive } from '../lifecycle.js';
import type { QmpClient } from '../qmp/client.js';
import { recordJob } from '../runtime-status.js';
import { progressOf } from './progress.js';
import {
  endMigration,
  migrationOf,
  type OutgoingPhase,
  type OutgoingRecord,
  setMigration,
} from './record.js';
import { checkClientTls, disableTls, enableTls } from './tls.js';
import { formatMigrationUri, type MigrationAddress, parseMigrationUri } from './uri.js';

const TERMINAL = new Set(['completed', 'failed', 'cancelled']);
const PROGRESS_INTERVAL_MS = 200;
const QUIT_WAIT_MS = 10_000;

function outgoing(dom: DomainObject, what: string): OutgoingRecord {
  const record = migrationOf(dom);
  if (record?.role !== 'out')
    throw new VirtError(
      ErrorCode.OPERATION_INVALID,
      `domain '${dom.def.name}' has no outgoing migration to ${what}; call migrateBegin first`,
      { domain: { name: dom.def.name, uuid: dom.def.uuid } },
    );
  return record;
}

/** Records the migration's phase as its job's, in the job and in the status file. */
async function enterPhase(dom: DomainObject, record: OutgoingRecord, phase: OutgoingPhase): Promise<void> {
  record.phase = phase;
  const job = record.held?.job;
  const run = dom.run;
  if (!job || !run) return;
  // Not setPhase: rolling back after an abort is a phase too.
  job.phase = phase;
  await recordJob(dom, run, job);
}

/**
 * Step 1: the domain must run (or be paused). `held`, the `migration-out` job, keeps the domain
 * from now until confirm (libvirt's async migration job): other jobs wait, queries answer.
 */
export async function beginMigration(
  ctx: DriverContext,
  dom: DomainObject,
  held: HeldJob,
): Promise<OutgoingMigration> {
  const run = requireActive(dom);
  const earlier = migrationOf(dom);
  // An incoming migration whose QEMU exited and that nobody finished is over.
  if (earlier?.role === 'in' && earlier.gone) setMigration(dom, undefined);
  if (migrationOf(dom) || run.migrating)
    throw new VirtError(ErrorCode.OPERATION_INVALID, `domain '${dom.def.name}' is already migrating`, {
      domain: { name: dom.def.name, uuid: dom.def.uuid },
    });
  const running = dom.state === 'running';
  const record: OutgoingRecord = { role: 'out', phase: 'begin', wasRunning: running, held };
  setMigration(dom, record);
  run.migrating = 'out';
  held.job.data = { sourceRan: running };
  // QEMU gone (destroyed, crashed, shut down by the guest): so is the migration, and its job.
  void run.finalized.then(() => endMigration(dom, record));
  await enterPhase(dom, record, 'begin');
  ctx.log(dom, `migration: begin (${running ? 'running' : 'paused'})`);
  return {
    definition: structuredClone(dom.def),
    live: structuredClone(run.live),
    running,
    taints: [...run.taints],
  };
}

/**
 * Step 3: `migrate` to the destination and wait for QEMU's MIGRATION event. On success the source
 * stays paused (reason `migration`) until confirm; on failure or cancel it runs as before, and the
 * migration waits for a cancelled confirm.
 */
export async function performMigration(
  ctx: DriverContext,
  dom: DomainObject,
  uri: string,
  options: MigratePerformOptions,
): Promise<void> {
  const record = outgoing(dom, 'perform');
  const run = requireActive(dom);
  const address = parseMigrationUri(uri, 'uri');
  if (options.cookie && options.cookie.uuid !== dom.def.uuid)
    throw new VirtError(ErrorCode.OPERATION_INVALID, 'the destination cookie belongs to another domain', {
      field: 'cookie.uuid',
    });
  if (record.phase !== 'begin')
    throw new VirtError(
      ErrorCode.OPERATION_INVALID,
      record.phase === 'perform-failed'
        ? `the migration of '${dom.def.name}' failed; end it with migrateConfirm({ cancelled: true })`
        : `the migration of '${dom.def.name}' was already performed`,
    );
  const hostname = options.tls ? checkClientTls(options.tls, address) : undefined;
  const job = record.held?.job;
  if (!job) throw new VirtError(ErrorCode.INTERNAL_ERROR, 'an outgoing migration without its job');
  const unfollow = job.follow(options.signal);
  try {
    job.checkAborted();
    record.wasRunning = dom.state === 'running';
    job.data = { sourceRan: record.wasRunning };
    await enterPhase(dom, record, 'perform');
    if (options.tls) {
      record.tls = true;
      await enableTls(run.qmp, options.tls, 'client', hostname);
    }
    await stream(ctx, dom, run, job, address, options);
  } catch (err) {
    await resumeIfStopped(ctx, dom, run, record.wasRunning);
    if (record.tls && !run.qmp.closed) await disableTls(run.qmp);
    record.tls = false;
    await enterPhase(dom, record, 'perform-failed');
    throw toVirtError(job.failure(err), ErrorCode.OPERATION_FAILED, `migration of '${dom.def.name}' failed`, {
      domain: { name: dom.def.name, uuid: dom.def.uuid },
    });
  } finally {
    unfollow();
  }
  ctx.setState(dom, { state: 'paused', reason: 'migration' });
  await enterPhase(dom, record, 'perform-done');
}

async function stream(
  ctx: DriverContext,
  dom: DomainObject,
  run: Runtime & { qmp: QmpClient },
  job: Job,
  address: MigrationAddress,
  options: MigratePerformOptions,
): Promise<void> {
  const qmp = run.qmp;
  const startedAt = Date.now();
  await qmp.command('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
  const parameters: Record<string, unknown> = {};
  if (options.maxDowntimeMs !== undefined) parameters['downtime-limit'] = options.maxDowntimeMs;
  if (options.bandwidthMiBps !== undefined)
    parameters['max-bandwidth'] = Math.round(options.bandwidthMiBps * 1024 * 1024);
  const changed = Object.keys(parameters);
  let restore: Record<string, unknown> | undefined;
  if (changed.length > 0) {
    const now = await qmp.execute<Record<string, unknown>>('query-migrate-parameters');
    restore = Object.fromEntries(changed.filter((k) => now[k] !== undefined).map((k) => [k, now[k]]));
    await qmp.command('migrate-set-parameters', parameters);
  }
  const end = streamEnd(qmp, run);
  const onAbort = () => void qmp.command('migrate_cancel').catch(() => undefined);
  job.signal.addEventListener('abort', onAbort, { once: true });
  try {
    ctx.log(dom, `migration: perform to ${formatMigrationUri(address)}`);
    await qmp.command('migrate', { uri: formatMigrationUri(address) });
    let status: string;
    try {
      faultPoint('migrate:streaming');
      status = await reportUntil(qmp, end, startedAt, (p) => {
        job.migration = p;
        job.progress = { completed: p.dataProcessed, total: p.dataTotal, unit: 'bytes' };
        options.onProgress?.(p);
      });
    } catch (err) {
      // A stream left running would complete without anyone confirming it, and leave the source
      // paused for good: it is cancelled, and over, before the caller resumes the source.
      await qmp.command('migrate_cancel').catch(() => undefined);
      await within(end, QUIT_WAIT_MS);
      throw err;
    }
    if (status !== 'completed') {
      job.checkAborted();
      const info = await qmp.command('query-migrate').catch(() => undefined);
      const why = info?.['error-desc'] ?? status;
      throw new VirtError(ErrorCode.OPERATION_FAILED, `migration of '${dom.def.name}' failed: ${why}`, {
        domain: { name: dom.def.name, uuid: dom.def.uuid },
        status,
      });
    }
  } finally {
    job.signal.removeEventListener('abort', onAbort);
    // QEMU keeps them: this QEMU's next migration (after a cancelled one) starts from its own again.
    if (restore && !qmp.closed) await qmp.command('migrate-set-parameters', restore).catch(() => undefined);
  }
  ctx.log(dom, `migration: stream completed after ${Date.now() - startedAt} ms; source paused until confirm`);
}

/** Settles with QEMU's terminal migration status, or 'failed' when QEMU or its monitor went away. */
function streamEnd(qmp: QmpClient, run: Runtime): Promise<string> {
  const event = qmp
    .waitForEvent('MIGRATION', (e) => TERMINAL.has(e.data.status), { timeoutMs: Number.POSITIVE_INFINITY })
    .then((e) => e.data.status)
    .catch(() => 'failed');
  return Promise.race([event, run.exited.then(() => 'failed')]);
}

async function reportUntil(
  qmp: QmpClient,
  end: Promise<string>,
  startedAt: number,
  onProgress: (progress: MigrationProgress) => void,
): Promise<string> {
  for (;;) {
    const status = await within(end, PROGRESS_INTERVAL_MS);
    const info = await qmp.command('query-migrate').catch(() => undefined);
    if (info) {
      try {
        onProgress(progressOf(info, startedAt));
      } catch {
        // a throwing observer does not decide the migration
      }
    }
    if (status !== 'timeout') return status;
  }
}

/** QEMU restarts a source whose migration failed; this makes sure, and says when it cannot. */
async function resumeIfStopped(
  ctx: DriverContext,
  dom: DomainObject,
  run: Runtime & { qmp: QmpClient },
  wasRunning: boolean,
): Promise<void> {
  if (run.exitInfo || run.qmp.closed) return;
  try {
    const { status } = await run.qmp.command('query-status');
    if (wasRunning && status !== 'running') {
      await run.qmp.command('cont');
      ctx.log(dom, `migration: source resumed (was ${status})`);
    }
    if (wasRunning) ctx.setState(dom, { state: 'running', reason: 'migration-cancelled' });
    else if (dom.state !== 'paused') ctx.setState(dom, { state: 'paused', reason: 'user' });
  } catch (err) {
    ctx.log(dom, `migration: cannot resume the source: ${errorMessage(err)}`);
  }
}

/**
 * A source adopted on reconnect after its stream completed (QEMU in `postmigrate`, reason
 * `migration`): the manager that ran the migration is gone, and the application confirms it. It
 * has no job of its own; its state before the migration is not known, so a cancelled confirm resumes it.
 */
function adoptedOutgoing(dom: DomainObject): OutgoingRecord {
  if (dom.run?.migrating !== 'out' || dom.reason !== 'migration') return outgoing(dom, 'confirm');
  const record: OutgoingRecord = {
    role: 'out',
    phase: 'perform-done',
    wasRunning: true,
    held: undefined,
  };
  setMigration(dom, record);
  return record;
}

/** True when `dom` has a migration whose job holds it (its steps do not queue for the slot). */
export function heldOutgoing(dom: DomainObject): boolean {
  const record = migrationOf(dom);
  return record?.role === 'out' && record.held !== undefined;
}

/**
 * Step 5: after a completed stream the source QEMU quits (shut off, reason `migrated`); with
 * `cancelled` it resumes if it ran, and the migration is over either way. Allowed after an abort:
 * it is how an aborted migration ends.
 */
export async function confirmMigration(
  ctx: DriverContext,
  dom: DomainObject,
  options: MigrationEndOptions,
): Promise<void> {
  const record = migrationOf(dom)?.role === 'out' ? outgoing(dom, 'confirm') : adoptedOutgoing(dom);
  const run = dom.run;
  if (options.cancelled || record.phase !== 'perform-done') {
    if (!options.cancelled)
      throw new VirtError(
        ErrorCode.OPERATION_INVALID,
        `the migration of '${dom.def.name}' has not completed; confirm it with { cancelled: true }`,
      );
    await enterPhase(dom, record, 'confirm-cancelled');
    if (run) {
      if (run.qmp && run.started) {
        await resumeIfStopped(ctx, dom, run as Runtime & { qmp: QmpClient }, record.wasRunning);
        if (record.tls) await disableTls(run.qmp);
      }
      run.migrating = undefined;
    }
    await endMigration(dom, record);
    ctx.log(dom, 'migration: cancelled; the source keeps running');
    return;
  }
  if (!run) {
    await endMigration(dom, record);
    return;
  }
  await enterPhase(dom, record, 'confirm');
  run.stopIntent = 'migrated';
  // QEMU that quits unlinks the UNIX sockets it listened on, by path; on this host the
  // destination's QEMU may listen on the same paths now. Killed, it leaves them: the guest's state
  // and disks are the destination's (flushed and inactivated when the stream completed).
  const shared = listeningSockets(run.live, ctx.layout.run).length > 0;
  if (!shared) await run.qmp?.command('quit').catch(() => undefined);
  if (shared || (await within(run.exited, QUIT_WAIT_MS)) === 'timeout') {
    try {
      process.kill(run.pid, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
    signalEmulator(emulatorOf(ctx, dom, run), 'SIGKILL');
  }
  await run.finalized;
  await endMigration(dom, record);
  ctx.log(dom, 'migration: confirmed; the source QEMU has quit');
}

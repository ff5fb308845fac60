import { ErrorCode, errorMessage, VirtError } from '../../../errors.js';
import type { MigrationEndOptions, MigrationTlsOptions, ResolvedOffer } from '../../../stable/migration.js';
import { faultPoint } from '../../../util/fault-points.js';
import type { HeldJob } from '../../jobs.js';
import type { DriverContext } from '../context.js';
import type { DomainObject, Runtime } from '../domain-object.js';
import { destroyDomain } from '../lifecycle.js';
import type { QmpClient } from '../qmp/client.js';
import { recordJob } from '../runtime-status.js';
import { startDomain } from '../start.js';
import { removeIfPresent } from '../store.js';
import { checkSameLive } from './compat.js';
import {
  endMigration,
  type IncomingOutcome,
  type IncomingRecord,
  migrationOf,
  setMigration,
} from './record.js';
import { disableTls, enableTls } from './tls.js';
import { formatMigrationUri, type MigrationAddress, migrationAborted } from './uri.js';

/**
 * Step 2 on the destination, in the `migration-in` job `held`, which keeps the domain until finish
 * (its phases: the start sequence's steps, then `prepare`, then `finish`): QEMU starts with `-S -incoming defer`, the
 * privileged operations run in phase `migration-in` with the verified thread ids of this QEMU, the
 * status is recorded, and only then does `migrate-incoming` open the door to the stream. Any
 * failure destroys what was started; the caller undefines a domain it defined for this.
 *
 * @returns the URI the source connects to (with the real port when 0 was asked for)
 */
export async function prepareIncoming(
  ctx: DriverContext,
  dom: DomainObject,
  held: HeldJob,
  offer: ResolvedOffer,
  address: MigrationAddress,
  definedHere: boolean,
  /** Prepare defined the domain without `persist`: it ends with this QEMU. */
  transient: boolean,
  /** Credentials a TLS stream must come with (checked by the caller). */
  tls: MigrationTlsOptions | undefined,
): Promise<string> {
  const job = held.job;
  const signal = job.signal;
  if (dom.run)
    throw new VirtError(
      ErrorCode.OPERATION_INVALID,
      `domain '${dom.def.name}' is already active at the destination`,
      {
        domain: { name: dom.def.name, uuid: dom.def.uuid },
      },
    );
  const ident = { name: dom.def.name, uuid: dom.def.uuid };
  if (signal?.aborted) throw migrationAborted('prepare', ident);
  if (address.kind === 'unix') removeIfPresent(address.path);
  await startDomain(ctx, dom, job, { incoming: {} });
  const run = dom.run as Runtime | undefined;
  if (!run?.qmp) throw new VirtError(ErrorCode.INTERNAL_ERROR, 'the incoming QEMU has no monitor');
  run.migrating = 'in';
  const qmp = run.qmp;
  try {
    if (signal?.aborted) throw migrationAborted('prepare', ident);
    checkSameLive(run.live, offer.live, dom.def);
    faultPoint('migrate:prepared');
    await qmp.command('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
    if (tls) await enableTls(qmp, tls, 'server', undefined);
    const outcome = incomingOutcome(qmp, run);
    await qmp.command('migrate-incoming', { uri: formatMigrationUri(address) });
    const uri = await listeningUri(qmp, address);
    if (signal?.aborted) throw migrationAborted('prepare', ident);
    job.setPhase('prepare');
    if (transient) run.transient = true;
    await recordJob(dom, run, job);
    const record: IncomingRecord = {
      role: 'in',
      running: offer.cookie.running,
      definedHere,
      address,
      outcome,
      held,
      gone: false,
      tls: tls !== undefined,
    };
    setMigration(dom, record);
    // QEMU gone (destroyed, or it quit after a failed stream): the job lets go of the domain;
    // finish still reports the failure and rolls back.
    void run.finalized.then(() => {
      record.gone = true;
      record.held.end();
    });
    ctx.log(dom, `migration: waiting for the stream at ${uri}`);
    return uri;
  } catch (err) {
    await destroyIncoming(ctx, dom, run, address);
    throw err;
  }
}

/** Settles once with the end of the stream: completed, failed, or QEMU gone (it exits when the stream fails). */
function incomingOutcome(qmp: QmpClient, run: Runtime): Promise<IncomingOutcome> {
  const event = qmp
    .waitForEvent('MIGRATION', (e) => ['completed', 'failed', 'cancelled'].includes(e.data.status), {
      timeoutMs: Number.POSITIVE_INFINITY,
    })
    .then(
      (e): IncomingOutcome =>
        e.data.status === 'completed'
          ? { ok: true }
          : { ok: false, error: new Error(`the incoming stream ended with status ${e.data.status}`) },
      (err: unknown): IncomingOutcome => ({
        ok: false,
        error: err instanceof Error ? err : new Error(String(err)),
      }),
    );
  const exited = run.exited.then(
    (info): IncomingOutcome => ({
      ok: false,
      error: new Error(
        `the destination QEMU exited during the stream (${info.signal ? `signal ${info.signal}` : `code ${info.code}`})`,
      ),
    }),
  );
  return Promise.race([event, exited]);
}

/** The real listening address: QEMU picks the port when 0 was asked for. */
async function listeningUri(qmp: QmpClient, address: MigrationAddress): Promise<string> {
  if (address.kind !== 'tcp' || address.port !== 0) return formatMigrationUri(address);
  const info = await qmp.command('query-migrate');
  const inet = info['socket-address']?.find((a) => a.type === 'inet' && a.port !== undefined);
  const port = Number(inet?.port);
  if (!Number.isInteger(port) || port <= 0 || port > 65535)
    throw new VirtError(
      ErrorCode.OPERATION_FAILED,
      'QEMU did not report the port it listens on for the migration',
    );
  return formatMigrationUri({ ...address, port });
}

async function destroyIncoming(
  ctx: DriverContext,
  dom: DomainObject,
  run: Runtime,
  address: MigrationAddress,
  error?: unknown,
): Promise<void> {
  const record = migrationOf(dom);
  if (record?.role === 'in') await endMigration(dom, record, error);
  if (dom.run === run && run.started) {
    try {
      await destroyDomain(ctx, dom, { graceMs: 2_000 });
    } catch (err) {
      ctx.log(dom, `migration: rollback could not destroy the incoming QEMU: ${errorMessage(err)}`);
    }
  }
  await run.finalized;
  if (address.kind === 'unix') removeIfPresent(address.path);
  ctx.log(dom, 'migration: incoming side rolled back');
}

/**
 * Step 4: waits for the stream; resumes the vCPUs when the source ran. When cancelled or failed the
 * destination is destroyed (the caller undefines a domain that prepare defined).
 */
export async function finishIncoming(
  ctx: DriverContext,
  dom: DomainObject,
  options: MigrationEndOptions,
): Promise<void> {
  const record = migrationOf(dom);
  if (record?.role !== 'in')
    throw new VirtError(
      ErrorCode.OPERATION_INVALID,
      `domain '${dom.def.name}' has no incoming migration to finish`,
      {
        domain: { name: dom.def.name, uuid: dom.def.uuid },
      },
    );
  const run = dom.run;
  const job = record.held.job;
  const unfollow = job.follow(options.signal);
  let failure: Error | undefined;
  try {
    job.phase = 'finish';
    if (run) await recordJob(dom, run, job);
    if (options.cancelled) failure = new Error('cancelled');
    else {
      const outcome = await untilAborted(record.outcome, job.signal);
      if (!outcome.ok) failure = outcome.error;
    }
  } finally {
    unfollow();
  }
  if (failure || !run?.qmp) {
    const error = job.aborted
      ? job.failure(failure)
      : new VirtError(
          ErrorCode.OPERATION_FAILED,
          `incoming migration of '${dom.def.name}' failed: ${failure?.message ?? 'the incoming QEMU is gone'}; the destination was rolled back`,
          { domain: { name: dom.def.name, uuid: dom.def.uuid } },
        );
    if (run) await destroyIncoming(ctx, dom, run, record.address, options.cancelled ? undefined : error);
    else await endMigration(dom, record, options.cancelled ? undefined : error);
    if (options.cancelled) return;
    throw error;
  }
  try {
    // Recorded before `cont`, so the RESUME it provokes finds the domain running already.
    if (record.running) {
      ctx.setState(dom, { state: 'running', reason: 'migrated' });
      await run.qmp.command('cont');
    } else {
      ctx.setState(dom, { state: 'paused', reason: 'migrated' });
    }
  } catch (err) {
    await destroyIncoming(ctx, dom, run, record.address, err);
    throw new VirtError(
      ErrorCode.OPERATION_FAILED,
      `cannot resume '${dom.def.name}' after the migration: ${errorMessage(err)}; the destination was rolled back`,
      { domain: { name: dom.def.name, uuid: dom.def.uuid } },
      { cause: err },
    );
  }
  run.migrating = undefined;
  // After the vCPUs run again: a later migration of this QEMU must not inherit the credentials.
  if (record.tls) await disableTls(run.qmp);
  await endMigration(dom, record);
  if (record.address.kind === 'unix') removeIfPresent(record.address.path);
  ctx.log(dom, `migration: finished; ${record.running ? 'running' : 'paused'} here`);
  ctx.emit(dom, 'started', 'migrated');
}

function untilAborted(
  outcome: Promise<IncomingOutcome>,
  signal: AbortSignal | undefined,
): Promise<IncomingOutcome> {
  if (!signal) return outcome;
  if (signal.aborted) return Promise.resolve({ ok: false, error: new Error('aborted by the caller') });
  return new Promise((resolve) => {
    const onAbort = () => resolve({ ok: false, error: new Error('aborted by the caller') });
    signal.addEventListener('abort', onAbort, { once: true });
    void outcome.then((o) => {
      signal.removeEventListener('abort', onAbort);
      resolve(o);
    });
  });
}

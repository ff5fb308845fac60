import type { DomainStatus } from '../../stable/events.js';
import { Job } from '../jobs.js';
import type { DomainObject, Runtime } from './domain-object.js';
import { type JobRecord, type RawStatusRecord, writeStatus, writeStatusSync } from './status.js';
import { removeIfPresent } from './store.js';

/**
 * The status file's content for a runtime: what a successor driver adopts the domain from. The job
 * is the one last recorded ({@link recordJob}); `state` the domain's state with its reason.
 */
export function runtimeStatus(
  run: Runtime,
  phase: 'starting' | 'running',
  state: DomainStatus | undefined,
): RawStatusRecord {
  return {
    version: 1,
    phase,
    job: jobRecord(run.statusJob),
    ...(state ? { state: { state: state.state, reason: state.reason } } : {}),
    id: run.id,
    pid: run.pid,
    startTime: run.startTime.toString(),
    emulator: run.emulator,
    monitor: run.paths.monitor,
    taints: run.taints,
    threads: run.threads,
    placements: run.placements,
    placementAttempted: run.placementAttempted,
    liveVersion: run.liveVersion,
    ...(run.transient ? { transient: true } : {}),
    // An unreadable record is kept as found: never overwritten with a stand-in.
    live: run.liveUnreadable ? run.liveUnreadable.raw : run.live,
  };
}

function jobRecord(job: Job | JobRecord | undefined): JobRecord | undefined {
  if (!(job instanceof Job)) return job;
  return {
    operation: job.operation,
    phase: job.phase,
    startedAt: job.startedAt,
    ...(job.data ? { data: job.data } : {}),
  };
}

/** True while `run` is the started, attached runtime of `dom`: only then has it a status file to keep. */
function recorded(dom: DomainObject, run: Runtime): boolean {
  return run.started && !run.detached && dom.run === run;
}

/**
 * Rewrites the status file of a started domain from what the driver holds now, at once and without
 * fsync (what it guards against, a killed driver, the page cache covers; see writeStatus). A durable
 * write still under way would land after this one with older content: it rewrites on completion
 * ({@link settleStatus}).
 */
export function saveStatus(dom: DomainObject, run: Runtime): void {
  if (!recorded(dom, run)) return;
  writeStatusSync(run.paths.status, runtimeStatus(run, 'running', dom.status));
  run.statusState = dom.status;
  if (run.statusWrites > 0) run.statusStale = true;
}

/** Records the domain's new state (a state change of the driver core), unless the file already has it. */
export function saveState(dom: DomainObject, run: Runtime): void {
  const last = run.statusState;
  if (last && last.state === dom.state && last.reason === dom.reason) return;
  saveStatus(dom, run);
}

/**
 * Writes `record` durably (fsync'd): the caller makes what it records visible afterwards and then
 * calls {@link settleStatus}, which rewrites the file if anything changed while this write was under way.
 */
export async function writeStatusDurably(run: Runtime, record: RawStatusRecord): Promise<void> {
  run.statusWrites++;
  try {
    await writeStatus(run.paths.status, record);
  } finally {
    run.statusWrites--;
  }
}

/** After a durable write: a record written meanwhile was overtaken by it, so the file is written again. */
export function settleStatus(dom: DomainObject, run: Runtime): void {
  if (run.statusWrites > 0 || !run.statusStale) return;
  run.statusStale = false;
  saveStatus(dom, run);
}

/**
 * Records in the status file of a started domain that `job` holds it (or, with undefined, that no
 * job does), so a successor can settle a job this driver did not finish. No job to record where
 * none is recorded writes nothing: a job whose last step was a live change (setLive's `endsJob`)
 * already wrote that record.
 */
export async function recordJob(dom: DomainObject, run: Runtime, job: Job | undefined): Promise<void> {
  if (job === undefined && run.statusJob === undefined) return;
  run.statusJob = job;
  saveStatus(dom, run);
}

/**
 * Removes the status file a write just made when QEMU exited while it was under way and its
 * clean-up already ran: the file would be a leftover of a domain that is shut off.
 */
export function dropIfGone(dom: DomainObject, run: Runtime): void {
  if (dom.run !== run) removeIfPresent(run.paths.status);
}

import type { Job } from '../jobs.js';
import type { Runtime } from './domain-object.js';
import { type RawStatusRecord, writeStatus } from './status.js';
import { removeIfPresent } from './store.js';

/** The status file's content for a runtime: what a successor driver adopts the domain from. */
export function runtimeStatus(
  run: Runtime,
  phase: 'starting' | 'running',
  job: Job | undefined,
): RawStatusRecord {
  return {
    version: 1,
    phase,
    job: job && {
      operation: job.operation,
      phase: job.phase,
      startedAt: job.startedAt,
      ...(job.data ? { data: job.data } : {}),
    },
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

/**
 * Records in the status file of a started domain that `job` holds it (or, with undefined, that no
 * job does), so a successor can settle a job this driver did not finish.
 */
export async function recordJob(
  run: Runtime,
  job: Job | undefined,
  current: () => boolean = () => true,
): Promise<void> {
  if (!run.started || run.detached || !current()) return;
  // Not fsync'd: what it guards against, a killed driver, the page cache covers (see writeStatus).
  await writeStatus(run.paths.status, runtimeStatus(run, 'running', job), false);
  // QEMU exited while the write was under way and its clean-up already ran: the file just
  // written would be a leftover of a domain that is shut off.
  if (!current()) removeIfPresent(run.paths.status);
}

import type { MigrationProgress } from './migration.js';

/**
 * The kind of a domain job: the modifying operation that holds a domain, as in libvirt's
 * `virDomainJobOperation`. One job at a time per domain; queries never wait for one.
 *
 * @public
 */
export type JobOperation =
  | 'define'
  | 'start'
  | 'destroy'
  | 'shutdown'
  | 'suspend'
  | 'resume'
  | 'reboot'
  | 'reset'
  | 'undefine'
  | 'migration-out'
  | 'migration-in'
  | 'device-change'
  /** A modifying QMP command sent through `virtkit/internal`'s `monitorCommand`. */
  | 'monitor-command';

/**
 * What `Domain.getJobInfo()` reports (libvirt's `virDomainGetJobStats`, reduced).
 *
 * @public
 */
export interface JobInfo {
  /** The job under way, or `none`. */
  readonly operation: JobOperation | 'none';
  /** The step the job is in (for a start: `openDescriptors`, `spawnStub`, `configureThreads`…); null without a job. */
  readonly phase: string | null;
  /** When the job began, in milliseconds since the epoch; null without a job. */
  readonly startedAt: number | null;
  /** Milliseconds since the job began; 0 without a job. */
  readonly elapsedMs: number;
  /** How far the job got, when it can tell: steps done of all steps, or bytes of a transfer. */
  readonly progress: {
    readonly completed: number;
    readonly total: number;
    readonly unit: 'steps' | 'bytes';
  } | null;
  /** The job has been asked to abort (by `abortJob()`, its signal, or a `destroy`) and is rolling back. */
  readonly aborting: boolean;
  /**
   * An outgoing migration that streams or has streamed: QEMU's last `query-migrate` (bytes total,
   * transferred and remaining, dirty rate, expected and final downtime).
   */
  readonly migration?: MigrationProgress;
}

/**
 * Options every public operation that can take time accepts.
 *
 * @public
 */
export interface OperationOptions {
  /**
   * Aborts the operation: while it waits for the domain's job it gives up at once, while it runs
   * it rolls back like any failure. Either way it fails with `ABORTED`.
   */
  readonly signal?: AbortSignal;
}

import { ErrorCode, VirtError } from '../errors.js';
import type { JobInfo, JobOperation } from '../stable/jobs.js';
import type { MigrationProgress } from '../stable/migration.js';
import { channels, traceAsync, tracing } from '../stable/tracing.js';

/** Who asked a job to stop: decides the error the job fails with. */
export type AbortCause = 'signal' | 'abort-job' | 'destroy';

type Ident = { readonly name: string; readonly uuid: string };

/**
 * One modifying operation holding a domain (libvirt's `qemuDomainObjBeginJob` … `EndJob`). It
 * carries the signal every step of the operation passes on (to handlers, QMP waits, timers), its
 * phase for `getJobInfo()` and the status file, and the error it fails with once aborted.
 */
export class Job {
  readonly operation: JobOperation;
  readonly startedAt = Date.now();
  phase: string;
  progress: JobInfo['progress'] = null;
  /** The stream's last `query-migrate`, while a migration job streams. */
  migration: MigrationProgress | undefined;
  /** Facts a successor needs to settle this job, recorded with it in the status file. */
  data: Readonly<Record<string, string | number | boolean>> | undefined;
  readonly #controller = new AbortController();
  readonly #ident: Ident;
  readonly #detach: () => void;
  /** Called after every phase change, e.g. to record the phase in the status file. */
  onPhase: ((job: Job) => void) | undefined;

  constructor(operation: JobOperation, ident: Ident, callerSignal?: AbortSignal) {
    this.operation = operation;
    this.phase = 'begin';
    this.#ident = ident;
    const onAbort = () => this.abort('signal');
    callerSignal?.addEventListener('abort', onAbort, { once: true });
    this.#detach = () => callerSignal?.removeEventListener('abort', onAbort);
    if (callerSignal?.aborted) this.abort('signal');
  }

  /** Aborted when the caller's signal fires, `abortJob()` is called, or a destroy ends the job. */
  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** The controller behind {@link Job.signal}, for code that hands an AbortController on. */
  get controller(): AbortController {
    return this.#controller;
  }

  get aborted(): boolean {
    return this.#controller.signal.aborted;
  }

  /** Moves to the next phase; throws the abort error when the job was aborted meanwhile. */
  setPhase(phase: string, progress?: JobInfo['progress']): void {
    this.checkAborted();
    this.phase = phase;
    if (progress !== undefined) this.progress = progress;
    this.onPhase?.(this);
  }

  /** Asks the job to stop; its steps see {@link Job.signal} abort and roll back. The first cause wins. */
  abort(cause: AbortCause): void {
    if (this.aborted) return;
    this.#controller.abort(abortError(this.operation, this.#ident, cause));
  }

  /** Throws the abort error when the job was aborted. */
  checkAborted(): void {
    if (this.aborted) throw this.#controller.signal.reason;
  }

  /**
   * The error a failed job reports: after an abort, the abort's error (whatever step noticed it
   * first, with what that step threw as the cause); otherwise `err` unchanged.
   */
  failure(err: unknown): unknown {
    if (!this.aborted) return err;
    const reason = this.#controller.signal.reason as VirtError;
    if (err === reason) return reason;
    return new VirtError(reason.code, reason.message, reason.details, { cause: err });
  }

  info(): JobInfo {
    return {
      operation: this.operation,
      phase: this.phase,
      startedAt: this.startedAt,
      elapsedMs: Date.now() - this.startedAt,
      progress: this.progress,
      aborting: this.aborted,
      ...(this.migration ? { migration: this.migration } : {}),
    };
  }

  /**
   * Makes `signal` abort this job too, until the returned function is called: each step of a job
   * that spans several calls (a migration) brings its own signal.
   */
  follow(signal: AbortSignal | undefined): () => void {
    if (!signal) return () => undefined;
    const onAbort = () => this.abort('signal');
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    return () => signal.removeEventListener('abort', onAbort);
  }

  /** Lets go of the caller's signal. */
  end(): void {
    this.#detach();
  }
}

/**
 * A job that outlives the call that began it (libvirt's async migration job, kept from begin to
 * confirm): the domain's slot stays taken until {@link HeldJob.end}.
 */
export interface HeldJob {
  readonly job: Job;
  /** Frees the slot; with an error the job is traced as failed. Later calls do nothing. */
  end(error?: unknown): void;
  /** Settles once the slot is free again. */
  readonly ended: Promise<void>;
}

function abortError(operation: JobOperation, ident: Ident, cause: AbortCause): VirtError {
  const details = { domain: { name: ident.name, uuid: ident.uuid }, operation };
  // A destroy is not the caller of the job giving up: the job fails as it would if QEMU had died,
  // which is what callers of start() have always seen.
  if (cause === 'destroy')
    return new VirtError(
      ErrorCode.OPERATION_FAILED,
      `${operation} of domain '${ident.name}' was ended by a destroy; everything it did was rolled back`,
      details,
    );
  const by = cause === 'signal' ? 'its AbortSignal' : 'abortJob()';
  return new VirtError(
    ErrorCode.ABORTED,
    `${operation} of domain '${ident.name}' was aborted by ${by}; everything it did was rolled back`,
    details,
  );
}

/** The error of an operation whose signal fired before its job could begin. */
export function abortedWhileWaiting(operation: JobOperation, ident: Ident): VirtError {
  return new VirtError(
    ErrorCode.ABORTED,
    `${operation} of domain '${ident.name}' was aborted by its AbortSignal before it could begin`,
    { domain: { name: ident.name, uuid: ident.uuid }, operation },
  );
}

/** A job info with no job. */
export const NO_JOB: JobInfo = Object.freeze({
  operation: 'none',
  phase: null,
  startedAt: null,
  elapsedMs: 0,
  progress: null,
  aborting: false,
});

/**
 * The job slot of one domain: one modifying job at a time, the others wait their turn in order
 * of arrival. A waiting caller whose signal fires leaves the queue at once with `ABORTED`. A failed
 * job does not block the ones after it. Queries never go through here.
 */
export class JobSlot {
  #tail: Promise<void> = Promise.resolve();
  #current: Job | undefined;

  /** The job under way, if any. */
  get current(): Job | undefined {
    return this.#current;
  }

  /**
   * Aborts the job under way (`dom.abortJob()`); it rolls back. Define and destroy cannot be aborted.
   *
   * @returns the aborted job
   * @throws VirtError `OPERATION_INVALID` when no job that can be aborted is under way
   */
  abort(name: string, ident: Ident): Job {
    const job = this.#current;
    if (!job || job.operation === 'define' || job.operation === 'destroy')
      throw new VirtError(
        ErrorCode.OPERATION_INVALID,
        `no job that can be aborted is active on domain '${name}'`,
        { domain: ident },
      );
    job.abort('abort-job');
    return job;
  }

  /**
   * Takes the slot like {@link JobSlot.run} and keeps it until the returned job is ended. `signal`
   * aborts the wait for the turn and the job until {@link Job.end} lets go of it.
   */
  hold(operation: JobOperation, ident: () => Ident, signal: AbortSignal | undefined): Promise<HeldJob> {
    return new Promise<HeldJob>((resolve, reject) => {
      let handedOut = false;
      const ended = this.run(
        operation,
        ident,
        signal,
        (job) =>
          new Promise<void>((done, fail) => {
            let over = false;
            handedOut = true;
            resolve({
              job,
              end: (error?: unknown) => {
                if (over) return;
                over = true;
                if (error === undefined) done();
                else fail(error);
              },
              ended: ended.then(
                () => undefined,
                () => undefined,
              ),
            });
          }),
      );
      ended.catch((err: unknown) => {
        if (!handedOut) reject(err);
      });
    });
  }

  /** Runs `fn` as the domain's next job once every job queued before it has ended. */
  run<T>(
    operation: JobOperation,
    ident: () => Ident,
    signal: AbortSignal | undefined,
    fn: (job: Job) => T | Promise<T>,
  ): Promise<T> {
    const previous = this.#tail;
    let release!: () => void;
    const mine = new Promise<void>((resolve) => {
      release = resolve;
    });
    this.#tail = previous.then(() => mine);
    return (async () => {
      try {
        await waitTurn(previous, signal, () => abortedWhileWaiting(operation, ident()));
        const job = new Job(operation, ident(), signal);
        this.#current = job;
        const body = async (): Promise<T> => {
          try {
            job.checkAborted();
            return await fn(job);
          } catch (err) {
            throw job.failure(err);
          } finally {
            this.#current = undefined;
            job.end();
          }
        };
        // Traced from the moment the job holds the domain, not while it waits for its turn.
        return await traceJob(operation, ident, body);
      } finally {
        release();
      }
    })();
  }
}

/**
 * Runs `fn` traced on the `virtkit:job` channel (when anyone listens). Every job goes through it:
 * those of the slot, and a destroy, which never waits for the slot.
 */
export function traceJob<T>(operation: JobOperation, ident: () => Ident, fn: () => Promise<T>): Promise<T> {
  if (!tracing(channels.job)) return fn();
  const { name, uuid } = ident();
  return traceAsync(channels.job, { job: operation, domain: { name, uuid } }, fn);
}

async function waitTurn(
  turn: Promise<void>,
  signal: AbortSignal | undefined,
  error: () => VirtError,
): Promise<void> {
  if (!signal) return turn;
  if (signal.aborted) throw error();
  let onAbort!: () => void;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(error());
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    await Promise.race([turn, aborted]);
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

import { ErrorCode, VirtError } from '../errors.js';
import type { DomainDefinition } from '../stable/definition/schema.js';
import type { DomainRef } from '../stable/driver.js';
import type {
  DomainEvent,
  DomainEventType,
  DomainFigures,
  DomainInfo,
  DomainState,
  DomainStatus,
} from '../stable/events.js';
import type { JobInfo, JobOperation } from '../stable/jobs.js';
import { DomainTable, deliverEvent } from './domain-table.js';
import { type Job, JobSlot, NO_JOB } from './jobs.js';

/*
 * What every driver shares, in the manner of Kysely's RuntimeDriver around a dialect's Driver: the
 * closed check, the domain table, the job slot of each domain, the one owner of state transitions
 * and event delivery. A driver extends DriverCore and implements only what differs (how a domain
 * starts, stops, what its runtime holds).
 */

/** Only this module writes a domain's status: every change goes through {@link DriverCore.setState}. */
const writeStatus: unique symbol = Symbol('writeStatus');

/** An event a state change announces: its type and reason. */
export type Announcement = readonly [type: DomainEventType, reason: string];

const SHUTOFF_UNKNOWN: DomainStatus = Object.freeze({ state: 'shutoff', reason: 'unknown' });

/** A domain as every driver holds it: definition, state with its reason, job slot. */
export abstract class CoreDomain {
  def: DomainDefinition;
  #status: DomainStatus = SHUTOFF_UNKNOWN;
  /** The modifying job under way and those waiting for it. */
  readonly jobs = new JobSlot();

  constructor(def: DomainDefinition) {
    this.def = def;
  }

  /** True while the domain has a runtime (running, paused, or starting). */
  abstract get active(): boolean;

  /** The state with its reason; changed only by {@link DriverCore.setState}. */
  get status(): DomainStatus {
    return this.#status;
  }

  get state(): DomainState {
    return this.#status.state;
  }

  get reason(): DomainStatus['reason'] {
    return this.#status.reason;
  }

  /** The identity given in errors and events. */
  get ident(): { name: string; uuid: string } {
    return { name: this.def.name, uuid: this.def.uuid };
  }

  [writeStatus](next: DomainStatus): void {
    this.#status = Object.freeze({ state: next.state, reason: next.reason }) as DomainStatus;
  }
}

/** The shared half of a driver; see the module comment. */
export abstract class DriverCore<D extends CoreDomain> {
  protected readonly domains = new DomainTable<D>();
  readonly #listeners = new Set<(event: DomainEvent) => void>();
  /** Events raised while opening wait here until `connect()` has returned and callers can listen. */
  #held: DomainEvent[] | undefined;
  #closed = false;

  constructor(options: { readonly holdEvents?: boolean } = {}) {
    if (options.holdEvents) this.#held = [];
  }

  /** Records a line about a domain; drivers that keep a log override it. */
  log(_dom: D, _message: string): void {}

  /** Called after every event is delivered, for a driver's own follow-up (e.g. a transient domain). */
  protected afterEvent(_dom: D, _event: DomainEvent): void {}

  /**
   * Called after every state change, before its events go out: a driver that keeps a record of
   * the state (the embedded driver's status file) writes it here.
   */
  protected stateChanged(_dom: D): void {}

  /** Runs a job's body; a driver wraps it, e.g. to record the job in a status file. */
  protected runJob<T>(_dom: D, job: Job, fn: (job: Job) => Promise<T>): Promise<T> {
    return fn(job);
  }

  protected get closed(): boolean {
    return this.#closed;
  }

  protected checkOpen(): void {
    if (this.#closed)
      throw new VirtError(ErrorCode.CONNECTION_CLOSED, 'the connection is closed; open a new one');
  }

  /** The open driver's domain with `uuid`, or NO_DOMAIN. */
  protected domain(uuid: string): D {
    this.checkOpen();
    return this.domains.get(uuid);
  }

  /** Marks the driver closed (new calls fail with CONNECTION_CLOSED); false when it already was. */
  protected markClosed(): boolean {
    if (this.#closed) return false;
    this.#closed = true;
    return true;
  }

  /** Drops every listener: the last step of a close, once operations under way have reported. */
  protected dropListeners(): void {
    this.#listeners.clear();
  }

  /** Delivers, on the next turn, the events held while opening; later events go out at once. */
  protected releaseEvents(): void {
    setImmediate(() => {
      const held = this.#held ?? [];
      this.#held = undefined;
      for (const event of held) deliverEvent(this.#listeners, event);
    });
  }

  subscribe(listener: (event: DomainEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Tells subscribers about `dom`; a state change goes through {@link DriverCore.setState} instead. */
  emit(dom: D, type: DomainEventType, reason: string): void {
    const event: DomainEvent = { type, reason, domain: dom.ident, timestamp: Date.now() };
    if (this.#held) this.#held.push(event);
    else deliverEvent(this.#listeners, event);
    this.afterEvent(dom, event);
  }

  /**
   * The one owner of state transitions: records `next` and announces it. Each announcement is an
   * event `[type, reason]`; a bare event type carries the new state's reason.
   */
  setState(dom: D, next: DomainStatus, ...announce: readonly (DomainEventType | Announcement)[]): void {
    dom[writeStatus](next);
    this.stateChanged(dom);
    for (const a of announce) {
      if (typeof a === 'string') this.emit(dom, a, next.reason);
      else this.emit(dom, a[0], a[1]);
    }
  }

  /**
   * Moves to `next` and announces it, once: when the domain already is in that state (a QMP event
   * and the API call that provoked it both report it) nothing changes.
   *
   * @returns whether the state changed
   */
  changeState(dom: D, next: DomainStatus, event: DomainEventType): boolean {
    if (dom.state === next.state) return false;
    this.setState(dom, next, event);
    return true;
  }

  protected ref(dom: D): DomainRef {
    return { name: dom.def.name, uuid: dom.def.uuid, active: dom.active };
  }

  findDomain(nameOrUuid: string): DomainRef | undefined {
    this.checkOpen();
    const dom = this.domains.find(nameOrUuid);
    return dom && this.ref(dom);
  }

  listDomains(): DomainRef[] {
    this.checkOpen();
    return this.domains
      .values()
      .map((d) => this.ref(d))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  getState(uuid: string): DomainStatus {
    return this.domain(uuid).status;
  }

  /** The info of `dom`: its state and the figures its driver measured. */
  protected info(
    dom: D,
    def: DomainDefinition,
    figures: Omit<DomainFigures, 'vcpus' | 'memoryKiB'>,
  ): DomainInfo {
    return {
      ...dom.status,
      ...figures,
      vcpus: def.vcpu.current ?? def.vcpu.count,
      memoryKiB: def.currentMemoryKiB ?? def.memoryKiB,
    };
  }

  getJobInfo(uuid: string): JobInfo {
    return this.domain(uuid).jobs.current?.info() ?? NO_JOB;
  }

  abortJob(uuid: string): void {
    const dom = this.domain(uuid);
    const job = dom.jobs.abort(dom.def.name, dom.ident);
    this.log(dom, `abortJob: aborting ${job.operation} in phase ${job.phase}`);
  }

  /**
   * Queues `fn` as the domain's next job. When its turn comes the domain must still be defined:
   * an operation queued behind an undefine fails with NO_DOMAIN instead of acting on a domain no
   * driver lists (a start would otherwise run a QEMU nobody could ever find again).
   */
  protected job<T>(
    dom: D,
    operation: JobOperation,
    signal: AbortSignal | undefined,
    fn: (job: Job) => T | Promise<T>,
  ): Promise<T> {
    return dom.jobs.run(
      operation,
      () => dom.ident,
      signal,
      async (job) => {
        this.checkStillDefined(dom);
        return this.runJob(dom, job, async (j) => fn(j));
      },
    );
  }

  protected checkStillDefined(dom: D): void {
    if (this.domains.find(dom.def.uuid) !== dom) {
      throw new VirtError(
        ErrorCode.NO_DOMAIN,
        `domain '${dom.def.name}' was undefined before this operation could run`,
        { domain: dom.ident },
      );
    }
  }

  /**
   * Before a destroy: ends the job under way, which rolls back and whose caller learns that a
   * destroy ended it. A shutdown is left alone: the destroy reaches its goal, and the shutdown
   * returns once the domain is off.
   */
  protected abortForDestroy(dom: D): void {
    const job = dom.jobs.current;
    if (job && job.operation !== 'shutdown') job.abort('destroy');
  }
}

/**
 * The refusal of a graceful destroy of a domain with no running process: it may not kill a start
 * under way (that would be a plain destroy), nor has it anything to signal otherwise.
 */
export function gracefulDestroyRefused(ident: { name: string; uuid: string }, starting: boolean): VirtError {
  return new VirtError(
    ErrorCode.OPERATION_INVALID,
    starting
      ? `domain '${ident.name}' is still starting; a graceful destroy needs a running domain`
      : `domain '${ident.name}' is not running`,
    { domain: ident },
  );
}

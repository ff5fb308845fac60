/**
 * The helper's bound on work in flight, and its order: at most `maxInFlight` requests execute at
 * once over all clients; more wait in queues served round-robin between uids and, within one uid,
 * between sources (peer processes), so that one uid's flood delays another uid by at most one turn
 * per waiting uid, and one process of a uid (with however many connections) delays another
 * process of it likewise. Past `maxQueued` (and past half of it for one uid) a request is refused
 * at once.
 *
 * A task runs at once when a slot is free and nothing waits, unless tasks have kept the helper
 * busy for `turnMs` without a break (time between tasks pays the work back): then it waits, and
 * the queue goes on in a later turn of the event loop, after the loop has read what else arrived,
 * `turnMs` of work per turn. A burst of requests from one process (a hundred connections that all
 * became readable at once) therefore cannot hold back a request of another process for longer
 * than about `turnMs` and one task, and a helper that keeps up pays nothing for this.
 */
export class WorkQueue {
  readonly #maxInFlight: number;
  readonly #maxQueued: number;
  readonly #maxQueuedPerUid: number;
  readonly #turnMs: number;
  readonly #now: () => number;
  #running = 0;
  #queued = 0;
  /** Waiting tasks per uid, then per source; Maps keep insertion order, the round-robin order. */
  readonly #waiting = new Map<number, { count: number; sources: Map<number, Array<() => void>> }>();
  /**
   * Milliseconds of tasks' synchronous parts not yet paid back by idle time (as of `#lastEnd`),
   * or spent in this turn of the queue.
   */
  #spent = 0;
  /** When the last task's synchronous part ended, by the clock. */
  #lastEnd = 0;
  /** A turn (setImmediate) is scheduled: it resets `#spent` and goes on with the queue. */
  #turnScheduled = false;
  #draining = false;

  /**
   * @param maxInFlight - tasks executing at once
   * @param maxQueued - tasks waiting at most (one uid at most half of them)
   * @param turnMs - synchronous work per turn of the event loop before tasks wait for the next
   * @param now - the clock work is measured with, in ms
   */
  constructor(
    maxInFlight: number,
    maxQueued: number,
    turnMs = Number.POSITIVE_INFINITY,
    now: () => number = () => performance.now(),
  ) {
    this.#maxInFlight = maxInFlight;
    this.#maxQueued = maxQueued;
    this.#maxQueuedPerUid = Math.max(1, Math.floor(maxQueued / 2));
    this.#turnMs = turnMs;
    this.#now = now;
  }

  /** Requests executing now. */
  get running(): number {
    return this.#running;
  }

  /** Requests waiting for a slot. */
  get queued(): number {
    return this.#queued;
  }

  /**
   * Runs `task` now if a slot is free (and this turn's time is not used up), else once one is; the
   * slot is held until the promise it returns settles (a task that returns nothing is done).
   *
   * @param source - who submits within the uid (the peer's pid); waiting sources take turns
   * @returns false (and `task` never runs) when the queue is full for this uid or for everyone
   */
  submit(uid: number, task: () => Promise<void> | undefined | void, source = 0): boolean {
    if (this.#running < this.#maxInFlight && this.#queued === 0 && this.#busy() < this.#turnMs) {
      this.#start(task);
      return true;
    }
    const mine = this.#waiting.get(uid);
    if (this.#queued >= this.#maxQueued || (mine?.count ?? 0) >= this.#maxQueuedPerUid) return false;
    const run = () => this.#start(task);
    if (!mine) this.#waiting.set(uid, { count: 1, sources: new Map([[source, [run]]]) });
    else {
      mine.count++;
      const tasks = mine.sources.get(source);
      if (tasks) tasks.push(run);
      else mine.sources.set(source, [run]);
    }
    this.#queued++;
    if (this.#running < this.#maxInFlight) this.#scheduleTurn();
    return true;
  }

  /** The work not yet paid back by idle time, as of now. */
  #busy(): number {
    const now = this.#now();
    this.#spent = Math.max(0, this.#spent - (now - this.#lastEnd));
    this.#lastEnd = now;
    return this.#spent;
  }

  #start(task: () => Promise<void> | undefined | void): void {
    this.#running++;
    const t0 = this.#now();
    let done: Promise<void> | undefined | void;
    try {
      done = task();
    } catch {
      done = undefined;
    }
    this.#lastEnd = this.#now();
    this.#spent += this.#lastEnd - t0;
    if (done instanceof Promise) {
      done.then(
        () => this.#finish(),
        () => this.#finish(),
      );
    } else this.#finish();
  }

  #finish(): void {
    this.#running--;
    this.#drain();
  }

  /**
   * Starts waiting tasks while slots are free and this turn has time left; a new turn (`fresh`)
   * starts one in any case, so that a task longer than a turn cannot stall the queue.
   */
  #drain(fresh = false): void {
    // A synchronous task finishes inside #start: the loop below goes on with the next one.
    if (this.#draining) return;
    this.#draining = true;
    try {
      for (let first = fresh; this.#running < this.#maxInFlight && this.#queued > 0; first = false) {
        if (this.#spent >= this.#turnMs && !first) {
          this.#scheduleTurn();
          return;
        }
        // The uid first in line goes to the back after one task, and so does its source.
        const [uid, mine] = this.#waiting.entries().next().value as [
          number,
          { count: number; sources: Map<number, Array<() => void>> },
        ];
        const [source, tasks] = mine.sources.entries().next().value as [number, Array<() => void>];
        const next = tasks.shift() as () => void;
        mine.sources.delete(source);
        if (tasks.length > 0) mine.sources.set(source, tasks);
        this.#waiting.delete(uid);
        if (--mine.count > 0) this.#waiting.set(uid, mine);
        this.#queued--;
        next();
      }
    } finally {
      this.#draining = false;
    }
  }

  #scheduleTurn(): void {
    if (this.#turnScheduled) return;
    this.#turnScheduled = true;
    setImmediate(() => {
      this.#turnScheduled = false;
      this.#spent = 0;
      this.#lastEnd = this.#now();
      this.#drain(true);
    });
  }
}

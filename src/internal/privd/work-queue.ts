/**
 * The helper's bound on work in flight: at most `maxInFlight` requests execute at once over all
 * clients; more wait in per-uid queues served round-robin, so one uid's flood delays another uid by
 * at most one turn per waiting uid; past `maxQueued` (and past half of it for one uid) a request is
 * refused at once.
 */
export class WorkQueue {
  readonly #maxInFlight: number;
  readonly #maxQueued: number;
  readonly #maxQueuedPerUid: number;
  #running = 0;
  #queued = 0;
  /** Waiting tasks per uid; a Map keeps insertion order, which is the round-robin order. */
  readonly #waiting = new Map<number, Array<() => void>>();

  constructor(maxInFlight: number, maxQueued: number) {
    this.#maxInFlight = maxInFlight;
    this.#maxQueued = maxQueued;
    this.#maxQueuedPerUid = Math.max(1, Math.floor(maxQueued / 2));
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
   * Runs `task` now if a slot is free, else once one is; the slot is held until its promise settles.
   *
   * @returns false (and `task` never runs) when the queue is full for this uid or for everyone
   */
  submit(uid: number, task: () => Promise<void>): boolean {
    const run = () => {
      this.#running++;
      let done: Promise<void>;
      try {
        done = task();
      } catch {
        done = Promise.resolve();
      }
      done.then(
        () => this.#release(),
        () => this.#release(),
      );
    };
    if (this.#running < this.#maxInFlight && this.#queued === 0) {
      run();
      return true;
    }
    const mine = this.#waiting.get(uid);
    if (this.#queued >= this.#maxQueued || (mine?.length ?? 0) >= this.#maxQueuedPerUid) return false;
    if (mine) mine.push(run);
    else this.#waiting.set(uid, [run]);
    this.#queued++;
    return true;
  }

  #release(): void {
    this.#running--;
    while (this.#running < this.#maxInFlight && this.#queued > 0) {
      // The uid first in line goes to the back after one task: round-robin between uids.
      const [uid, tasks] = this.#waiting.entries().next().value as [number, Array<() => void>];
      const next = tasks.shift() as () => void;
      this.#waiting.delete(uid);
      if (tasks.length > 0) this.#waiting.set(uid, tasks);
      this.#queued--;
      next();
    }
  }
}

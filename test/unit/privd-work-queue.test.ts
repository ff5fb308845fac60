import { describe, expect, it } from 'vitest';
import { WorkQueue } from '../../src/internal/privd/work-queue.js';

/** A task that records when it starts and finishes when `release()` is called. */
function gate() {
  let open: () => void = () => {};
  const done = new Promise<void>((r) => {
    open = r;
  });
  return { done, open };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('WorkQueue', () => {
  it('runs at most maxInFlight at once and starts the next as one settles', async () => {
    const q = new WorkQueue(2, 10);
    const started: number[] = [];
    const gates = Array.from({ length: 4 }, () => gate());
    gates.forEach((g, i) => {
      expect(
        q.submit(1, async () => {
          started.push(i);
          await g.done;
        }),
      ).toBe(true);
    });
    expect(started).toEqual([0, 1]);
    expect([q.running, q.queued]).toEqual([2, 2]);
    gates[0]?.open();
    await tick();
    expect(started).toEqual([0, 1, 2]);
    gates[1]?.open();
    gates[2]?.open();
    await tick();
    expect(started).toEqual([0, 1, 2, 3]);
    gates[3]?.open();
    await tick();
    expect([q.running, q.queued]).toEqual([0, 0]);
  });

  it('serves waiting uids round-robin, so a flood from one uid delays another by one turn', async () => {
    const q = new WorkQueue(1, 100);
    const order: string[] = [];
    const first = gate();
    q.submit(1, () => first.done);
    for (let i = 0; i < 5; i++) q.submit(1, async () => void order.push(`a${i}`));
    q.submit(2, async () => void order.push('b0'));
    q.submit(2, async () => void order.push('b1'));
    first.open();
    for (let i = 0; i < 10; i++) await tick();
    expect(order).toEqual(['a0', 'b0', 'a1', 'b1', 'a2', 'a3', 'a4']);
  });

  it('refuses past maxQueued, and one uid past half of it, while another uid still gets in', () => {
    const q = new WorkQueue(1, 4);
    const never = new Promise<void>(() => {});
    expect(q.submit(1, () => never)).toBe(true); // running
    expect(q.submit(1, () => never)).toBe(true);
    expect(q.submit(1, () => never)).toBe(true);
    expect(q.submit(1, () => never)).toBe(false); // uid 1 holds half the queue
    expect(q.submit(2, () => never)).toBe(true);
    expect(q.submit(2, () => never)).toBe(true);
    expect(q.submit(3, () => never)).toBe(false); // the queue is full
    expect(q.queued).toBe(4);
  });

  it('frees the slot of a task that throws or rejects', async () => {
    const q = new WorkQueue(1, 10);
    q.submit(1, () => {
      throw new Error('sync');
    });
    q.submit(1, () => Promise.reject(new Error('async')));
    let ran = false;
    q.submit(1, async () => {
      ran = true;
    });
    for (let i = 0; i < 5; i++) await tick();
    expect(ran).toBe(true);
    expect(q.running).toBe(0);
  });
});

describe('WorkQueue turns', () => {
  /** The queue's clock: only tasks move it, so no real time (or preemption) changes the order. */
  let clock = 0;
  const now = () => clock;
  /** A synchronous task that takes 2 ms by that clock, longer than a turn of 1 ms. */
  const slow = (order: string[], name: string) => () => {
    clock += 2;
    order.push(name);
  };
  const settle = async () => {
    for (let i = 0; i < 20; i++) await tick();
  };

  it('serves the sources (peer processes) of one uid round-robin', async () => {
    const q = new WorkQueue(1, 100);
    const order: string[] = [];
    const first = gate();
    q.submit(1, () => first.done, 10);
    for (let i = 0; i < 3; i++) q.submit(1, async () => void order.push(`a${i}`), 10);
    q.submit(1, async () => void order.push('b0'), 20);
    q.submit(1, async () => void order.push('b1'), 20);
    first.open();
    await settle();
    expect(order).toEqual(['a0', 'b0', 'a1', 'b1', 'a2']);
  });

  it('runs a burst past its turn in later turns, where another source takes its place in line', async () => {
    const q = new WorkQueue(32, 100, 1, now);
    const order: string[] = [];
    // A burst from source 10, all submitted in one turn: the first uses the turn up, the rest wait.
    for (let i = 0; i < 5; i++) expect(q.submit(1, slow(order, `a${i}`), 10)).toBe(true);
    expect(order).toEqual(['a0']);
    expect(q.queued).toBe(4);
    // And one request of source 20 arrives in the meantime.
    q.submit(1, slow(order, 'b0'), 20);
    await settle();
    expect(order).toEqual(['a0', 'a1', 'b0', 'a2', 'a3', 'a4']);
    expect([q.running, q.queued]).toEqual([0, 0]);
  });

  it('lets a request that arrives after a turn in before the rest of a burst', async () => {
    const q = new WorkQueue(32, 100, 1, now);
    const order: string[] = [];
    for (let i = 0; i < 5; i++) q.submit(1, slow(order, `a${i}`), 10);
    await tick();
    expect(order).toEqual(['a0', 'a1']);
    q.submit(1, slow(order, 'b0'), 20);
    await settle();
    expect(order).toEqual(['a0', 'a1', 'a2', 'b0', 'a3', 'a4']);
  });

  it('runs quick tasks at once while the turn has time left', () => {
    const q = new WorkQueue(32, 100, 1000, now);
    const order: string[] = [];
    for (let i = 0; i < 5; i++) q.submit(1, () => void order.push(`a${i}`), 10);
    expect(order).toEqual(['a0', 'a1', 'a2', 'a3', 'a4']);
    expect([q.running, q.queued]).toEqual([0, 0]);
  });
});

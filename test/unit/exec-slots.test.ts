import { describe, expect, it } from 'vitest';
import { EXEC_SLOTS, execSlot } from '../../src/drivers/qemu/process.js';

/** Resolves to 'pending' when `p` has not settled after the pending microtasks and one macrotask. */
async function state<T>(p: Promise<T>): Promise<T | 'pending'> {
  return Promise.race([p, new Promise<'pending'>((r) => setImmediate(() => r('pending')))]);
}

const never = new Promise<void>(() => undefined);

describe('execSlot: how many QEMUs initialise at once', () => {
  it('grants EXEC_SLOTS at once, holds the next until one is released, and counts releases once', async () => {
    const held = await Promise.all(Array.from({ length: EXEC_SLOTS }, () => execSlot(never)));
    const next = execSlot(never);
    const after = execSlot(never);
    expect(await state(next)).toBe('pending');
    // A release called twice gives back one slot, not two.
    held[0]?.();
    held[0]?.();
    const granted = await next;
    expect(typeof granted).toBe('function');
    expect(await state(after)).toBe('pending');
    held[1]?.();
    const grantedAfter = await after;
    for (const r of [...held.slice(2), granted, grantedAfter]) r();
    // Everything was given back, exactly: a full set can be taken again, and not one more.
    const again = await Promise.all(Array.from({ length: EXEC_SLOTS }, () => execSlot(never)));
    let drop!: () => void;
    const extra = execSlot(new Promise<void>((r) => (drop = r)));
    expect(await state(extra)).toBe('pending');
    drop();
    (await extra)();
    for (const r of again) r();
  });

  it('lets a waiter whose stub is gone go at once, without taking a slot from the others', async () => {
    const held = await Promise.all(Array.from({ length: EXEC_SLOTS }, () => execSlot(never)));
    let kill!: () => void;
    const gone = new Promise<void>((r) => {
      kill = r;
    });
    const killed = execSlot(gone);
    const waiting = execSlot(never);
    expect(await state(killed)).toBe('pending');
    kill();
    const noop = await killed;
    noop();
    // The killed waiter's no-op release freed nothing: the other one still waits for a real slot.
    expect(await state(waiting)).toBe('pending');
    held[0]?.();
    const r = await waiting;
    r();
    for (const h of held.slice(1)) h();
  });
});

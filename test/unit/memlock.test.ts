import { describe, expect, it } from 'vitest';
import { limitCovers, memLockNeed } from '../../src/privileged/memlock.js';
import { resolveDefinition } from '../../src/stable/definition/validate.js';

const def = (extra: object = {}) =>
  resolveDefinition({ name: 'm', type: 'kvm', memoryKiB: 1048576, ...extra });
const GiB = 1024n ** 3n;

describe("the memlock amount (libvirt's rules)", () => {
  it('is untouched for an ordinary domain', () => {
    expect(memLockNeed(def())).toBeUndefined();
  });
  it('is the memtune hard_limit when one is set, locked or not', () => {
    expect(memLockNeed(def({ memtune: { hardLimitKiB: 2097152 } }))).toMatchObject({
      bytes: 2n * GiB,
      breakdown: { rule: 'hard_limit', hardLimitBytes: 2n * GiB, guestMemoryBytes: GiB },
    });
    expect(
      memLockNeed(def({ memtune: { hardLimitKiB: 4096 }, memoryBacking: { locked: true } }))?.bytes,
    ).toBe(4096n * 1024n);
  });
  it('is unlimited for locked memory without a hard_limit', () => {
    expect(memLockNeed(def({ memoryBacking: { locked: true } }))).toMatchObject({
      bytes: 'unlimited',
      breakdown: { rule: 'locked' },
    });
  });
  it('is N x guest memory + 1 GiB for N passthrough (VFIO/NVMe/vDPA) devices, counting maxMemory', () => {
    expect(memLockNeed(def(), 2)).toMatchObject({
      bytes: 3n * GiB,
      breakdown: { rule: 'passthrough', passthroughDevices: 2 },
    });
    expect(memLockNeed(def({ maxMemory: { kib: 4194304, slots: 2 } }), 1)?.bytes).toBe(5n * GiB);
  });
  it('compares limits with unlimited on either side', () => {
    expect(limitCovers('unlimited', 'unlimited')).toBe(true);
    expect(limitCovers(8n, 'unlimited')).toBe(false);
    expect(limitCovers(8n, 8n)).toBe(true);
    expect(limitCovers(7n, 8n)).toBe(false);
  });
});

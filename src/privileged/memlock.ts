import type { DomainDefinition } from '../stable/definition/schema.js';
import type { OperationArgs } from './operations.js';

type Breakdown = OperationArgs<'process.setMaxMemLock'>['breakdown'];

/** The locked-memory limit a domain needs, and how it was computed. */
export interface MemLockNeed {
  readonly bytes: bigint | 'unlimited';
  readonly breakdown: Breakdown;
}

const GiB = 1024n ** 3n;

/**
 * libvirt's rule (qemuDomainGetMemLockLimitBytes), so that consumers never re-implement it:
 * an explicit memtune hard_limit wins; else locked memory needs no limit at all; else each
 * VFIO/NVMe/vDPA device may pin all guest memory once, plus 1 GiB for the IOMMU tables and
 * I/O buffers; else QEMU needs no locked memory and the limit is left alone (undefined).
 */
export function memLockNeed(def: DomainDefinition, passthroughDevices = 0): MemLockNeed | undefined {
  const guestMemoryBytes = BigInt(def.maxMemory?.kib ?? def.memoryKiB) * 1024n;
  const hardLimit = def.memtune?.hardLimitKiB;
  const base = { guestMemoryBytes, passthroughDevices };
  if (hardLimit !== undefined) {
    const bytes = BigInt(hardLimit) * 1024n;
    return {
      bytes,
      breakdown: {
        ...base,
        rule: 'hard_limit',
        hardLimitBytes: bytes,
        explanation: `memtune hard_limit ${hardLimit} KiB`,
      },
    };
  }
  if (def.memoryBacking?.locked) {
    return {
      bytes: 'unlimited',
      breakdown: {
        ...base,
        rule: 'locked',
        explanation: 'memoryBacking locked without hard_limit: unlimited',
      },
    };
  }
  if (passthroughDevices > 0) {
    const bytes = BigInt(passthroughDevices) * guestMemoryBytes + GiB;
    return {
      bytes,
      breakdown: {
        ...base,
        rule: 'passthrough',
        explanation: `${passthroughDevices} x guest memory ${guestMemoryBytes} B + 1 GiB`,
      },
    };
  }
  return undefined;
}

/** True when a limit is at least `needed`. */
export function limitCovers(limit: bigint | 'unlimited', needed: bigint | 'unlimited'): boolean {
  if (limit === 'unlimited') return true;
  return needed !== 'unlimited' && limit >= needed;
}

import type { HandlerTable } from './handler-table.js';

/**
 * How the internal entry point reaches a driver: a property under a registry symbol, so that the
 * ESM and CJS builds (or two installed copies) find the same handler table instead of each
 * silently keeping its own. The stable entry point never exports it.
 */
export const INTERNAL_SEAM: unique symbol = Symbol.for('virtkit.internal.seam') as never;

/** Bumped whenever the shape of {@link InternalSeam} changes; a mismatch fails loudly. */
export const SEAM_VERSION = 1;

/** What a driver that accepts handlers exposes to the internal entry point. */
export interface InternalSeam {
  readonly seamVersion: number;
  /** The internal API version of the copy of virtkit that created the driver. */
  readonly internalApiVersion: string;
  readonly driverKind: 'qemu-embed' | 'test';
  readonly handlers: HandlerTable;
}

/** A value that may carry a seam (a Connection or its driver). */
export interface SeamCarrier {
  readonly [INTERNAL_SEAM]?: InternalSeam;
}

import { expect } from 'vitest';
import { VirtError } from '../../src/errors.js';

/** What `fn` throws; the test fails unless it throws a {@link VirtError}. */
export function thrownVirtError(fn: () => unknown): VirtError {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(VirtError.is(err)).toBe(true);
  return err as VirtError;
}

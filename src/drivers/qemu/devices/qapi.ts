/** A QAPI argument object, as QMP takes it and as QEMU's JSON command-line options take it. */
export type QapiObject = { readonly [key: string]: QapiValue };

/** A QAPI value. */
export type QapiValue = string | number | boolean | null | QapiObject | readonly QapiValue[];

/** Marks a string value as a 64-bit unsigned integer (see {@link u64}). */
const U64 = '\u0000u64:';

/**
 * A uint64 QAPI value (a disk's WWN) that a JavaScript number cannot hold exactly: a marked string
 * that {@link qapiJson} writes as the bare integer QEMU expects.
 */
export function u64(value: bigint): string {
  return `${U64}${value.toString()}`;
}

/** JSON text of a QAPI value, with {@link u64} values as integers. */
export function qapiJson(value: unknown): string {
  return JSON.stringify(value).replace(/"\\u0000u64:(\d+)"/g, '$1');
}

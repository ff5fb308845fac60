import semver from 'semver';
import { ErrorCode, VirtError } from '../errors.js';

/**
 * The version of the internal API this copy of virtkit implements. Pass the version your code was
 * written against as a literal (`apiVersion: '1.0'`), never this constant: passing it back
 * defeats the check.
 *
 * @public
 */
export const INTERNAL_API_VERSION = '1.0' as const;

/**
 * The internal API version a consumer states, typed as the literal of this release: code written
 * against another version fails to compile as well as at run time.
 *
 * @public
 */
export type InternalApiVersion = typeof INTERNAL_API_VERSION;

/**
 * Checks the version a consumer was written against: MAJOR.MINOR must equal ours exactly, since
 * the internal API gives no compatibility promise between any two versions.
 */
export function checkInternalVersion(requested: unknown, ours: string = INTERNAL_API_VERSION): void {
  const theirs = typeof requested === 'string' ? semver.coerce(requested) : null;
  const mine = semver.coerce(ours) as semver.SemVer;
  if (
    theirs &&
    `${requested}` === `${theirs.major}.${theirs.minor}` &&
    theirs.major === mine.major &&
    theirs.minor === mine.minor
  ) {
    return;
  }
  throw new VirtError(
    ErrorCode.INTERNAL_VERSION_MISMATCH,
    `this code was written against virtkit internal API ${JSON.stringify(requested)}, but this virtkit implements internal API ${ours}; ` +
      `read the "Internal" sections of virtkit's CHANGELOG.md between the two, adapt your handlers, then pass apiVersion: '${ours}'`,
    { requested, implemented: ours },
  );
}

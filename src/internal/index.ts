/**
 * virtkit/internal: the deliberately unstable API for pinned consumers. It changes in any release;
 * a consumer states the version it was written against and fails at once on another.
 *
 * @packageDocumentation
 */

/**
 * The version of the internal API this copy of virtkit implements. Pass the version your code was
 * written against as a literal, never this constant: passing it back defeats the check.
 *
 * @public
 */
export const INTERNAL_API_VERSION = '1.0' as const;

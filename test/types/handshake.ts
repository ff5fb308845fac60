/*
 * Compile-time half of the handshake test, checked by `tsc --noEmit` in the test command: a
 * consumer pinned to another internal API version does not compile. If the version literal ever
 * widens to `string`, the @ts-expect-error lines become unused and tsc fails.
 */

import { openInternal } from '../../src/internal/index.js';
import type { Connection } from '../../src/stable/index.js';

export function pinnedToOtherVersions(conn: Connection): void {
  // @ts-expect-error a consumer written against internal API 1.1 must not compile against 1.0
  openInternal(conn, { apiVersion: '1.1' });
  // @ts-expect-error nor one written against 2.0
  openInternal(conn, { apiVersion: '2.0' });
  // @ts-expect-error nor one that passes an arbitrary string
  openInternal(conn, { apiVersion: 'latest' as string });
  openInternal(conn, { apiVersion: '1.0' });
}

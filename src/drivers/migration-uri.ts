import { isAbsolute } from 'node:path';
import { ErrorCode, VirtError } from '../errors.js';

/** Where a migration stream goes: a TCP endpoint or a UNIX socket. */
export type MigrationAddress =
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number }
  | { readonly kind: 'unix'; readonly path: string };

/**
 * Parses `tcp:HOST:PORT` (HOST may be `[v6]`) or `unix:/absolute/path`, the two forms QEMU's
 * `migrate` and `migrate-incoming` accept that virtkit supports; anything else is refused before
 * any process starts.
 */
export function parseMigrationUri(uri: string, field: string): MigrationAddress {
  const bad = (why: string) =>
    new VirtError(
      ErrorCode.INVALID_URI,
      `invalid migration address '${uri}': ${why}; use tcp:HOST:PORT or unix:/absolute/path`,
      { field },
    );
  if (typeof uri !== 'string') throw bad('not a string');
  if (uri.startsWith('unix:')) {
    const path = uri.slice(5);
    if (!isAbsolute(path) || path.includes('\0')) throw bad('the socket path must be absolute');
    return { kind: 'unix', path };
  }
  if (uri.startsWith('tcp:')) {
    const m = /^tcp:(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(uri);
    const port = Number(m?.[2]);
    if (!m || port > 65535) throw bad('expected tcp:HOST:PORT with PORT 0..65535');
    return { kind: 'tcp', host: m[1] as string, port };
  }
  throw bad(`unknown scheme '${uri.split(':')[0]}'`);
}

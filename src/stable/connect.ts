import { openQemuDriver } from '../drivers/qemu/driver.js';
import { openTestDriver } from '../drivers/test/driver.js';
import { Connection } from './connection.js';
import type { Driver } from './driver.js';
import { ErrorCode, VirtError } from './errors.js';

/**
 * Options of {@link connect}.
 *
 * @public
 */
export interface ConnectOptions {
  /**
   * Static plugin modules supplying privileged-operation handlers (see `virtkit/internal`), loaded
   * at connect time in addition to those listed in `<root>/etc/virtkit.json`.
   */
  readonly plugins?: readonly string[];
}

/** A parsed connection URI. @internal */
export interface ParsedUri {
  readonly scheme: string;
  readonly path: string;
  readonly params: URLSearchParams;
}

/** @internal */
export function parseUri(uri: string): ParsedUri {
  if (typeof uri !== 'string')
    throw new VirtError(ErrorCode.INVALID_URI, 'the connection URI must be a string');
  const m = /^([a-z][a-z0-9+.-]*):\/\/([^/?#]*)(\/[^?#]*)?(?:\?([^#]*))?$/i.exec(uri);
  if (!m) {
    throw new VirtError(
      ErrorCode.INVALID_URI,
      `malformed connection URI '${uri}': expected e.g. 'qemu:///embed?root=/var/lib/app/virt'`,
    );
  }
  if (m[2]) {
    throw new VirtError(
      ErrorCode.INVALID_URI,
      `remote URIs are not supported ('${m[2]}'); use an embedded driver`,
    );
  }
  return {
    scheme: (m[1] as string).toLowerCase(),
    path: m[3] ?? '/',
    params: new URLSearchParams(m[4] ?? ''),
  };
}

/**
 * Opens a connection. `qemu:///embed?root=/abs/path` opens the embedded QEMU driver on that root
 * (creating its layout and taking its lock); the driver lives in this process and the QEMU
 * processes it starts outlive it.
 *
 * `test:///default` opens a fresh, empty, in-memory test driver for your own unit tests: the same
 * validation, errors, states and events as the embedded driver, but no files, no processes and no
 * lock (`getInfo().pid` is always null); every call opens a new one, and closing it forgets its
 * domains.
 *
 * @public
 */
export async function connect(uri: string, options: ConnectOptions = {}): Promise<Connection> {
  const parsed = parseUri(uri);
  let driver: Driver;
  switch (parsed.scheme) {
    case 'qemu':
      driver = await openQemuDriver(uri, parsed, options);
      break;
    case 'test':
      driver = await openTestDriver(uri, parsed, options);
      break;
    default:
      throw new VirtError(
        ErrorCode.INVALID_URI,
        `unknown driver '${parsed.scheme}' in '${uri}': use qemu:///embed or test:///default`,
      );
  }
  return new Connection(driver);
}

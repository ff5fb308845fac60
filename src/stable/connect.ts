import { z } from 'zod';
import { ErrorCode, errorMessage, VirtError } from '../errors.js';
import { Connection } from './connection.js';
import { startControlServer } from './control/server.js';
import type { Driver } from './driver.js';
import { packageVersion } from './package-version.js';

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
  /**
   * Serve the stable API on `<root>/run/control.sock` while this connection is open, so the
   * `virtkit` command can manage the root this driver holds (embedded driver only). The socket has
   * mode 0600 and every peer is checked with SO_PEERCRED: the driver's own uid and root may use it,
   * and the uids listed here. Handlers and `virtkit/internal` are never reachable through it. The
   * socket never keeps the process alive. Default: `controlSocket` of `<root>/etc/virtkit.json`,
   * else off.
   */
  readonly controlSocket?: boolean | { readonly uids?: readonly number[] };
}

const connectOptionsSchema = z.strictObject({
  plugins: z.array(z.string()).readonly().optional(),
  controlSocket: z
    .union([
      z.boolean(),
      z.strictObject({
        uids: z.array(z.number().int().min(0).max(0xffff_fffe)).max(1024).readonly().optional(),
      }),
    ])
    .optional(),
});

/** A parsed connection URI. @internal */
export interface ParsedUri {
  readonly scheme: string;
  readonly path: string;
  readonly params: URLSearchParams;
}

/**
 * Opens a driver for a URI of its scheme. The package entry registers the built-in ones
 * (src/builtin-drivers.ts); `connect` knows drivers only through this registry, never by import.
 *
 * @internal
 */
export type DriverOpener = (uri: string, parsed: ParsedUri, options: ConnectOptions) => Promise<Driver>;

const drivers = new Map<string, DriverOpener>();

/**
 * Makes {@link connect} open URIs of `scheme` with `open`. Registering the same opener again is a
 * no-op (every entry point registers the built-in drivers); another opener for a taken scheme is a
 * bug and throws.
 *
 * @internal
 */
export function registerDriver(scheme: string, open: DriverOpener): void {
  const known = drivers.get(scheme);
  if (known && known !== open) {
    throw new VirtError(ErrorCode.INTERNAL_ERROR, `a driver for '${scheme}:' is already registered`, {
      scheme,
    });
  }
  drivers.set(scheme, open);
}

const SCHEME_AND_SLASHES = /^[a-z][a-z0-9+.-]*:\/\//i;

/**
 * Parses a connection URI with the WHATWG `URL` parser. Query values are percent-decoded (and `+`
 * means a space, as in any query string), so any root path fits when encoded with
 * `encodeURIComponent`. What the parser would silently drop or reinterpret is refused instead:
 * a fragment (an unencoded `#`), a parameter given twice, a NUL byte.
 *
 * @internal
 */
export function parseUri(uri: string): ParsedUri {
  if (typeof uri !== 'string')
    throw new VirtError(ErrorCode.INVALID_URI, 'the connection URI must be a string');
  const malformed = (why: string): VirtError =>
    new VirtError(
      ErrorCode.INVALID_URI,
      `malformed connection URI '${uri}': ${why}; expected e.g. 'qemu:///embed?root=/var/lib/app/virt' (percent-encode the root with encodeURIComponent)`,
    );
  let url: URL;
  try {
    if (!SCHEME_AND_SLASHES.test(uri)) throw new Error('no scheme');
    url = new URL(uri);
  } catch {
    throw malformed('not a URI of the form scheme:///path?query');
  }
  if (url.host !== '' || url.username !== '' || url.password !== '') {
    throw new VirtError(
      ErrorCode.INVALID_URI,
      `remote URIs are not supported ('${url.host}'); use an embedded driver`,
    );
  }
  if (url.hash !== '' || uri.includes('#')) {
    throw malformed("it has a fragment: a '#' in the root must be percent-encoded as %23");
  }
  const params = url.searchParams;
  const seen = new Set<string>();
  for (const [key, value] of params) {
    if (seen.has(key)) throw malformed(`the parameter '${key}' is given twice`);
    seen.add(key);
    if (value.includes('\0') || key.includes('\0'))
      throw malformed(`the parameter '${key}' contains a NUL byte`);
  }
  return {
    scheme: url.protocol.slice(0, -1).toLowerCase(),
    path: url.pathname === '' ? '/' : url.pathname,
    params,
  };
}

/**
 * Opens a connection. `qemu:///embed?root=/abs/path` opens the embedded QEMU driver on that root
 * (creating its layout and taking its lock); the driver lives in this process and the QEMU
 * processes it starts outlive it. The URI is parsed as a URL: percent-encode the root
 * (`'qemu:///embed?root=' + encodeURIComponent(root)`) and any path works, including one with
 * `&`, `#`, `%`, `+` or spaces; an unencoded `#` is refused rather than cutting the root short.
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
  const checked = connectOptionsSchema.safeParse(options);
  if (!checked.success) {
    const issue = checked.error.issues[0];
    const field = issue?.path.join('.') ?? '';
    throw new VirtError(
      ErrorCode.OPERATION_INVALID,
      `invalid connect option '${field}': ${issue?.message ?? 'malformed'}`,
      { path: field },
    );
  }
  const open = drivers.get(parsed.scheme);
  if (!open && drivers.size === 0) {
    // Only a program that imports src/stable/ instead of the package entry gets here.
    throw new VirtError(
      ErrorCode.INTERNAL_ERROR,
      `no driver is registered, so '${uri}' cannot be opened: import connect from the package entry ('virtkit', src/index.ts), which registers the built-in drivers`,
      { scheme: parsed.scheme, registered: [] },
    );
  }
  if (!open) {
    throw new VirtError(
      ErrorCode.INVALID_URI,
      `unknown driver '${parsed.scheme}' in '${uri}': use qemu:///embed or test:///default`,
      { scheme: parsed.scheme, registered: [...drivers.keys()] },
    );
  }
  const driver = await open(uri, parsed, options);
  const conn = new Connection(driver);
  if (driver.controlSocket) {
    const settings = driver.controlSocket;
    try {
      const server = startControlServer(conn, {
        path: settings.path,
        uids: settings.uids,
        version: packageVersion(),
        log: (message) => driver.record?.(message),
      });
      conn.beforeClose(() => server.close());
    } catch (err) {
      await conn.close();
      throw VirtError.is(err) ? err : new VirtError(ErrorCode.SYSTEM_ERROR, errorMessage(err));
    }
  }
  return conn;
}

import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { rootLayout } from '../drivers/qemu/root.js';
import { ErrorCode, VirtError } from '../errors.js';
import { connect, parseUri } from '../stable/connect.js';
import type { Connection } from '../stable/connection.js';
import { ControlClient } from '../stable/control/client.js';
import {
  type OperationArgs,
  type OperationName,
  type OperationResult,
  runOperation,
} from '../stable/control/operations.js';
import { CONTROL_PROTOCOL_VERSION, CONTROL_SOCKET_NAME } from '../stable/control/protocol.js';
import type { DomainEvent } from '../stable/events.js';
import { packageVersion } from '../stable/package-version.js';

/**
 * Where the command's operations run: in a driver of its own (it holds the root), or in the
 * driver of the application that holds it, through that driver's control socket. Both run the
 * same operation table, so the output is the same either way.
 */
export interface Endpoint {
  readonly mode: 'local' | 'control-socket';
  /** The connection, when the command holds the root itself. */
  readonly connection: Connection | undefined;
  call<K extends OperationName>(
    op: K,
    args: OperationArgs<K>,
    onProgress?: (progress: unknown) => void,
  ): Promise<OperationResult<K>>;
  /** Delivers domain events (of one domain, when given) until the endpoint closes. */
  subscribe(domain: string | undefined, onEvent: (event: DomainEvent) => void): Promise<void>;
  close(): Promise<void>;
}

/** The URI of `--connect`, `--root`, `VIRTKIT_DEFAULT_URI` or `VIRTKIT_ROOT`, in that order. */
export function resolveUri(options: { connect?: string | undefined; root?: string | undefined }): string {
  if (options.connect) return options.connect;
  if (options.root) return rootUri(options.root);
  const uri = process.env['VIRTKIT_DEFAULT_URI'];
  if (uri) return uri;
  const root = process.env['VIRTKIT_ROOT'];
  if (root) return rootUri(root);
  throw new VirtError(
    ErrorCode.INVALID_URI,
    'no connection: give -c qemu:///embed?root=/path (or --root /path), or set VIRTKIT_DEFAULT_URI',
  );
}

/** The embed URI of a root directory, relative to the working directory or absolute, encoded. */
function rootUri(root: string): string {
  return `qemu:///embed?root=${encodeURIComponent(resolve(root))}`;
}

/** Opens the endpoint for `uri`: a driver of its own, or the control socket of the root's holder. */
export async function openEndpoint(uri: string): Promise<Endpoint> {
  try {
    return localEndpoint(await connect(uri));
  } catch (err) {
    if (!(VirtError.is(err) && err.code === ErrorCode.ROOT_LOCKED)) throw err;
    const root = parseUri(uri).params.get('root');
    const path = join(rootLayout(root).run, CONTROL_SOCKET_NAME);
    const holder = typeof err.details.pid === 'number' ? ` by pid ${err.details.pid}` : '';
    if (!existsSync(path)) {
      throw new VirtError(
        ErrorCode.ROOT_LOCKED,
        `the root ${root} is held${holder}, which serves no control socket: have that application connect with { controlSocket: true }, or set "controlSocket": true in ${join(rootLayout(root).etc, 'virtkit.json')}`,
        err.details,
      );
    }
    return remoteEndpoint(await ControlClient.connect(path));
  }
}

function localEndpoint(conn: Connection): Endpoint {
  const ctx = { version: packageVersion(), protocol: CONTROL_PROTOCOL_VERSION };
  return {
    mode: 'local',
    connection: conn,
    call: async (op, args, onProgress) => {
      // Through JSON, as the control socket sends it: the same shapes either way.
      const result = await runOperation(conn, op, args, ctx, { notify: onProgress });
      return JSON.parse(JSON.stringify(result)) as never;
    },
    subscribe: async (domain, onEvent) => {
      conn.on('domain-event', (event) => {
        if (domain === undefined || event.domain.name === domain || event.domain.uuid === domain)
          onEvent(event);
      });
    },
    close: () => conn.close(),
  };
}

function remoteEndpoint(client: ControlClient): Endpoint {
  return {
    mode: 'control-socket',
    connection: undefined,
    call: (op, args, onProgress) => client.call(op, args, onProgress),
    subscribe: (domain, onEvent) => client.subscribe(domain, onEvent),
    close: async () => client.close(),
  };
}

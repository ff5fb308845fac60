import { chmodSync, lstatSync, statSync, unlinkSync } from 'node:fs';
import { Socket } from 'node:net';
import { ErrorCode, errnoOf, errorMessage, VirtError } from '../../errors.js';
import { closeFd, geteuid } from '../../util/libc.js';
import { type FdWatch, peerCredentials, unixAccept, unixListen, watchFd } from '../../util/unix-socket.js';
import type { Connection } from '../connection.js';
import type { DomainEvent } from '../events.js';
import { isOperationName, type OperationContext, runOperation } from './operations.js';
import {
  CONTROL_PROTOCOL_VERSION,
  type ControlReply,
  errorToWire,
  LineReader,
  MAX_LINE_BYTES,
  protocolError,
  requestSchema,
} from './protocol.js';

/** Limits of one control server; the defaults suit an operator's command. */
export interface ControlLimits {
  /** Clients at once; more are refused with one error line. */
  readonly maxConnections: number;
  /** Requests of one client under way at once; reading pauses beyond. */
  readonly maxInFlight: number;
  /** The longest request line. */
  readonly maxLineBytes: number;
  /** A line begun must end within this time, or the client is dropped. */
  readonly lineTimeoutMs: number;
  /** Replies a client leaves unread before it is dropped, in bytes. */
  readonly maxUnreadBytes: number;
}

/** Default limits. */
export const DEFAULT_CONTROL_LIMITS: ControlLimits = {
  maxConnections: 64,
  maxInFlight: 16,
  maxLineBytes: MAX_LINE_BYTES,
  lineTimeoutMs: 30_000,
  maxUnreadBytes: 16 * 1024 * 1024,
};

/** Options of {@link startControlServer}. */
export interface ControlServerOptions {
  /** The socket path, `<root>/run/control.sock`. */
  readonly path: string;
  /** Peer uids allowed besides the driver's own effective uid and root. */
  readonly uids: readonly number[];
  /** The virtkit version the `version` operation reports. */
  readonly version: string;
  /** Where refusals and dropped clients are recorded. */
  readonly log: (message: string) => void;
  readonly limits?: Partial<ControlLimits>;
}

/** A serving control socket. */
export interface ControlServer {
  readonly path: string;
  /** Stops accepting, drops every client and removes the socket file. */
  close(): void;
}

/**
 * Serves the stable API of `conn` on a Unix socket that only the owner may open (mode 0600), and
 * checks every peer's uid with SO_PEERCRED besides. The socket never keeps the process alive: it
 * serves for as long as the application runs with the connection open.
 *
 * Nothing a client sends can throw out of here or hold the driver: every line is bounded, parsed
 * and validated before any operation runs; a broken line gets one PROTOCOL_ERROR reply and closes
 * that client alone; a client that stops reading is dropped once its unread replies pass a limit.
 */
export function startControlServer(conn: Connection, options: ControlServerOptions): ControlServer {
  const limits = { ...DEFAULT_CONTROL_LIMITS, ...options.limits };
  const allowed = new Set([geteuid(), 0, ...options.uids]);
  const ctx: OperationContext = { version: options.version, protocol: CONTROL_PROTOCOL_VERSION };
  removeStale(options.path);
  let listenFd: number;
  try {
    listenFd = unixListen(options.path);
  } catch (err) {
    throw new VirtError(
      ErrorCode.SYSTEM_ERROR,
      `cannot serve the control socket ${options.path}: ${errorMessage(err)}`,
      { path: options.path, errno: errnoOf(err) ?? (err as { code?: string }).code },
      { cause: err },
    );
  }
  let ino: number;
  try {
    chmodSync(options.path, 0o600);
    ino = statSync(options.path).ino;
  } catch (err) {
    closeFd(listenFd);
    removeStale(options.path);
    throw new VirtError(
      ErrorCode.SYSTEM_ERROR,
      `cannot restrict the control socket ${options.path} to its owner: ${errorMessage(err)}`,
      { path: options.path, errno: errnoOf(err) },
      { cause: err },
    );
  }
  const clients = new Set<Socket>();
  let closed = false;
  let backoff: NodeJS.Timeout | undefined;
  let watch: FdWatch | undefined;

  const serve = (fd: number): void => {
    let uid: number;
    let pid: number;
    try {
      ({ uid, pid } = peerCredentials(fd));
    } catch (err) {
      options.log(`control socket: cannot read a peer's credentials: ${errorMessage(err)}`);
      closeFd(fd);
      return;
    }
    const socket = new Socket({ fd, readable: true, writable: true });
    socket.unref();
    socket.on('error', () => socket.destroy());
    const refuse = (err: VirtError): void => {
      options.log(`control socket: refused pid ${pid} uid ${uid}: ${err.message}`);
      socket.on('data', () => {});
      socket.end(line({ v: CONTROL_PROTOCOL_VERSION, id: null, ok: false, error: errorToWire(err) }));
      closeAfterGrace(socket);
    };
    if (!allowed.has(uid)) {
      refuse(
        new VirtError(
          ErrorCode.ACCESS_DENIED,
          `uid ${uid} may not use this control socket; list it in "controlSocket": { "uids": [...] } of <root>/etc/virtkit.json`,
          { uid },
        ),
      );
      return;
    }
    if (clients.size >= limits.maxConnections) {
      refuse(
        new VirtError(
          ErrorCode.OPERATION_FAILED,
          `the control socket serves at most ${limits.maxConnections} clients at once; try again`,
          { limit: limits.maxConnections },
        ),
      );
      return;
    }
    clients.add(socket);
    socket.on('close', () => clients.delete(socket));
    serveClient(conn, socket, limits, ctx, (m) => options.log(`control socket: pid ${pid}: ${m}`));
  };

  const acceptAll = (): void => {
    for (;;) {
      let fd: number | undefined;
      try {
        fd = unixAccept(listenFd);
      } catch (err) {
        // Out of descriptors: the pending connection would wake us again at once.
        options.log(`control socket: accept failed: ${errorMessage(err)}`);
        watch?.close();
        watch = undefined;
        backoff = setTimeout(startWatch, 100);
        backoff.unref();
        return;
      }
      if (fd === undefined) return;
      try {
        serve(fd);
      } catch (err) {
        options.log(`control socket: cannot serve a client: ${errorMessage(err)}`);
      }
    }
  };
  const startWatch = (): void => {
    if (closed) return;
    watch = watchFd(listenFd, (status) => {
      if (status >= 0) acceptAll();
    });
    watch.ref(false);
  };
  startWatch();

  return {
    path: options.path,
    close(): void {
      if (closed) return;
      closed = true;
      clearTimeout(backoff);
      watch?.close();
      closeFd(listenFd);
      try {
        if (statSync(options.path).ino === ino) unlinkSync(options.path);
      } catch {
        // already gone
      }
      for (const socket of clients) socket.destroy();
    },
  };
}

/** One client: lines in, operations run, replies out, in whatever order they finish. */
function serveClient(
  conn: Connection,
  socket: Socket,
  limits: ControlLimits,
  ctx: OperationContext,
  log: (message: string) => void,
): void {
  const reader = new LineReader(limits.maxLineBytes);
  let inFlight = 0;
  let lineTimer: NodeJS.Timeout | undefined;
  /** Set once the client broke the protocol: nothing it sends after that is read. */
  let broken = false;
  const unsubscribers: Array<() => void> = [];
  /** Aborts what this client's requests still do (a migration under way) when it goes away. */
  const gone = new AbortController();

  const send = (reply: ControlReply): void => {
    if (socket.destroyed) return;
    socket.write(line(reply));
    if (socket.writableLength > limits.maxUnreadBytes) {
      log(`dropped: more than ${limits.maxUnreadBytes} bytes of replies left unread`);
      socket.destroy();
    }
  };
  const fail = (err: VirtError): void => {
    broken = true;
    clearTimeout(lineTimer);
    log(`dropped: ${err.message}`);
    send({ v: CONTROL_PROTOCOL_VERSION, id: null, ok: false, error: errorToWire(err) });
    socket.end();
    closeAfterGrace(socket);
  };
  socket.on('close', () => {
    gone.abort();
    clearTimeout(lineTimer);
    for (const off of unsubscribers.splice(0)) off();
  });

  const handle = (text: string): void => {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw protocolError('a request line is not valid JSON');
    }
    const parsed = requestSchema.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw protocolError(
        `a request is malformed at '${issue?.path.join('.') ?? ''}': ${issue?.message ?? ''}`,
      );
    }
    const req = parsed.data;
    if (req.v !== CONTROL_PROTOCOL_VERSION) {
      throw protocolError(
        `the client speaks control protocol ${req.v}, this driver ${CONTROL_PROTOCOL_VERSION}; use the virtkit command of the application's version`,
        { peerProtocol: req.v },
      );
    }
    const reply = (r: { ok: true; result: unknown } | { ok: false; error: unknown }): void =>
      send(
        r.ok
          ? { v: CONTROL_PROTOCOL_VERSION, id: req.id, ok: true, result: r.result }
          : { v: CONTROL_PROTOCOL_VERSION, id: req.id, ok: false, error: errorToWire(r.error) },
      );
    if (req.op === 'events') {
      const domain = req.args?.['domain'];
      if (
        req.args &&
        (Object.keys(req.args).some((k) => k !== 'domain') ||
          (domain !== undefined && typeof domain !== 'string'))
      ) {
        reply({
          ok: false,
          error: new VirtError(ErrorCode.OPERATION_INVALID, "'events' takes only 'domain' (a string)", {
            path: 'domain',
            operation: 'events',
          }),
        });
        return;
      }
      const listener = (event: DomainEvent): void => {
        if (domain === undefined || event.domain.name === domain || event.domain.uuid === domain)
          send({ v: CONTROL_PROTOCOL_VERSION, id: req.id, event });
      };
      conn.on('domain-event', listener);
      unsubscribers.push(() => conn.off('domain-event', listener));
      reply({ ok: true, result: { subscribed: true } });
      return;
    }
    if (!isOperationName(req.op)) {
      reply({
        ok: false,
        error: new VirtError(ErrorCode.OPERATION_INVALID, `unknown operation '${req.op}'`, {
          operation: req.op,
        }),
      });
      return;
    }
    inFlight++;
    if (inFlight >= limits.maxInFlight) socket.pause();
    runOperation(conn, req.op, req.args, ctx, {
      signal: gone.signal,
      notify: (progress) => send({ v: CONTROL_PROTOCOL_VERSION, id: req.id, event: progress }),
    })
      .then(
        (result) => reply({ ok: true, result }),
        (error: unknown) => {
          if (!VirtError.is(error)) log(`operation '${req.op}' failed: ${errorMessage(error)}`);
          reply({ ok: false, error });
        },
      )
      .finally(() => {
        inFlight--;
        if (inFlight < limits.maxInFlight && !socket.destroyed) socket.resume();
      });
  };

  socket.on('data', (chunk: Buffer) => {
    if (broken) return;
    let lines: string[];
    try {
      lines = reader.push(chunk);
      for (const text of lines) {
        if (broken || socket.destroyed) return;
        handle(text);
      }
    } catch (err) {
      fail(VirtError.is(err) ? err : protocolError(errorMessage(err)));
      return;
    }
    clearTimeout(lineTimer);
    lineTimer = undefined;
    if (reader.pending) {
      lineTimer = setTimeout(
        () => fail(protocolError(`a request line was not completed within ${limits.lineTimeoutMs} ms`)),
        limits.lineTimeoutMs,
      );
      lineTimer.unref();
    }
  });
}

/** How long a client that was told why it is dropped has to read it and close its end. */
const CLOSE_GRACE_MS = 5000;

/**
 * Ends the connection, leaving the client time to read the last reply: what it still sends is read
 * and discarded (closing with unread data would reset the connection and lose the reply), until it
 * closes its end or the grace period is over.
 */
function closeAfterGrace(socket: Socket): void {
  const timer = setTimeout(() => socket.destroy(), CLOSE_GRACE_MS);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
}

function line(reply: ControlReply): string {
  return `${JSON.stringify(reply, (_, v) => (typeof v === 'bigint' ? v.toString() : v))}\n`;
}

/**
 * Removes a control socket left by a driver that was killed. The caller holds the root's lock,
 * so no other driver serves it; anything there that is not a socket is left and reported.
 */
function removeStale(path: string): void {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch {
    return;
  }
  if (!isSocket) {
    throw new VirtError(
      ErrorCode.OPERATION_INVALID,
      `${path} exists and is not a socket; remove it to serve the control socket`,
      { path },
    );
  }
  unlinkSync(path);
}

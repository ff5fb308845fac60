import { chmodSync, lstatSync, statSync, unlinkSync } from 'node:fs';
import { ErrorCode, errnoOf, errorMessage, VirtError } from '../../errors.js';
import { type OperationArgs, type OperationName, operationSchemas } from '../../privileged/operations.js';
import { INTERNAL_API_VERSION } from '../../privileged/version.js';
import { closeFd, SyscallError } from '../../util/libc.js';
import { readProcStartTime } from '../../util/proc.js';
import {
  type FdWatch,
  peerCredentials,
  unixAccept,
  unixConnect,
  unixListen,
  watchFd,
} from '../../util/unix-socket.js';
import { type AuditTarget, authorise, type Peer } from './authorise.js';
import { FramedConnection } from './connection.js';
import { execute } from './execute.js';
import { OwnerWorkers } from './owner-workers.js';
import { loadPolicy, type Policy, type PrivilegedHelperPolicy, parsePolicy } from './policy.js';
import {
  checkClientMessage,
  detachFds,
  errorToWire,
  PROTOCOL_VERSION,
  ProtocolError,
  type WireRequest,
} from './protocol.js';
import { HelperTaps } from './taps.js';
import { WorkQueue } from './work-queue.js';

/**
 * Options of {@link createPrivilegedHelper}.
 *
 * @public
 */
export interface PrivilegedHelperOptions {
  /** Where to listen. A stale socket there (nobody answering) is replaced; a live one is an error. */
  readonly socketPath: string;
  /** The policy as an object; exactly one of `policy` and `policyPath` is required. */
  readonly policy?: PrivilegedHelperPolicy;
  /** The policy as a JSON file, read once when the helper is created. */
  readonly policyPath?: string;
  /** Receives one JSON line per request (and per refused connection); default: standard error. */
  readonly audit?: (line: string) => void;
  /**
   * The socket file's mode; default `0o666`. Anyone may connect, and every peer is then
   * authenticated with SO_PEERCRED and checked against `peers.uids`; a tighter mode (e.g. `0o660`
   * with the socket's group set by the service manager) adds a file-system gate in front.
   */
  readonly socketMode?: number;
  /**
   * At most this many clients at once; more are closed at once. Overrides the policy's
   * `limits.maxConnections` (default 1024).
   */
  readonly maxConnections?: number;
}

/**
 * A running (or ready) privileged helper.
 *
 * @public
 */
export interface PrivilegedHelper {
  /** Starts serving on the socket. */
  listen(): Promise<void>;
  /** Stops accepting, closes every client and removes the socket file. */
  close(): Promise<void>;
  /** The socket path. */
  readonly socketPath: string;
}

/** How long accepting pauses after running out of descriptors, instead of spinning on the backlog. */
const ACCEPT_BACKOFF_MS = 100;
/**
 * Synchronous work per turn of the event loop before requests wait for the next turn (round-robin):
 * bounds how long a burst from one process holds back another's request.
 */
const TURN_MS = 1;
/** How often TAPs handed out are checked for having been made persistent or re-owned. */
const TAP_SWEEP_MS = 2000;

interface Client {
  readonly peer: Peer;
  /** `peer` as JSON, for the audit lines: the credentials are fixed for the connection's life. */
  readonly peerJson: string;
  readonly conn: FramedConnection;
  greeted: boolean;
  /** Refused (peer uid, version): nothing it sends is served while the refusal goes out. */
  refused: boolean;
  /** Requests unanswered (queued or executing); bounded per connection, as all work is globally. */
  inFlight: number;
  helloTimer: NodeJS.Timeout | undefined;
}

class Helper implements PrivilegedHelper {
  readonly socketPath: string;
  readonly #policy: Policy;
  readonly #audit: (line: string) => void;
  /** Writes what the default audit sink holds; nothing for a caller's sink. */
  readonly #flushAudit: () => void;
  readonly #mode: number;
  readonly #maxConnections: number;
  readonly #clients = new Set<Client>();
  /** Connected clients per peer uid. */
  readonly #perUid = new Map<number, number>();
  readonly #work: WorkQueue;
  readonly #workers: OwnerWorkers;
  readonly #taps: HelperTaps;
  #listenFd: number | undefined;
  #watch: FdWatch | undefined;
  #socketIno: number | undefined;
  #backoff: NodeJS.Timeout | undefined;

  constructor(options: PrivilegedHelperOptions) {
    if ((options.policy === undefined) === (options.policyPath === undefined)) {
      throw new VirtError(
        ErrorCode.OPERATION_INVALID,
        'createPrivilegedHelper needs exactly one of policy (an object) and policyPath (a JSON file)',
        { path: 'policy' },
      );
    }
    if (typeof options.socketPath !== 'string' || !options.socketPath.startsWith('/')) {
      throw new VirtError(ErrorCode.OPERATION_INVALID, 'socketPath must be an absolute path', {
        path: 'socketPath',
      });
    }
    this.socketPath = options.socketPath;
    this.#policy =
      options.policyPath !== undefined
        ? loadPolicy(options.policyPath)
        : parsePolicy(options.policy, 'policy');
    const sink = options.audit ? undefined : batchedStderr();
    this.#audit = options.audit ?? (sink as BatchedSink).write;
    this.#flushAudit = sink?.flush ?? (() => {});
    this.#mode = options.socketMode ?? 0o666;
    const limits = this.#policy.limits;
    this.#maxConnections = options.maxConnections ?? limits.maxConnections;
    this.#work = new WorkQueue(limits.maxInFlight, limits.maxQueued, TURN_MS);
    this.#workers = new OwnerWorkers(limits.memlockWorkers);
    this.#taps = new HelperTaps(TAP_SWEEP_MS, (entry) => this.#log(entry));
  }

  async listen(): Promise<void> {
    if (this.#listenFd !== undefined) {
      throw new VirtError(ErrorCode.OPERATION_INVALID, `the helper already listens on ${this.socketPath}`);
    }
    this.#removeStaleSocket();
    let fd: number;
    try {
      fd = unixListen(this.socketPath);
    } catch (err) {
      throw new VirtError(
        ErrorCode.SYSTEM_ERROR,
        `cannot listen on ${this.socketPath}: ${errorMessage(err)}`,
        { path: this.socketPath, errno: errnoOf(err) },
        { cause: err },
      );
    }
    try {
      chmodSync(this.socketPath, this.#mode);
      this.#socketIno = statSync(this.socketPath).ino;
    } catch (err) {
      closeFd(fd);
      throw new VirtError(
        ErrorCode.SYSTEM_ERROR,
        `cannot set the mode of ${this.socketPath}: ${errorMessage(err)}`,
        { path: this.socketPath, errno: errnoOf(err) },
        { cause: err },
      );
    }
    this.#listenFd = fd;
    this.#watchListener();
  }

  async close(): Promise<void> {
    clearTimeout(this.#backoff);
    this.#watch?.close();
    this.#watch = undefined;
    if (this.#listenFd !== undefined) {
      closeFd(this.#listenFd);
      this.#listenFd = undefined;
      try {
        // Only our own socket: a successor may already have replaced it.
        if (statSync(this.socketPath).ino === this.#socketIno) unlinkSync(this.socketPath);
      } catch {
        // already gone
      }
    }
    for (const client of [...this.#clients]) client.conn.close();
    this.#workers.close();
    this.#taps.close();
    this.#flushAudit();
  }

  #removeStaleSocket(): void {
    let isSocket: boolean;
    try {
      isSocket = lstatSync(this.socketPath).isSocket();
    } catch {
      return;
    }
    if (!isSocket) {
      throw new VirtError(
        ErrorCode.OPERATION_INVALID,
        `${this.socketPath} exists and is not a socket; remove it or choose another path`,
        { path: this.socketPath },
      );
    }
    try {
      closeFd(unixConnect(this.socketPath));
    } catch (err) {
      if (err instanceof SyscallError && err.code === 'ECONNREFUSED') {
        unlinkSync(this.socketPath);
        return;
      }
    }
    throw new VirtError(
      ErrorCode.OPERATION_INVALID,
      `another process already serves ${this.socketPath}; stop it first`,
      { path: this.socketPath, errno: 'EADDRINUSE' },
    );
  }

  #watchListener(): void {
    const fd = this.#listenFd;
    if (fd === undefined) return;
    this.#watch = watchFd(fd, (status) => {
      if (status >= 0) this.#acceptAll(fd);
    });
  }

  #acceptAll(listenFd: number): void {
    for (;;) {
      let fd: number | undefined;
      try {
        fd = unixAccept(listenFd);
      } catch (err) {
        this.#log({ event: 'accept-error', error: errorMessage(err) });
        // Out of descriptors: the pending connection would wake us again at once.
        this.#watch?.close();
        this.#watch = undefined;
        this.#backoff = setTimeout(() => this.#watchListener(), ACCEPT_BACKOFF_MS);
        return;
      }
      if (fd === undefined) return;
      try {
        this.#serve(fd);
      } catch (err) {
        // One client that cannot be served (e.g. its socket cannot be watched) is dropped alone.
        this.#log({ event: 'serve-error', error: errorMessage(err) });
      }
    }
  }

  #serve(fd: number): void {
    let peer: Peer;
    try {
      const cred = peerCredentials(fd);
      peer = { ...cred, startTime: readProcStartTime(cred.pid)?.toString() };
    } catch (err) {
      this.#log({ event: 'peercred-error', error: errorMessage(err) });
      closeFd(fd);
      return;
    }
    const limits = this.#policy.limits;
    // Caps first, before anything is allocated for the client: one uid may never hold more than
    // its share, so it cannot take the helper away from the other uids.
    const mine = this.#perUid.get(peer.uid) ?? 0;
    const refusal =
      this.#clients.size >= this.#maxConnections
        ? 'limits.maxConnections'
        : mine >= limits.maxConnectionsPerUid
          ? 'limits.maxConnectionsPerUid'
          : undefined;
    if (refusal !== undefined) {
      this.#log({ event: 'connection-refused', peer, reason: refusal });
      closeFd(fd);
      return;
    }
    const client: Client = {
      peer,
      peerJson: JSON.stringify(peer),
      greeted: false,
      refused: false,
      inFlight: 0,
      helloTimer: undefined,
      conn: new FramedConnection(
        fd,
        {
          message: (msg) => this.#onMessage(client, msg),
          closed: (reason) => {
            clearTimeout(client.helloTimer);
            this.#clients.delete(client);
            const n = (this.#perUid.get(peer.uid) ?? 1) - 1;
            if (n > 0) this.#perUid.set(peer.uid, n);
            else this.#perUid.delete(peer.uid);
            if (reason) this.#log({ event: 'connection-closed', peer, error: reason.message });
          },
        },
        false,
        limits.frameTimeoutMs,
      ),
    };
    this.#clients.add(client);
    this.#perUid.set(peer.uid, mine + 1);
    if (!this.#policy.peerUids.has(peer.uid)) {
      client.refused = true;
      this.#log({ peer, op: 'connect', decision: 'deny', rule: 'peer.uid' });
      client.conn.send({
        type: 'error',
        error: errorToWire(
          new VirtError(
            ErrorCode.ACCESS_DENIED,
            `denied by policy rule peer.uid: uid ${peer.uid} may not use this helper`,
            {
              rule: 'peer.uid',
              uid: peer.uid,
            },
          ),
        ),
      });
      client.conn.end();
      return;
    }
    client.helloTimer = setTimeout(() => {
      this.#log({ event: 'protocol-error', peer, error: `no hello within ${limits.handshakeTimeoutMs} ms` });
      client.conn.close();
    }, limits.handshakeTimeoutMs);
    client.helloTimer.unref();
  }

  #onMessage(client: Client, raw: unknown): void {
    if (client.refused) return;
    const checked = checkClientMessage(raw);
    if (!checked.ok) throw new ProtocolError(`malformed message: ${checked.error}`);
    const msg = checked.message;
    if (msg.type === 'hello') {
      if (client.greeted) throw new ProtocolError('a second hello');
      clearTimeout(client.helloTimer);
      if (msg.protocol !== PROTOCOL_VERSION || msg.apiVersion !== INTERNAL_API_VERSION) {
        client.refused = true;
        this.#log({
          event: 'version-mismatch',
          peer: client.peer,
          protocol: msg.protocol,
          apiVersion: msg.apiVersion,
        });
        client.conn.send({
          type: 'error',
          error: errorToWire(
            new VirtError(
              ErrorCode.INTERNAL_VERSION_MISMATCH,
              `this virtkit-privd speaks protocol ${PROTOCOL_VERSION} and internal API ${INTERNAL_API_VERSION}; the client speaks protocol ${msg.protocol} and internal API ${msg.apiVersion}: install the same virtkit version on both sides`,
              { requested: msg.apiVersion, implemented: INTERNAL_API_VERSION, protocol: PROTOCOL_VERSION },
            ),
          ),
        });
        client.conn.end();
        return;
      }
      client.greeted = true;
      client.conn.send({
        type: 'hello',
        protocol: PROTOCOL_VERSION,
        apiVersion: INTERNAL_API_VERSION,
        server: 'virtkit-privd',
        // The credentials the helper saw, as protocol 1 defines them (not its own bookkeeping).
        peer: { pid: client.peer.pid, uid: client.peer.uid, gid: client.peer.gid },
      });
      return;
    }
    if (!client.greeted) throw new ProtocolError('a request before hello');
    const limits = this.#policy.limits;
    if (client.inFlight >= limits.maxInFlightPerConnection) {
      this.#refuseBusy(
        client,
        msg,
        'limits.maxInFlightPerConnection',
        `more than ${limits.maxInFlightPerConnection} requests in flight on one connection`,
      );
      return;
    }
    client.inFlight++;
    const done = (): void => {
      client.inFlight--;
    };
    const failed = (err: unknown): void => {
      this.#log({ event: 'internal-error', peer: client.peer, error: errorMessage(err) });
      client.conn.close();
      done();
    };
    const run = (): Promise<void> | undefined => {
      let waiting: Promise<void> | undefined;
      try {
        // A client that went away while its request waited gets nothing done for it.
        waiting = client.conn.closed ? undefined : this.#handle(client, msg);
      } catch (err) {
        failed(err);
        return undefined;
      }
      if (waiting) return waiting.then(done, failed);
      done();
      return undefined;
    };
    // Round-robin between uids and, within one, between peer processes: a process with many
    // connections (or many requests) takes its turn like any other.
    if (!this.#work.submit(client.peer.uid, run, client.peer.pid)) {
      client.inFlight--;
      this.#refuseBusy(
        client,
        msg,
        'limits.maxQueued',
        `virtkit-privd is busy: ${this.#work.running} requests executing and ${this.#work.queued} waiting; retry later`,
      );
    }
  }

  /** A request refused for a limit of the helper, not of the policy: typed, and the client may retry. */
  #refuseBusy(client: Client, req: WireRequest, limit: string, message: string): void {
    const err = new VirtError(ErrorCode.OPERATION_CONFLICT, message, { operation: req.op, limit });
    this.#log({
      peer: client.peer,
      op: req.op,
      decision: 'invalid',
      outcome: 'error',
      code: err.code,
      limit,
    });
    client.conn.send({ type: 'response', id: req.id, ok: false, error: errorToWire(err), fds: 0 });
  }

  /**
   * Checks, authorises and executes one request. A synchronous operation (every built-in) is
   * answered before this returns, in the same turn of the event loop: an answer left to a
   * microtask would wait until every other connection that became readable in that turn was read.
   *
   * @returns a promise only while the operation is still executing
   */
  #handle(client: Client, req: WireRequest): Promise<void> | undefined {
    const started = performance.now();
    const target: AuditTarget = {};
    const record = (decision: 'allow' | 'deny' | 'invalid', err?: unknown): void => {
      if (err === undefined) {
        // The line of every allowed request, built as text around the connection's peer: the same
        // JSON as #log's, in a third of its time.
        this.#line(
          `{"time":"${isoNow()}","peer":${client.peerJson},"op":"${req.op}","domain":${JSON.stringify(req.ctx.domain.uuid)},"phase":"${req.ctx.phase}","target":${JSON.stringify(target)},"decision":"${decision}","outcome":"ok","ms":${Number((performance.now() - started).toFixed(2))}}`,
        );
        return;
      }
      this.#log({
        peer: client.peer,
        op: req.op,
        domain: req.ctx.domain.uuid,
        phase: req.ctx.phase,
        target,
        decision,
        ...(VirtError.is(err) && typeof err.details['rule'] === 'string'
          ? { rule: err.details['rule'] }
          : {}),
        outcome: err === undefined ? 'ok' : 'error',
        ...(err === undefined
          ? {}
          : { code: VirtError.is(err) ? err.code : 'HANDLER_FAILED', error: errorMessage(err) }),
        ms: Number((performance.now() - started).toFixed(2)),
      });
    };
    const fail = (decision: 'allow' | 'deny' | 'invalid', err: unknown) => {
      record(decision, err);
      const error = errorToWire(err);
      try {
        client.conn.send({ type: 'response', id: req.id, ok: false, error, fds: 0 });
      } catch {
        // Too big for a frame (an enormous message or details): the code still goes back.
        const brief = { code: error.code, message: error.message.slice(0, 1000), details: {} };
        client.conn.send({ type: 'response', id: req.id, ok: false, error: brief, fds: 0 });
      }
    };
    const schema = operationSchemas[req.op];
    const args = schema.args.safeParse(req.args);
    if (!args.success) {
      const issue = args.error.issues[0];
      const field = `args.${issue?.path.join('.') ?? ''}`.replace(/\.$/, '');
      fail(
        'invalid',
        new VirtError(ErrorCode.OPERATION_INVALID, `${req.op}: ${field}: ${issue?.message}`, {
          path: field,
          operation: req.op,
        }),
      );
      return;
    }
    if (!(schema.phases as readonly string[]).includes(req.ctx.phase)) {
      fail(
        'invalid',
        new VirtError(ErrorCode.OPERATION_INVALID, `${req.op} is not invoked in phase ${req.ctx.phase}`, {
          operation: req.op,
          phase: req.ctx.phase,
        }),
      );
      return;
    }
    if (Date.now() >= req.ctx.deadline) {
      fail(
        'invalid',
        new VirtError(ErrorCode.OPERATION_TIMEOUT, `${req.op} arrived after its deadline`, {
          operation: req.op,
        }),
      );
      return;
    }
    const typed = args.data as OperationArgs<OperationName>;
    let startTime: bigint | undefined;
    try {
      startTime = authorise(this.#policy, client.peer, req.op, req.ctx, typed, target);
    } catch (err) {
      fail(VirtError.is(err) && err.code === ErrorCode.ACCESS_DENIED ? 'deny' : 'invalid', err);
      return;
    }
    // storage.openFile checks its path as it opens: a refusal there is still the policy's.
    const failed = (err: unknown): void =>
      fail(VirtError.is(err) && typeof err.details['rule'] === 'string' ? 'deny' : 'allow', err);
    const answer = (result: unknown): void => {
      const { value, fds } = detachFds(result);
      if (typeof value === 'object' && value !== null && 'ifname' in value)
        target.ifname = String(value.ifname);
      client.conn.send({ type: 'response', id: req.id, ok: true, result: value, fds: fds.length }, fds);
      // After the answer: the line only waits for the next turn's write anyway, and building it
      // first would delay every response by its cost.
      record('allow');
    };
    let result: unknown;
    try {
      result = execute(this.#policy, req.op, req.ctx, typed, {
        workers: this.#workers,
        taps: this.#taps,
        peerUid: client.peer.uid,
        targetStartTime: startTime,
      });
    } catch (err) {
      failed(err);
      return;
    }
    if (result instanceof Promise) return result.then(answer, failed);
    answer(result);
  }

  #log(entry: Record<string, unknown>): void {
    let line: string;
    try {
      line = JSON.stringify({ time: isoNow(), ...entry });
    } catch {
      return;
    }
    this.#line(line);
  }

  #line(line: string): void {
    try {
      this.#audit(line);
    } catch {
      // An audit sink that throws must not take the helper down.
    }
  }
}

let isoMs = 0;
let isoText = '';

/** The time as ISO 8601, formatted once per millisecond (a request takes less than one). */
function isoNow(): string {
  const now = Date.now();
  if (now !== isoMs) {
    isoMs = now;
    isoText = new Date(now).toISOString();
  }
  return isoText;
}

/** How long audit lines may wait to be written, and how much of them. */
const AUDIT_FLUSH_MS = 5;
const AUDIT_FLUSH_BYTES = 64 * 1024;

interface BatchedSink {
  write(line: string): void;
  flush(): void;
}

/** The default sinks holding lines: written at exit, by one listener for all of them. */
const waiting = new Set<BatchedSink>();
let exitWatched = false;

function watchExit(): void {
  if (exitWatched) return;
  exitWatched = true;
  // Standard error is written synchronously (a file, or a pipe on Linux), so this still lands.
  process.once('exit', () => {
    for (const sink of waiting) sink.flush();
  });
}

/**
 * The default audit sink: lines written to standard error in order, at most 5 ms after they were
 * logged (or once 64 KiB wait), so that a stream of requests costs one write(2) per 5 ms instead of
 * one per request, and no write delays the response it describes. What waits is written when the
 * helper closes and when the process exits.
 */
function batchedStderr(): BatchedSink {
  let pending: string[] = [];
  let bytes = 0;
  let timer: NodeJS.Timeout | undefined;
  const flush = (): void => {
    clearTimeout(timer);
    timer = undefined;
    waiting.delete(sink);
    if (pending.length === 0) return;
    const lines = pending;
    pending = [];
    bytes = 0;
    process.stderr.write(`${lines.join('\n')}\n`);
  };
  const sink: BatchedSink = {
    write(line) {
      pending.push(line);
      bytes += line.length;
      if (bytes >= AUDIT_FLUSH_BYTES) flush();
      else if (!timer) {
        watchExit();
        waiting.add(sink);
        timer = setTimeout(flush, AUDIT_FLUSH_MS);
        // A helper that is closing must not be kept alive by its log: close() and exit flush it.
        timer.unref();
      }
    },
    flush,
  };
  return sink;
}

/**
 * Creates the privileged helper (`virtkit-privd`): it serves the operations of the internal API on
 * a Unix socket to clients made with `delegate()`, authenticates every peer with SO_PEERCRED and
 * authorises every request against the policy, executes allowed ones with the driver's built-in
 * code, and hands descriptors back with SCM_RIGHTS. Run it as root (or with CAP_SYS_NICE,
 * CAP_NET_ADMIN, CAP_SYS_RESOURCE and write access to the cgroup hierarchy).
 *
 * @param options - socket path, policy (object or file), audit sink, socket mode
 * @returns the helper; call `listen()` to start serving
 * @throws `VirtError` `XML_ERROR` for an invalid policy (naming the field), `SYSTEM_ERROR`
 *   when the policy file cannot be read, `OPERATION_INVALID` for bad options
 * @public
 */
export function createPrivilegedHelper(options: PrivilegedHelperOptions): PrivilegedHelper {
  return new Helper(options);
}

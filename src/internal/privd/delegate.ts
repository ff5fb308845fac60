import { ErrorCode, errorMessage, VirtError } from '../../errors.js';
import type { HandlerOptions } from '../../privileged/handler-table.js';
import {
  type InvocationContext,
  OPERATIONS,
  type OperationArgs,
  type OperationHandler,
  type OperationName,
  operationSchemas,
} from '../../privileged/operations.js';
import { stubExecuted } from '../../privileged/stub.js';
import { INTERNAL_API_VERSION } from '../../privileged/version.js';
import { closeFd, SyscallError } from '../../util/libc.js';
import { unixConnect } from '../../util/unix-socket.js';
import type { InternalApi } from '../api.js';
import { FramedConnection } from './connection.js';
import { attachFds, checkServerMessage, errorFromWire, PROTOCOL_VERSION, ProtocolError } from './protocol.js';

/**
 * Options of {@link delegate}.
 *
 * @public
 */
export interface DelegateOptions {
  /** How long connecting to the helper (connect and hello) may take; default 5000 ms. */
  readonly connectTimeoutMs?: number;
}

/**
 * Handlers that forward every invocation to a `virtkit-privd` helper.
 *
 * @public
 */
export interface Delegate {
  /** One handler per operation, each forwarding its invocation (context included) to the helper. */
  readonly handlers: { readonly [Op in OperationName]: OperationHandler<Op> };
  /** Registers every handler on `api` with `api.setHandler`, with the same options for each. */
  install(api: Pick<InternalApi, 'setHandler'>, options?: HandlerOptions): void;
  /** Closes the connection; calls in flight fail with `CONNECTION_CLOSED`, later ones too. */
  close(): void;
}

const DEFAULT_CONNECT_TIMEOUT_MS = 5000;
const MAX_TIMER_MS = 2 ** 31 - 1;
/** The phases in which `process.setMaxMemLock` targets the driver's stub, before QEMU execs. */
const STUB_PHASES: ReadonlySet<string> = new Set(['pre-exec', 'migration-in']);
/** An exec fills in the command line within microseconds; a pid whose stays empty is no stub. */
const STUB_WAIT_MS = 2_000;

interface Pending {
  readonly op: OperationName;
  /** When the caller stops waiting (ms since the epoch, finite). */
  readonly deadline: number;
  resolve(value: unknown): void;
  reject(err: VirtError): void;
  /** The deadline passed: the call stops waiting. */
  expire(): void;
}

/** One connection to the helper; replaced by a new one after it closes. */
class Session {
  readonly conn: FramedConnection;
  readonly pending = new Map<number, Pending>();
  /** Ids whose caller stopped waiting: their late answers' descriptors are closed on arrival. */
  readonly abandoned = new Set<number>();
  readonly ready: Promise<void>;
  /** The helper's hello has arrived: `ready` has resolved. */
  greeted = false;
  /** One timer for the earliest deadline of the calls in flight, rather than one per call. */
  #timer: NodeJS.Timeout | undefined;
  #timerAt = Number.POSITIVE_INFINITY;
  #greeted!: () => void;
  #refused!: (err: VirtError) => void;

  constructor(fd: number, socketPath: string, onClosed: (s: Session) => void) {
    this.ready = new Promise<void>((resolve, reject) => {
      this.#greeted = resolve;
      this.#refused = reject;
    });
    // Without a listener a refusal before anyone awaits would be reported as unhandled.
    this.ready.catch(() => undefined);
    this.conn = new FramedConnection(
      fd,
      {
        message: (msg) => this.#onMessage(msg),
        closed: (reason) => {
          const err =
            reason && reason.code !== ErrorCode.SYSTEM_ERROR
              ? reason
              : new VirtError(
                  ErrorCode.SYSTEM_ERROR,
                  `the connection to virtkit-privd at ${socketPath} was lost${reason ? `: ${reason.message}` : ''}`,
                  { path: socketPath },
                  { cause: reason },
                );
          this.#refused(err);
          clearTimeout(this.#timer);
          this.#timer = undefined;
          for (const p of this.pending.values()) p.reject(err);
          this.pending.clear();
          onClosed(this);
        },
      },
      true,
    );
    // Idle connections must not keep the driver's process alive; calls in flight ref it.
    this.conn.ref(false);
    this.conn.send({
      type: 'hello',
      protocol: PROTOCOL_VERSION,
      apiVersion: INTERNAL_API_VERSION,
      client: 'virtkit-delegate',
    });
  }

  /** Adds a call in flight and makes sure the timer fires by its deadline. */
  add(id: number, call: Pending): void {
    this.pending.set(id, call);
    if (this.#timer === undefined || call.deadline < this.#timerAt) this.#arm(call.deadline);
  }

  #arm(at: number): void {
    clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = setTimeout(() => this.#expire(), timeUntil(at));
    // Calls in flight keep the process alive through the connection's ref, not through this.
    this.#timer.unref();
  }

  /** Stops the calls whose deadline passed and waits for the next deadline, if any call is left. */
  #expire(): void {
    this.#timer = undefined;
    const now = Date.now();
    let next = Number.POSITIVE_INFINITY;
    for (const call of [...this.pending.values()]) {
      if (call.deadline <= now) call.expire();
      else next = Math.min(next, call.deadline);
    }
    if (next !== Number.POSITIVE_INFINITY) this.#arm(next);
  }

  #onMessage(raw: unknown): void {
    const msg = checkServerMessage(raw);
    if (!msg) throw new ProtocolError('virtkit-privd sent a malformed message');
    if (msg.type === 'hello') {
      if (msg.protocol !== PROTOCOL_VERSION || msg.apiVersion !== INTERNAL_API_VERSION) {
        throw new VirtError(
          ErrorCode.INTERNAL_VERSION_MISMATCH,
          `virtkit-privd speaks protocol ${msg.protocol}, internal API ${msg.apiVersion}`,
          {
            requested: INTERNAL_API_VERSION,
            implemented: msg.apiVersion,
          },
        );
      }
      this.greeted = true;
      this.#greeted();
      return;
    }
    if (msg.type === 'error') {
      // A refusal of the whole connection: the helper closes it right after.
      this.conn.close(errorFromWire(msg.error));
      return;
    }
    const fds = this.conn.takeFds(msg.fds);
    const waiting = this.pending.get(msg.id);
    this.pending.delete(msg.id);
    this.abandoned.delete(msg.id);
    if (!waiting) {
      for (const fd of fds) closeQuietly(fd);
      return;
    }
    if (!msg.ok) {
      waiting.reject(errorFromWire(msg.error));
      return;
    }
    let value: unknown;
    try {
      value = attachFds(msg.result, fds);
    } catch (err) {
      for (const fd of fds) closeQuietly(fd);
      waiting.reject(VirtError.is(err) ? err : new ProtocolError(errorMessage(err)));
      return;
    }
    const checked = operationSchemas[waiting.op].result.safeParse(value);
    if (!checked.success) {
      for (const fd of fds) closeQuietly(fd);
      waiting.reject(
        new VirtError(
          ErrorCode.HANDLER_FAILED,
          `virtkit-privd returned a malformed result for ${waiting.op}`,
          { operation: waiting.op },
        ),
      );
      return;
    }
    waiting.resolve(checked.data);
  }
}

function closeQuietly(fd: number): void {
  try {
    closeFd(fd);
  } catch {
    // already closed
  }
}

/** How long a timer for `deadline` runs: setTimeout takes at most 2^31-1 ms, and a later (or infinite) deadline is as good as none. */
function timeUntil(deadline: number): number {
  return Math.min(MAX_TIMER_MS, Math.max(0, deadline - Date.now()));
}

/** Why a call stopped waiting: the deadline passed, or the caller aborted. */
function stopReason(op: OperationName, ctx: InvocationContext): VirtError {
  const reason: unknown = ctx.signal.aborted ? ctx.signal.reason : undefined;
  if (VirtError.is(reason)) return reason;
  if (Date.now() >= ctx.deadline || !ctx.signal.aborted) {
    return new VirtError(ErrorCode.OPERATION_TIMEOUT, `virtkit-privd did not answer ${op} by its deadline`, {
      operation: op,
      phase: ctx.phase,
    });
  }
  return new VirtError(ErrorCode.OPERATION_FAILED, `${op} was cancelled while waiting for virtkit-privd`, {
    operation: op,
    phase: ctx.phase,
  });
}

class Client {
  readonly #socketPath: string;
  readonly #connectTimeoutMs: number;
  #session: Session | undefined;
  #connecting: Promise<Session> | undefined;
  #closed = false;
  #nextId = 1;

  constructor(socketPath: string, options: DelegateOptions) {
    this.#socketPath = socketPath;
    this.#connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  }

  close(): void {
    this.#closed = true;
    this.#session?.conn.close(
      new VirtError(ErrorCode.CONNECTION_CLOSED, 'the delegate was closed', { path: this.#socketPath }),
    );
  }

  /**
   * Forwards one invocation. On a greeted, open session (the steady state) the request goes out at
   * once and the call is one promise, settled by the answer, the deadline or the signal; only a
   * call that has to connect first waits for that, under the same deadline and signal.
   */
  call<Op extends OperationName>(op: Op, ctx: InvocationContext, args: OperationArgs<Op>): Promise<unknown> {
    if (op === 'process.setMaxMemLock' && STUB_PHASES.has(ctx.phase)) {
      // The helper recognises the stub by its command line, which the exec puts in place only
      // after spawning has returned (fa52397): wait for it here, where only a delegated raise pays.
      const { pid } = args as OperationArgs<'process.setMaxMemLock'>;
      return stubExecuted(pid, Math.min(STUB_WAIT_MS, timeUntil(ctx.deadline))).then(() =>
        this.#call(op, ctx, args),
      );
    }
    return this.#call(op, ctx, args);
  }

  #call<Op extends OperationName>(op: Op, ctx: InvocationContext, args: OperationArgs<Op>): Promise<unknown> {
    try {
      const open = ctx.signal.aborted ? undefined : this.#openSession();
      return open ? this.#request(open, op, ctx, args) : this.#connectThenRequest(op, ctx, args);
    } catch (err) {
      // A handler's failure is a rejection, never a synchronous throw.
      return Promise.reject(err);
    }
  }

  async #connectThenRequest<Op extends OperationName>(
    op: Op,
    ctx: InvocationContext,
    args: OperationArgs<Op>,
  ): Promise<unknown> {
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    const stopped = new Promise<never>((_, reject) => {
      const stop = () => reject(stopReason(op, ctx));
      if (ctx.signal.aborted) return stop();
      onAbort = stop;
      ctx.signal.addEventListener('abort', onAbort, { once: true });
      timer = setTimeout(stop, timeUntil(ctx.deadline));
    });
    stopped.catch(() => undefined);
    let session: Session;
    try {
      session = await Promise.race([this.#connect(), stopped]);
    } finally {
      clearTimeout(timer);
      if (onAbort) ctx.signal.removeEventListener('abort', onAbort);
    }
    if (ctx.signal.aborted) throw stopReason(op, ctx);
    return this.#request(session, op, ctx, args);
  }

  /** Sends one request on a greeted session; settles with its answer, or when the call stops waiting. */
  #request<Op extends OperationName>(
    s: Session,
    op: Op,
    ctx: InvocationContext,
    args: OperationArgs<Op>,
  ): Promise<unknown> {
    return new Promise<unknown>((resolve, reject) => {
      const id = this.#nextId++;
      const signal = ctx.signal;
      const deadline = Number.isFinite(ctx.deadline) ? ctx.deadline : Date.now() + MAX_TIMER_MS;
      const settled = () => {
        signal.removeEventListener('abort', stop);
        if (s.pending.size === 0) s.conn.ref(false);
      };
      // The deadline passed or the caller aborted: a late answer's descriptors are closed on arrival.
      const stop = () => {
        if (s.pending.delete(id)) s.abandoned.add(id);
        settled();
        reject(stopReason(op, ctx));
      };
      s.add(id, {
        op,
        deadline,
        expire: stop,
        resolve: (value) => {
          settled();
          resolve(value);
        },
        reject: (err) => {
          settled();
          reject(err);
        },
      });
      signal.addEventListener('abort', stop, { once: true });
      s.conn.ref(true);
      try {
        s.conn.send({
          type: 'request',
          id,
          op,
          ctx: {
            // Only the fields the protocol knows: anything else would make the whole frame malformed.
            domain: { uuid: ctx.domain.uuid, name: ctx.domain.name, id: ctx.domain.id },
            phase: ctx.phase,
            pid: ctx.pid ?? null,
            deadline,
          },
          args,
        });
      } catch (err) {
        // Not sent (too big for a frame): nothing will answer it.
        s.pending.delete(id);
        settled();
        reject(err);
      }
    });
  }

  /** The session, when it is greeted and (as far as can be read now) still open. */
  #openSession(): Session | undefined {
    const open = this.#session;
    if (this.#closed || !open?.greeted) return undefined;
    // A helper that restarted since the last call has hung up: notice it now.
    open.conn.drain();
    return open.conn.closed ? undefined : open;
  }

  /** The open session, or a new one: reconnecting after the helper went away is just this. */
  #connect(): Promise<Session> {
    if (this.#closed) {
      return Promise.reject(
        new VirtError(ErrorCode.CONNECTION_CLOSED, 'the delegate was closed', { path: this.#socketPath }),
      );
    }
    const open = this.#session;
    // A helper that restarted since the last call has hung up: notice it now and connect anew.
    open?.conn.drain();
    if (open && !open.conn.closed) return open.ready.then(() => open);
    this.#connecting ??= this.#open().finally(() => {
      this.#connecting = undefined;
    });
    return this.#connecting;
  }

  async #open(): Promise<Session> {
    const until = Date.now() + this.#connectTimeoutMs;
    let fd: number | undefined;
    for (let delay = 2; fd === undefined; delay = Math.min(delay * 2, 50)) {
      try {
        fd = unixConnect(this.#socketPath);
      } catch (err) {
        const errno = err instanceof SyscallError ? err.code : undefined;
        // EAGAIN: the helper's backlog is full for a moment; anything else will not pass by waiting.
        if (errno !== 'EAGAIN' || Date.now() + delay > until) throw this.#connectError(err, errno);
        await new Promise((r) => setTimeout(r, delay));
      }
    }
    const session = new Session(fd, this.#socketPath, (s) => {
      if (this.#session === s) this.#session = undefined;
    });
    this.#session = session;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new VirtError(
              ErrorCode.OPERATION_TIMEOUT,
              `virtkit-privd at ${this.#socketPath} did not greet within ${this.#connectTimeoutMs} ms`,
              { path: this.#socketPath },
            ),
          ),
        Math.max(0, until - Date.now()),
      );
    });
    try {
      await Promise.race([session.ready, timeout]);
    } catch (err) {
      session.conn.close();
      throw err;
    } finally {
      clearTimeout(timer);
    }
    if (this.#closed) {
      session.conn.close();
      throw new VirtError(ErrorCode.CONNECTION_CLOSED, 'the delegate was closed', { path: this.#socketPath });
    }
    return session;
  }

  #connectError(err: unknown, errno: string | undefined): VirtError {
    return new VirtError(
      errno === 'EACCES' ? ErrorCode.ACCESS_DENIED : ErrorCode.SYSTEM_ERROR,
      `cannot connect to virtkit-privd at ${this.#socketPath}: ${errorMessage(err)}; is the helper running, and may this user open its socket?`,
      { path: this.#socketPath, errno },
      { cause: err },
    );
  }
}

/**
 * Turns a running `virtkit-privd` into handlers for the internal API: each forwards its invocation
 * (context and arguments) to the helper over the Unix socket at `socketPath`, honours the
 * invocation's deadline and AbortSignal, surfaces the helper's refusals as `ACCESS_DENIED` with
 * `details.rule`, and receives descriptors (TAP, disk) with SCM_RIGHTS. The connection is made on
 * the first call and made again on the next call after the helper restarted.
 *
 * @param socketPath - the helper's socket
 * @param options - connect timeout
 * @returns the handlers, `install(api)` to register them all, and `close()`
 * @public
 */
export function delegate(socketPath: string, options: DelegateOptions = {}): Delegate {
  const client = new Client(socketPath, options);
  const handlers = Object.fromEntries(
    OPERATIONS.map((op) => [
      op,
      (ctx: InvocationContext, args: OperationArgs<typeof op>) => client.call(op, ctx, args),
    ]),
  ) as unknown as { [Op in OperationName]: OperationHandler<Op> };
  return {
    handlers,
    install(api, handlerOptions) {
      for (const op of OPERATIONS)
        api.setHandler(op, handlers[op] as OperationHandler<typeof op>, handlerOptions);
    },
    close: () => client.close(),
  };
}

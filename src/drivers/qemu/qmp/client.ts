import * as net from 'node:net';
import { z } from 'zod';
import {
  ErrorCode,
  errnoOf,
  errorMessage,
  VirtError,
  type VirtErrorDetails,
} from '../../../stable/errors.js';
import { LineSplitter } from './framing.js';

/**
 * An asynchronous QMP event, e.g. `RESUME`, `STOP` or `SHUTDOWN`.
 *
 * @internal
 */
export interface QmpEvent {
  /** The event name. */
  event: string;
  /** The event payload; `{}` when QEMU sent none. */
  data: Record<string, unknown>;
  /** When QEMU emitted the event (host clock). */
  timestamp: { seconds: number; microseconds: number };
}

/**
 * The greeting QEMU sends when a client connects.
 *
 * @internal
 */
export interface QmpGreeting {
  /** The QEMU version. */
  qemu: { major: number; minor: number; micro: number };
  /** The distribution package string, e.g. `Debian 1:7.2+dfsg-7`. */
  package: string;
  /** Capabilities QEMU offers, e.g. `oob`; none are enabled by this client. */
  capabilities: string[];
}

/**
 * Options of {@link QmpClient.connect} and {@link QmpClient.fromSocket}.
 *
 * @internal
 */
export interface QmpConnectOptions {
  /** Deadline for connect, greeting and capability negotiation together. Default 10 000 ms. */
  timeoutMs?: number;
  /** The longest line accepted from QEMU, in bytes; a longer one kills the connection. Default 16 MiB. */
  maxLineBytes?: number;
  /** Aborts the connection attempt; see {@link QmpExecuteOptions.signal} for the error code. */
  signal?: AbortSignal;
}

/**
 * Options of {@link QmpClient.execute}.
 *
 * @internal
 */
export interface QmpExecuteOptions {
  /** How long to wait for the response; `Infinity` waits forever. Default 30 000 ms. */
  timeoutMs?: number;
  /**
   * Stops waiting for the response. The command rejects with the abort reason itself if it is a
   * {@link VirtError}, with `OPERATION_TIMEOUT` if the reason is a `TimeoutError` (as from
   * `AbortSignal.timeout()`), otherwise with `OPERATION_FAILED`.
   */
  signal?: AbortSignal;
}

const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const DEFAULT_COMMAND_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024;
/** setTimeout fires at once for delays above this. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** The greeting is awaited like a response to a command with this id; commands start at 1. */
const GREETING_ID = 0;

const GreetingSchema = z.object({
  QMP: z.object({
    version: z.object({
      qemu: z.object({ major: z.number(), minor: z.number(), micro: z.number() }),
      package: z.string(),
    }),
    capabilities: z.array(z.string()),
  }),
});

interface Pending {
  readonly command: string;
  readonly resolve: (value: unknown) => void;
  readonly reject: (err: VirtError) => void;
  /** Clears the timer and the abort listener. */
  readonly dispose: () => void;
}

/**
 * A client of the QEMU Machine Protocol over a UNIX socket: newline-delimited JSON, commands
 * multiplexed by id, events delivered synchronously in arrival order.
 *
 * @internal
 */
export class QmpClient {
  readonly #socket: net.Socket;
  readonly #lines: LineSplitter;
  readonly #maxLineBytes: number;
  readonly #pending = new Map<number, Pending>();
  readonly #eventListeners = new Listeners<QmpEvent>();
  readonly #disconnectListeners = new Listeners<Error | undefined>();
  #greeting: QmpGreeting | undefined;
  #established: boolean;
  #closed = false;
  #disconnectError: Error | undefined;
  #nextId = GREETING_ID + 1;
  #commandCount = 0;

  private constructor(socket: net.Socket, maxLineBytes: number) {
    this.#socket = socket;
    this.#maxLineBytes = maxLineBytes;
    this.#lines = new LineSplitter(maxLineBytes);
    this.#established = !socket.pending;
    socket.once('connect', () => {
      this.#established = true;
    });
    socket.on('data', (chunk: Buffer | string) => {
      const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      if (!this.#lines.push(bytes, this.#onLine)) {
        this.#protocolError(`QMP line exceeds ${this.#maxLineBytes} bytes`);
      }
    });
    socket.on('error', (err) => this.#onSocketGone(err));
    socket.on('end', () => this.#onSocketGone(undefined));
    socket.on('close', () => this.#onSocketGone(undefined));
  }

  /**
   * Connects to QEMU's QMP UNIX socket, reads the greeting and negotiates capabilities.
   *
   * @param socketPath - the path given to `-qmp unix:PATH,server=on`
   * @throws VirtError `SYSTEM_ERROR` (with `details.errno`) if the socket cannot be connected,
   *   `OPERATION_TIMEOUT` past `timeoutMs`, `OPERATION_FAILED` if the peer does not speak QMP
   */
  static connect(socketPath: string, options: QmpConnectOptions = {}): Promise<QmpClient> {
    return QmpClient.fromSocket(net.createConnection(socketPath), options);
  }

  /**
   * Like {@link QmpClient.connect} for a socket that is connecting or connected. The client owns
   * the socket from now on and destroys it on failure.
   */
  static async fromSocket(socket: net.Socket, options: QmpConnectOptions = {}): Promise<QmpClient> {
    if (socket.destroyed) {
      throw new VirtError(ErrorCode.CONNECTION_CLOSED, 'The QMP socket is already closed');
    }
    const client = new QmpClient(socket, options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES);
    const timeoutMs = options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    // One deadline for all phases: the caller cares about how long connecting takes, not each step.
    const deadline = new AbortController();
    const timer = startTimer(timeoutMs, () =>
      deadline.abort(timeoutError('greeting and negotiation', timeoutMs, {})),
    );
    const { signal } = options;
    const forward = (): void => deadline.abort(signal?.reason);
    if (signal?.aborted) forward();
    else signal?.addEventListener('abort', forward, { once: true });
    try {
      await client.#expect(GREETING_ID, 'greeting', Number.POSITIVE_INFINITY, deadline.signal);
      await client.execute('qmp_capabilities', undefined, {
        timeoutMs: Number.POSITIVE_INFINITY,
        signal: deadline.signal,
      });
      return client;
    } catch (err) {
      client.close();
      throw err;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', forward);
    }
  }

  /** What QEMU announced when the connection opened. */
  get greeting(): QmpGreeting {
    // Set before connect()/fromSocket() resolve, so always defined for a caller.
    return this.#greeting!;
  }

  /** True once the connection is closed, by either side. */
  get closed(): boolean {
    return this.#closed;
  }

  /** How many commands were sent, `qmp_capabilities` included. */
  get commandCount(): number {
    return this.#commandCount;
  }

  /**
   * Runs a QMP command and resolves with its `return` value. Several commands may be in flight at
   * once. A command that times out or is aborted may still run in QEMU; its late response is
   * ignored.
   *
   * @throws VirtError `OPERATION_FAILED` if QEMU refused the command (`details.qmpClass` holds the
   *   QMP error class) or broke the protocol, `OPERATION_TIMEOUT` past `timeoutMs`,
   *   `CONNECTION_CLOSED` if the connection is or becomes closed
   */
  execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    options: QmpExecuteOptions = {},
  ): Promise<T> {
    if (this.#closed) {
      return Promise.reject(
        new VirtError(ErrorCode.CONNECTION_CLOSED, `QMP connection is closed, cannot run ${command}`, {
          command,
        }),
      );
    }
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(abortError(signal.reason, command));
    const id = this.#nextId++;
    const reply = this.#expect(id, command, options.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS, signal);
    this.#commandCount++;
    this.#socket.write(`${JSON.stringify({ execute: command, arguments: args, id })}\n`);
    return reply as Promise<T>;
  }

  /**
   * Subscribes to events. Listeners run synchronously as each line is parsed, so one subscribed
   * before a command is sent sees every event that precedes the command's response.
   *
   * @returns a function that unsubscribes
   */
  onEvent(listener: (ev: QmpEvent) => void): () => void {
    return this.#closed ? noop : this.#eventListeners.add(listener);
  }

  /**
   * Subscribes to the end of the connection; the listener runs once, with the cause, or with
   * `undefined` after {@link QmpClient.close}. Subscribing after the end calls it on a microtask.
   *
   * @returns a function that unsubscribes
   */
  onDisconnect(listener: (err?: Error) => void): () => void {
    if (!this.#closed) return this.#disconnectListeners.add(listener);
    const err = this.#disconnectError;
    queueMicrotask(() => listener(err));
    return noop;
  }

  /** Destroys the socket; pending commands reject with `CONNECTION_CLOSED`. Idempotent. */
  close(): void {
    this.#shutdown(new VirtError(ErrorCode.CONNECTION_CLOSED, 'QMP connection closed'), undefined);
  }

  /** Registers a waiter for the response with this id. */
  #expect(id: number, command: string, timeoutMs: number, signal: AbortSignal | undefined): Promise<unknown> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(abortError(signal.reason, command));
        return;
      }
      const timer = startTimer(timeoutMs, () =>
        this.#take(id)?.reject(timeoutError(command, timeoutMs, { command })),
      );
      const onAbort = (): void => this.#take(id)?.reject(abortError(signal?.reason, command));
      signal?.addEventListener('abort', onAbort, { once: true });
      const dispose = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      this.#pending.set(id, { command, resolve, reject, dispose });
    });
  }

  /** Removes and returns the waiter for `id`, if it is still waiting. */
  #take(id: number): Pending | undefined {
    const entry = this.#pending.get(id);
    if (entry === undefined) return undefined;
    this.#pending.delete(id);
    entry.dispose();
    return entry;
  }

  readonly #onLine = (line: string): void => {
    if (this.#closed) return;
    let msg: unknown;
    try {
      msg = JSON.parse(line);
    } catch (err) {
      // Checked only on failure so the hot path does not scan every line twice.
      if (line.trim() !== '') this.#protocolError(`QMP sent malformed JSON: ${errorMessage(err)}`);
      return;
    }
    if (!isRecord(msg)) {
      this.#protocolError('QMP sent a message that is not a JSON object');
    } else if (typeof msg.event === 'string') {
      this.#emit(msg.event, msg);
    } else if (this.#greeting === undefined) {
      this.#onGreeting(msg);
    } else if (typeof msg.id === 'number') {
      const entry = this.#take(msg.id);
      if (entry === undefined) return;
      if ('error' in msg) entry.reject(qmpError(entry.command, msg.error));
      else entry.resolve(msg.return);
    }
  };

  #onGreeting(msg: Record<string, unknown>): void {
    const parsed = GreetingSchema.safeParse(msg);
    if (!parsed.success) {
      this.#protocolError('The peer did not send a QMP greeting; is this a QMP socket?');
      return;
    }
    const { version, capabilities } = parsed.data.QMP;
    this.#greeting = { qemu: version.qemu, package: version.package, capabilities };
    this.#take(GREETING_ID)?.resolve(undefined);
  }

  #emit(event: string, msg: Record<string, unknown>): void {
    if (this.#eventListeners.empty) return;
    const ts = isRecord(msg.timestamp) ? msg.timestamp : {};
    this.#eventListeners.emit({
      event,
      data: isRecord(msg.data) ? msg.data : {},
      timestamp: {
        seconds: typeof ts.seconds === 'number' ? ts.seconds : 0,
        microseconds: typeof ts.microseconds === 'number' ? ts.microseconds : 0,
      },
    });
  }

  #protocolError(message: string): void {
    const err = new VirtError(ErrorCode.OPERATION_FAILED, message);
    this.#shutdown(err, err);
  }

  #onSocketGone(cause: Error | undefined): void {
    if (this.#closed) return;
    const details = cause && errnoOf(cause) ? { errno: errnoOf(cause) } : {};
    const err =
      cause && !this.#established
        ? new VirtError(
            ErrorCode.SYSTEM_ERROR,
            `Cannot connect to the QMP socket: ${cause.message}`,
            details,
            { cause },
          )
        : new VirtError(
            ErrorCode.CONNECTION_CLOSED,
            cause ? `QMP connection failed: ${cause.message}` : 'QEMU closed the QMP connection',
            details,
            { cause },
          );
    this.#shutdown(err, err);
  }

  /** Ends the connection once: rejects pending commands, then tells disconnect listeners. */
  #shutdown(pendingError: VirtError, disconnectError: Error | undefined): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#disconnectError = disconnectError;
    this.#socket.destroy();
    for (const [id, entry] of this.#pending) {
      this.#pending.delete(id);
      entry.dispose();
      entry.reject(pendingError);
    }
    this.#eventListeners.clear();
    this.#disconnectListeners.emit(disconnectError);
    this.#disconnectListeners.clear();
  }
}

/** A copy-on-write listener list: emitting iterates the list as it was when the emit began. */
class Listeners<A> {
  #list: ReadonlyArray<(arg: A) => void> = [];

  get empty(): boolean {
    return this.#list.length === 0;
  }

  add(listener: (arg: A) => void): () => void {
    this.#list = [...this.#list, listener];
    let subscribed = true;
    return () => {
      if (!subscribed) return;
      subscribed = false;
      const i = this.#list.indexOf(listener);
      if (i !== -1) this.#list = this.#list.toSpliced(i, 1);
    };
  }

  emit(arg: A): void {
    for (const listener of this.#list) {
      try {
        listener(arg);
      } catch (err) {
        // Surface the bug without leaving the protocol state half-updated.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }

  clear(): void {
    this.#list = [];
  }
}

/** Like setTimeout, but `Infinity` means never and long delays do not wrap around to 1 ms. */
function startTimer(ms: number, callback: () => void): NodeJS.Timeout | undefined {
  return Number.isFinite(ms) ? setTimeout(callback, Math.min(ms, MAX_TIMER_MS)) : undefined;
}

function timeoutError(what: string, timeoutMs: number, details: VirtErrorDetails): VirtError {
  return new VirtError(ErrorCode.OPERATION_TIMEOUT, `QMP ${what} did not finish within ${timeoutMs} ms`, {
    ...details,
    timeoutMs,
  });
}

function abortError(reason: unknown, command: string): VirtError {
  if (VirtError.is(reason)) return reason;
  const timedOut = isRecord(reason) && reason.name === 'TimeoutError';
  return new VirtError(
    timedOut ? ErrorCode.OPERATION_TIMEOUT : ErrorCode.OPERATION_FAILED,
    `QMP ${command} was aborted: ${errorMessage(reason)}`,
    { command },
    { cause: reason },
  );
}

function qmpError(command: string, error: unknown): VirtError {
  const e = isRecord(error) ? error : {};
  const qmpClass = typeof e.class === 'string' ? e.class : 'GenericError';
  const desc = typeof e.desc === 'string' ? e.desc : 'no description';
  return new VirtError(ErrorCode.OPERATION_FAILED, `QMP ${command} failed: ${desc}`, { command, qmpClass });
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function noop(): void {}

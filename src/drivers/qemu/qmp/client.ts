import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { ErrorCode, errnoOf, errorMessage, VirtError, type VirtErrorDetails } from '../../../errors.js';
import {
  channels,
  type QmpCommandMessage,
  type QmpEventMessage,
  type TracedDomain,
  traceAsync,
  tracing,
} from '../../../stable/tracing.js';
import { unixConnect } from '../../../util/unix-socket.js';
import { qapiJson } from '../devices/qapi.js';
import { QMP_COMMANDS, type QmpArguments, type QmpCommandName, type QmpReply } from './commands.js';
import { QMP_EVENTS, type QmpEventData, type QmpEventName } from './events.js';
import { LineSplitter } from './framing.js';
import { LineTransport, type WriteHandle } from './transport.js';

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
  /** The domain this QEMU runs, named in the messages of the diagnostics channels. */
  domain?: TracedDomain;
}

/**
 * Options of {@link QmpClient.execute} and {@link QmpClient.command}.
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
  /**
   * Descriptors passed with the command (`SCM_RIGHTS`), for `getfd` and `add-fd`. The caller keeps
   * them and may close them once the returned promise settles. Commands carrying descriptors are
   * sent one at a time, since QEMU keeps only the descriptors of the latest message.
   */
  fds?: readonly number[];
  /** The command comes from `monitorCommand` (QMP passthrough); only the tracing message says so. */
  passthrough?: boolean;
}

/**
 * Options of {@link QmpClient.waitForEvent}.
 *
 * @internal
 */
export interface QmpWaitOptions {
  /** How long to wait; `Infinity` waits forever. Default 30 000 ms. */
  timeoutMs?: number;
  /** Stops waiting; the error follows the rules of {@link QmpExecuteOptions.signal}. */
  signal?: AbortSignal;
}

/**
 * An event of {@link QMP_EVENTS} with its payload validated.
 *
 * @internal
 */
export interface QmpTypedEvent<E extends QmpEventName> extends QmpEvent {
  /** The event name. */
  event: E;
  /** The payload, checked against the event's schema. */
  data: QmpEventData<E>;
}

/**
 * The arguments of {@link QmpClient.command} after the name: none (or `undefined`) for a command
 * without arguments, then the options.
 *
 * @internal
 */
export type QmpCommandRest<K extends QmpCommandName> =
  undefined extends QmpArguments<K>
    ? [args?: QmpArguments<K>, options?: QmpExecuteOptions]
    : [args: QmpArguments<K>, options?: QmpExecuteOptions];

const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const DEFAULT_COMMAND_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024;
/** setTimeout fires at once for delays above this. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** The greeting is awaited like a response to a command with this id; commands start at 1. */
const GREETING_ID = 0;
/** Pause between connect attempts while the listener's backlog is full (`EAGAIN`). */
const BACKLOG_RETRY_MS = 5;

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
 * multiplexed by id, events delivered synchronously in arrival order, descriptors passed with
 * `SCM_RIGHTS`, and events awaited with {@link QmpClient.waitForEvent}.
 *
 * @internal
 */
export class QmpClient {
  readonly #transport: LineTransport;
  readonly #lines: LineSplitter;
  readonly #maxLineBytes: number;
  readonly #pending = new Map<number, Pending>();
  readonly #eventListeners = new Listeners<QmpEvent>();
  readonly #disconnectListeners = new Listeners<Error | undefined>();
  #greeting: QmpGreeting | undefined;
  #closed = false;
  /** Settles when the last command carrying descriptors has its response. */
  #fdTail: Promise<unknown> = Promise.resolve();
  #disconnectError: Error | undefined;
  #nextId = GREETING_ID + 1;
  #commandCount = 0;
  /** The domain this QEMU runs, for the diagnostics channels; undefined for a probe. */
  domain: TracedDomain | undefined;

  private constructor(fd: number, maxLineBytes: number) {
    this.#maxLineBytes = maxLineBytes;
    this.#lines = new LineSplitter(maxLineBytes);
    this.#transport = new LineTransport(fd, {
      data: (bytes) => {
        if (!this.#lines.push(bytes, this.#onLine)) {
          this.#protocolError(`QMP line exceeds ${this.#maxLineBytes} bytes`);
        }
      },
      gone: (cause) => this.#onSocketGone(cause),
    });
  }

  /**
   * Connects to QEMU's QMP UNIX socket, reads the greeting and negotiates capabilities.
   *
   * @param socketPath - the path given to `-qmp unix:PATH,server=on`
   * @throws VirtError `SYSTEM_ERROR` (with `details.errno`) if the socket cannot be connected,
   *   `OPERATION_TIMEOUT` past `timeoutMs`, `OPERATION_FAILED` if the peer does not speak QMP
   */
  static async connect(socketPath: string, options: QmpConnectOptions = {}): Promise<QmpClient> {
    const deadline = Date.now() + (options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS);
    let fd: number;
    for (;;) {
      try {
        fd = unixConnect(socketPath);
        break;
      } catch (err) {
        // A full backlog is transient; anything else (ENOENT, ECONNREFUSED, EACCES) is final.
        if (errnoOf(err) !== 'EAGAIN' || Date.now() >= deadline || options.signal?.aborted) {
          throw new VirtError(
            ErrorCode.SYSTEM_ERROR,
            `Cannot connect to the QMP socket: ${errorMessage(err)}`,
            errnoOf(err) ? { errno: errnoOf(err) } : {},
            { cause: err },
          );
        }
        await sleep(BACKLOG_RETRY_MS);
      }
    }
    return QmpClient.fromFd(fd, { ...options, timeoutMs: Math.max(0, deadline - Date.now()) });
  }

  /**
   * Like {@link QmpClient.connect} for a connected, non-blocking Unix socket descriptor. The client
   * owns the descriptor from now on and closes it on failure.
   */
  static async fromFd(fd: number, options: QmpConnectOptions = {}): Promise<QmpClient> {
    const client = new QmpClient(fd, options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES);
    client.domain = options.domain;
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
    if (!tracing(channels.qmpCommand)) return this.#send(command, args, options);
    const message: QmpCommandMessage = {
      domain: this.domain,
      command,
      arguments: args,
      passthrough: options.passthrough === true,
    };
    return traceAsync(channels.qmpCommand, message, () => this.#send<T>(command, args, options));
  }

  #send<T>(
    command: string,
    args: Record<string, unknown> | undefined,
    options: QmpExecuteOptions,
  ): Promise<T> {
    if (this.#closed) {
      return Promise.reject(
        new VirtError(ErrorCode.CONNECTION_CLOSED, `QMP connection is closed, cannot run ${command}`, {
          command,
        }),
      );
    }
    const { signal, fds } = options;
    if (signal?.aborted) return Promise.reject(abortError(signal.reason, command));
    const id = this.#nextId++;
    const line = Buffer.from(`${qapiJson({ execute: command, arguments: args, id })}\n`);
    this.#commandCount++;
    if (fds === undefined || fds.length === 0) {
      const reply = this.#expect(id, command, options.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS, signal);
      this.#transport.write(line);
      return reply as Promise<T>;
    }
    // The deadline runs from now; the line waits until the previous descriptors were consumed.
    let handle: WriteHandle | undefined;
    const reply = this.#expect(id, command, options.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS, signal, () => {
      // Settled before it went out: never send descriptors the caller may close from now on.
      if (handle) this.#transport.cancel(handle);
    });
    const send = (): void => {
      if (this.#pending.has(id)) handle = this.#transport.write(line, fds);
    };
    const previous = this.#fdTail;
    this.#fdTail = reply.catch(noop);
    void previous.then(send);
    return reply as Promise<T>;
  }

  /**
   * Runs a command of {@link QMP_COMMANDS} and resolves with its reply, checked against the
   * command's schema.
   *
   * @throws VirtError as {@link QmpClient.execute}, and `OPERATION_FAILED` (`details.command`) when
   *   the reply does not match the schema; the connection stays usable
   */
  async command<K extends QmpCommandName>(name: K, ...rest: QmpCommandRest<K>): Promise<QmpReply<K>> {
    const [args, options] = rest;
    const raw = await this.execute(name, args as Record<string, unknown> | undefined, options);
    const parsed = QMP_COMMANDS[name].reply.safeParse(raw);
    if (!parsed.success) {
      throw new VirtError(
        ErrorCode.OPERATION_FAILED,
        `QEMU's reply to ${name} does not have the expected shape: ${describeIssues(parsed.error)}`,
        { command: name },
      );
    }
    return parsed.data as QmpReply<K>;
  }

  /**
   * Passes a descriptor to QEMU under a name (`getfd`), for commands that take an fd name
   * (`netdev_add`'s `fd`, `closefd`). The caller keeps its copy and may close it once this settles.
   */
  async getfd(fdname: string, fd: number, options: Omit<QmpExecuteOptions, 'fds'> = {}): Promise<void> {
    await this.command('getfd', { fdname }, { ...options, fds: [fd] });
  }

  /**
   * Adds a descriptor to an fd set (`add-fd`), which QEMU opens as `/dev/fdset/<fdset-id>`. The
   * caller keeps its copy and may close it once this settles.
   *
   * @returns the fd set's id and the descriptor's number inside QEMU
   */
  addFd(
    fd: number,
    target: { fdsetId?: number; opaque?: string } = {},
    options: Omit<QmpExecuteOptions, 'fds'> = {},
  ): Promise<QmpReply<'add-fd'>> {
    const args: QmpArguments<'add-fd'> = {};
    if (target.fdsetId !== undefined) args['fdset-id'] = target.fdsetId;
    if (target.opaque !== undefined) args.opaque = target.opaque;
    return this.command('add-fd', args, { ...options, fds: [fd] });
  }

  /**
   * Waits for the next event named `name` whose payload satisfies `predicate`. The wait starts
   * when this is called, so call it before the command that provokes the event and await it after:
   * an event that arrives before the command's response is not missed. The payload of an event of
   * {@link QMP_EVENTS} is validated first; a malformed one rejects the wait.
   *
   * @throws VirtError `OPERATION_TIMEOUT` past `timeoutMs`, `CONNECTION_CLOSED` when the connection
   *   ends first, `OPERATION_FAILED` for a malformed payload or an abort (see
   *   {@link QmpExecuteOptions.signal})
   */
  waitForEvent<E extends QmpEventName>(
    name: E,
    predicate?: (ev: QmpTypedEvent<E>) => boolean,
    options: QmpWaitOptions = {},
  ): Promise<QmpTypedEvent<E>> {
    const what = `wait for ${name}`;
    if (this.#closed) {
      return Promise.reject(
        new VirtError(ErrorCode.CONNECTION_CLOSED, `QMP connection is closed, cannot ${what}`, {
          event: name,
        }),
      );
    }
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(abortError(signal.reason, what));
    return new Promise((resolve, reject) => {
      const timeoutMs = options.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
      const finish = (err: VirtError | undefined, ev?: QmpTypedEvent<E>): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        offEvent();
        offDisconnect();
        if (err) reject(err);
        else resolve(ev as QmpTypedEvent<E>);
      };
      const onAbort = (): void => finish(abortError(signal?.reason, what));
      const timer = startTimer(timeoutMs, () => finish(timeoutError(what, timeoutMs, { event: name })));
      signal?.addEventListener('abort', onAbort, { once: true });
      const offEvent = this.#eventListeners.add((ev) => {
        if (ev.event !== name) return;
        const parsed = QMP_EVENTS[name].safeParse(ev.data);
        if (!parsed.success) {
          finish(
            new VirtError(
              ErrorCode.OPERATION_FAILED,
              `QEMU sent a malformed ${name} event: ${describeIssues(parsed.error)}`,
              { event: name },
            ),
          );
          return;
        }
        const typed = { ...ev, event: name, data: parsed.data as QmpEventData<E> };
        if (predicate && !predicate(typed)) return;
        finish(undefined, typed);
      });
      const offDisconnect = this.#disconnectListeners.add(() =>
        finish(
          new VirtError(ErrorCode.CONNECTION_CLOSED, `QMP connection closed during ${what}`, { event: name }),
        ),
      );
    });
  }

  /** Keeps the process alive while the connection is open (the default), or not. */
  ref(on: boolean): void {
    if (!this.#closed) this.#transport.ref(on);
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
    this.#shutdown(() => new VirtError(ErrorCode.CONNECTION_CLOSED, 'QMP connection closed'), undefined);
  }

  /** Registers a waiter for the response with this id. */
  #expect(
    id: number,
    command: string,
    timeoutMs: number,
    signal: AbortSignal | undefined,
    onGiveUp?: () => void,
  ): Promise<unknown> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(abortError(signal.reason, command));
        return;
      }
      const giveUp = (err: VirtError): void => {
        const entry = this.#take(id);
        if (!entry) return;
        onGiveUp?.();
        entry.reject(err);
      };
      const timer = startTimer(timeoutMs, () => giveUp(timeoutError(command, timeoutMs, { command })));
      const onAbort = (): void => giveUp(abortError(signal?.reason, command));
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
    const published = channels.qmpEvent.hasSubscribers;
    if (this.#eventListeners.empty && !published) return;
    const ts = isRecord(msg.timestamp) ? msg.timestamp : {};
    const ev: QmpEvent = {
      event,
      data: isRecord(msg.data) ? msg.data : {},
      timestamp: {
        seconds: typeof ts.seconds === 'number' ? ts.seconds : 0,
        microseconds: typeof ts.microseconds === 'number' ? ts.microseconds : 0,
      },
    };
    // Subscribers get their own copy: what they do to it cannot reach the driver's listeners.
    if (published)
      channels.qmpEvent.publish({ domain: this.domain, ...structuredClone(ev) } satisfies QmpEventMessage);
    this.#eventListeners.emit(ev);
  }

  #protocolError(message: string): void {
    const err = new VirtError(ErrorCode.OPERATION_FAILED, message);
    this.#shutdown(() => err, err);
  }

  #onSocketGone(cause: Error | undefined): void {
    if (this.#closed) return;
    const details = cause && errnoOf(cause) ? { errno: errnoOf(cause) } : {};
    const err = new VirtError(
      ErrorCode.CONNECTION_CLOSED,
      cause ? `QMP connection failed: ${cause.message}` : 'QEMU closed the QMP connection',
      details,
      { cause },
    );
    this.#shutdown(() => err, err);
  }

  /**
   * Ends the connection once: rejects pending commands, then tells disconnect listeners. The
   * pending commands' error is made only when there are any: every domain that stops closes its
   * monitor, mostly with nothing pending, and an error's stack trace is not free.
   */
  #shutdown(pendingError: () => VirtError, disconnectError: Error | undefined): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#disconnectError = disconnectError;
    this.#transport.close();
    let error: VirtError | undefined;
    for (const [id, entry] of this.#pending) {
      this.#pending.delete(id);
      entry.dispose();
      error ??= pendingError();
      entry.reject(error);
    }
    this.#eventListeners.clear();
    // Event waiters listen for the end too: they reject with the pending commands' error.
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

/** The first few zod issues as `path: message`, for an error message. */
function describeIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 3)
    .map((i) => `${i.path.length > 0 ? i.path.join('.') : '(top)'}: ${i.message}`)
    .join('; ');
}

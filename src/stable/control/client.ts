import { createConnection, type Socket } from 'node:net';
import { ErrorCode, errorMessage, VirtError } from '../../errors.js';
import type { DomainEvent } from '../events.js';
import type { OperationArgs, OperationName, OperationResult } from './operations.js';
import {
  CONTROL_PROTOCOL_VERSION,
  errorFromWire,
  LineReader,
  MAX_LINE_BYTES,
  replySchema,
} from './protocol.js';

interface Waiter {
  resolve(result: unknown): void;
  reject(err: VirtError): void;
  /** Events of a subscription, or progress of a call. */
  onEvent?: ((event: unknown) => void) | undefined;
  /** A subscription outlives its first reply. */
  subscription: boolean;
}

/**
 * The client end of a driver's control socket, as the `virtkit` command uses it: one request per
 * call, replies matched by id, events of a subscription delivered as they come.
 */
export class ControlClient {
  readonly #socket: Socket;
  readonly #reader = new LineReader(4 * MAX_LINE_BYTES);
  readonly #waiters = new Map<number, Waiter>();
  #nextId = 1;
  #failure: VirtError | undefined;

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.on('data', (chunk: Buffer) => this.#data(chunk));
    socket.on('error', (err) => this.#fail(this.#lost(errorMessage(err))));
    socket.on('close', () => this.#fail(this.#lost('the driver closed the control socket')));
  }

  /** Connects to the control socket at `path`. */
  static connect(path: string): Promise<ControlClient> {
    return new Promise((resolve, reject) => {
      const socket = createConnection(path);
      socket.once('connect', () => resolve(new ControlClient(socket)));
      socket.once('error', (err: NodeJS.ErrnoException) =>
        reject(
          new VirtError(
            err.code === 'EACCES' ? ErrorCode.ACCESS_DENIED : ErrorCode.SYSTEM_ERROR,
            `cannot connect to the control socket ${path}: ${err.message}`,
            { path, errno: err.code },
          ),
        ),
      );
    });
  }

  /** Runs one operation in the driver that holds the root. */
  call<K extends OperationName>(
    op: K,
    args: OperationArgs<K>,
    onProgress?: (progress: unknown) => void,
  ): Promise<OperationResult<K>> {
    return this.#request(op, args, onProgress, false) as Promise<OperationResult<K>>;
  }

  /** Subscribes to the driver's domain events (of one domain, when given). */
  async subscribe(domain: string | undefined, onEvent: (event: DomainEvent) => void): Promise<void> {
    await this.#request(
      'events',
      domain === undefined ? {} : { domain },
      (e) => onEvent(e as DomainEvent),
      true,
    );
  }

  /** Resolves when the connection is gone. */
  closed(): Promise<void> {
    return new Promise((resolve) => {
      if (this.#socket.closed) resolve();
      else this.#socket.once('close', () => resolve());
    });
  }

  /** Closes the connection. */
  close(): void {
    this.#socket.destroy();
  }

  #request(
    op: string,
    args: unknown,
    onEvent: ((event: unknown) => void) | undefined,
    subscription: boolean,
  ): Promise<unknown> {
    if (this.#failure) return Promise.reject(this.#failure);
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#waiters.set(id, { resolve, reject, onEvent, subscription });
      this.#socket.write(`${JSON.stringify({ v: CONTROL_PROTOCOL_VERSION, id, op, args })}\n`);
    });
  }

  #data(chunk: Buffer): void {
    try {
      for (const text of this.#reader.push(chunk)) {
        const reply = replySchema.parse(JSON.parse(text));
        if ('event' in reply) {
          this.#waiters.get(reply.id)?.onEvent?.(reply.event);
          continue;
        }
        if (reply.id === null) {
          // The driver refused the connection or the protocol: every request fails with its reason.
          this.#fail(reply.ok ? this.#lost('an unsolicited reply') : errorFromWire(reply.error));
          continue;
        }
        const waiter = this.#waiters.get(reply.id);
        if (!waiter) continue;
        if (!waiter.subscription || !reply.ok) this.#waiters.delete(reply.id);
        if (reply.ok) waiter.resolve(reply.result);
        else waiter.reject(errorFromWire(reply.error));
      }
    } catch (err) {
      this.#fail(this.#lost(`a malformed reply: ${errorMessage(err)}`));
      this.#socket.destroy();
    }
  }

  #lost(why: string): VirtError {
    return new VirtError(ErrorCode.CONNECTION_CLOSED, `lost the control socket: ${why}`);
  }

  #fail(err: VirtError): void {
    this.#failure ??= err;
    for (const w of this.#waiters.values()) w.reject(this.#failure);
    this.#waiters.clear();
  }
}

import { closeFd } from '../../../util/libc.js';
import {
  controlBuffer,
  type FdEvents,
  type FdWatch,
  receiveWithRights,
  sendWithRights,
  watchFd,
} from '../../../util/unix-socket.js';

/**
 * What a {@link LineTransport} reports to its owner.
 *
 * @internal
 */
export interface TransportEvents {
  /** Bytes read from the peer, in order; the chunk is reused after the call returns. */
  data(chunk: Buffer): void;
  /** The connection is gone: `undefined` on EOF, the error otherwise. Called at most once. */
  gone(cause: Error | undefined): void;
}

/**
 * Identifies a queued write for {@link LineTransport.cancel}.
 *
 * @internal
 */
export type WriteHandle = object;

interface Outgoing {
  data: Buffer;
  /** Borrowed from the caller, who keeps them open until {@link Outgoing.sent} runs. */
  fds: readonly number[];
  /** Called once the descriptors are in the kernel (with the first byte), or with false if never. */
  sent?: (ok: boolean) => void;
  /** True once any byte (and so the descriptors) went out. */
  started: boolean;
}

/** Reads per readiness callback, so a chatty peer cannot hold the event loop. */
const READS_PER_WAKEUP = 16;
/** Most QMP replies fit; query-machines and the like (tens of KiB) take a few reads. */
const READ_BUFFER_BYTES = 16 * 1024;

/**
 * A raw non-blocking Unix stream socket on Node's event loop that can pass descriptors
 * (`SCM_RIGHTS`), which `net.Socket` cannot. Descriptors the peer sends are closed at once: QEMU
 * never sends any, and one that arrived anyway must not leak.
 *
 * @internal
 */
export class LineTransport {
  readonly #fd: number;
  readonly #events: TransportEvents;
  readonly #watch: FdWatch;
  readonly #out: Outgoing[] = [];
  readonly #readBuf = Buffer.allocUnsafe(READ_BUFFER_BYTES);
  readonly #control = controlBuffer();
  #closed = false;
  /** True while `data` runs, which may write and so fail: no nested read may reuse the buffer. */
  #reading = false;

  /**
   * @param fd - a connected, non-blocking socket; the transport owns it from now on
   * @param events - where data and the end go
   */
  constructor(fd: number, events: TransportEvents) {
    this.#fd = fd;
    this.#events = events;
    try {
      this.#watch = watchFd(fd, (status, ev) => this.#ready(status, ev));
    } catch (err) {
      closeQuietly(fd);
      throw err;
    }
  }

  /** True once closed, by either side. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Queues bytes, with descriptors attached to their first byte. The caller keeps ownership of the
   * descriptors (the kernel duplicates them into the message) and must keep them open until `sent`
   * is called: with true once they are on their way, with false when the transport closed first.
   */
  write(data: Buffer, fds: readonly number[] = [], sent?: (ok: boolean) => void): WriteHandle {
    const entry: Outgoing = { data, fds, sent, started: false };
    if (this.#closed) {
      sent?.(false);
      return entry;
    }
    this.#out.push(entry);
    if (this.#out.length === 1) this.#flush();
    return entry;
  }

  /**
   * Drops a queued write whose first byte has not gone out yet (its `sent` gets false).
   *
   * @returns true when it was dropped, false when it is sent or partly sent
   */
  cancel(handle: WriteHandle): boolean {
    const i = this.#out.indexOf(handle as Outgoing);
    if (i === -1 || this.#out[i]?.started) return false;
    const [entry] = this.#out.splice(i, 1);
    entry?.sent?.(false);
    return true;
  }

  /** Keeps the process alive while open (or not). */
  ref(on: boolean): void {
    this.#watch.ref(on);
  }

  /** Closes the socket at once; unsent data is dropped. Does not call `gone`. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#watch.close();
    closeQuietly(this.#fd);
    for (const entry of this.#out.splice(0)) entry.sent?.(false);
  }

  #gone(cause: Error | undefined): void {
    if (this.#closed) return;
    this.close();
    this.#events.gone(cause);
  }

  #ready(status: number, ev: FdEvents): void {
    if (this.#closed) return;
    if (status < 0) {
      // POLLERR (peer gone with our data unread): what it sent before is still there to read.
      this.#read();
      this.#gone(new Error(`socket poll failed (libuv status ${status})`));
      return;
    }
    if (ev.writable) this.#flush();
    if (!this.#closed && (ev.readable || ev.disconnect)) this.#read();
  }

  #read(): void {
    for (let i = 0; i < READS_PER_WAKEUP && !this.#closed; i++) {
      let got: ReturnType<typeof receiveWithRights>;
      try {
        got = receiveWithRights(this.#fd, this.#readBuf, this.#control);
      } catch (err) {
        this.#gone(err as Error);
        return;
      }
      if (!got) return;
      for (const fd of got.fds) closeQuietly(fd);
      if (got.bytes === 0) {
        this.#gone(undefined);
        return;
      }
      this.#reading = true;
      try {
        this.#events.data(this.#readBuf.subarray(0, got.bytes));
      } finally {
        this.#reading = false;
      }
    }
  }

  #flush(): void {
    while (!this.#closed) {
      const next = this.#out[0];
      if (!next) break;
      let sent: number | undefined;
      try {
        sent = sendWithRights(this.#fd, next.data, next.fds);
      } catch (err) {
        // EPIPE/ECONNRESET: whatever the peer said before hanging up is still readable.
        if (!this.#reading) this.#read();
        this.#gone(err as Error);
        return;
      }
      if (sent === undefined) {
        this.#watch.want(true);
        return;
      }
      next.started = true;
      if (next.fds.length > 0 || next.sent) {
        next.sent?.(true);
        next.fds = [];
        next.sent = undefined;
      }
      next.data = next.data.subarray(sent);
      if (next.data.length === 0) this.#out.shift();
    }
    if (!this.#closed) this.#watch.want(false);
  }
}

function closeQuietly(fd: number): void {
  try {
    closeFd(fd);
  } catch {
    // already closed
  }
}

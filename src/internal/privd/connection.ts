import { ErrorCode, errorMessage, VirtError } from '../../errors.js';
import { closeFd } from '../../util/libc.js';
import { type FdEvents, type FdWatch, sendWithRights, watchFd } from '../../util/unix-socket.js';
import {
  decodePayload,
  encodeFrame,
  FRAME_HEADER_BYTES,
  FrameReader,
  MAX_FRAME_BYTES,
  ProtocolError,
} from './protocol.js';
import { NativeReceiver, receivePlain, sendPlain } from './socket-io.js';

/** What a {@link FramedConnection} reports to its owner. */
export interface ConnectionEvents {
  /** One complete, decoded frame; `takeFds` gives the descriptors that came with it. */
  message(message: unknown): void;
  /** The connection is gone (EOF, error, or `close()`); called exactly once. */
  closed(reason: VirtError | undefined): void;
}

interface Outgoing {
  data: Buffer;
  /** Owned by the connection until sent (then closed: the receiver has its own copies). */
  fds: number[];
}

/** How many reads one readiness callback does at most, so one busy peer cannot starve the others. */
const READS_PER_WAKEUP = 16;

/*
 * One receive buffer (and control buffer) for every connection of the process: a read is handled
 * to the end synchronously and the frame reader copies what it keeps, so nothing refers to them
 * across reads. A thousand connections then cost a thousand descriptors, not 66 MiB of buffers.
 */
const READ_CAPACITY = FRAME_HEADER_BYTES + MAX_FRAME_BYTES;
let readBuffer: Buffer | undefined;
let receiver: NativeReceiver | undefined;

function sharedReadBuffer(): Buffer {
  readBuffer ??= Buffer.allocUnsafe(READ_CAPACITY);
  return readBuffer;
}

function sharedReceiver(): NativeReceiver {
  receiver ??= new NativeReceiver(READ_CAPACITY);
  return receiver;
}

function closeAll(fds: readonly number[]): void {
  for (const fd of fds) {
    try {
      closeFd(fd);
    } catch {
      // already closed
    }
  }
}

/**
 * One end of a framed protocol connection on a raw non-blocking Unix socket: frames in and out,
 * descriptors in and out, readiness from the event loop. Used by the helper (per client) and by
 * the delegation client alike.
 */
export class FramedConnection {
  readonly #fd: number;
  readonly #events: ConnectionEvents;
  readonly #acceptFds: boolean;
  readonly #watch: FdWatch;
  readonly #reader = new FrameReader();
  readonly #readBuf = sharedReadBuffer();
  readonly #out: Outgoing[] = [];
  #inFds: number[] = [];
  #closed = false;
  #ending = false;
  readonly #frameTimeoutMs: number | undefined;
  /** Runs while a frame is half-received. */
  #frameTimer: NodeJS.Timeout | undefined;

  /**
   * @param fd - a connected non-blocking socket; the connection owns it from now on
   * @param events - where frames and the close go
   * @param acceptFds - keep descriptors the peer sends (client) or close them at once (helper)
   * @param frameTimeoutMs - close when a frame stays incomplete this long (a stalled peer would
   *   otherwise hold its buffer and connection for ever); none by default
   */
  constructor(fd: number, events: ConnectionEvents, acceptFds: boolean, frameTimeoutMs?: number) {
    this.#fd = fd;
    this.#events = events;
    this.#acceptFds = acceptFds;
    this.#frameTimeoutMs = frameTimeoutMs;
    try {
      this.#watch = watchFd(fd, (status, ev) => this.#ready(status, ev));
    } catch (err) {
      closeAll([fd]);
      throw new VirtError(
        ErrorCode.SYSTEM_ERROR,
        `cannot watch socket fd ${fd}: ${errorMessage(err)}`,
        {},
        { cause: err },
      );
    }
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Queues one message, with descriptors attached to its first byte. The connection takes
   * ownership of `fds`: they are closed once sent, or when the connection closes first.
   */
  send(message: object, fds: number[] = []): void {
    if (this.#closed) {
      closeAll(fds);
      return;
    }
    let data: Buffer;
    try {
      data = encodeFrame(message);
    } catch (err) {
      closeAll(fds);
      throw err;
    }
    this.#out.push({ data, fds });
    if (this.#out.length === 1) this.#flush();
  }

  /** The next `n` descriptors received, in order; throws {@link ProtocolError} if fewer arrived. */
  takeFds(n: number): number[] {
    if (n > this.#inFds.length) {
      throw new ProtocolError(`a frame announces ${n} descriptors but ${this.#inFds.length} arrived`);
    }
    return this.#inFds.splice(0, n);
  }

  /** Closes once everything queued has been sent. */
  end(): void {
    this.#ending = true;
    if (this.#out.length === 0) this.close();
  }

  /**
   * Reads whatever has arrived without waiting for the event loop to report it, so that a peer
   * that hung up is noticed before the connection is used again.
   */
  drain(): void {
    if (!this.#closed) this.#read();
  }

  /** Keeps the process alive while open (or not). */
  ref(on: boolean): void {
    this.#watch.ref(on);
  }

  /** Closes at once: unsent frames are dropped and every descriptor still held is closed. */
  close(reason?: VirtError): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#frameTimer);
    this.#watch.close();
    closeAll([this.#fd, ...this.#inFds, ...this.#out.flatMap((o) => o.fds)]);
    this.#inFds = [];
    this.#out.length = 0;
    this.#events.closed(reason);
  }

  #ready(status: number, ev: FdEvents): void {
    if (this.#closed) return;
    if (status < 0) {
      // libuv reports POLLERR this way (e.g. the peer closed with our data unread): what it sent
      // before that is still there to read, such as the frame saying why it closed.
      this.#read();
      this.close(new VirtError(ErrorCode.SYSTEM_ERROR, `socket poll failed (libuv status ${status})`));
      return;
    }
    if (ev.writable) this.#flush();
    if (!this.#closed && (ev.readable || ev.disconnect)) this.#read();
  }

  #read(): void {
    for (let i = 0; i < READS_PER_WAKEUP && !this.#closed; i++) {
      let bytes: Buffer;
      try {
        if (this.#acceptFds) {
          const got = sharedReceiver().receive(this.#fd);
          if (!got) return;
          this.#inFds.push(...got.fds);
          if (got.truncated) {
            this.close(new ProtocolError('descriptors were dropped in transit (control buffer too small)'));
            return;
          }
          bytes = got.data;
        } else {
          // recv(2): descriptors a peer sends to the helper are discarded by the kernel.
          const n = receivePlain(this.#fd, this.#readBuf);
          if (n === undefined) return;
          bytes = this.#readBuf.subarray(0, n);
        }
      } catch (err) {
        this.close(
          new VirtError(
            ErrorCode.SYSTEM_ERROR,
            `socket read failed: ${errorMessage(err)}`,
            {},
            { cause: err },
          ),
        );
        return;
      }
      if (bytes.length === 0) {
        this.close(
          this.#reader.pending
            ? new ProtocolError('the peer closed the connection in the middle of a frame')
            : undefined,
        );
        return;
      }
      try {
        const payloads = this.#reader.push(bytes);
        // A completed frame restarts the clock for the next one.
        if (payloads.length > 0 && this.#frameTimer) {
          clearTimeout(this.#frameTimer);
          this.#frameTimer = undefined;
        }
        for (const payload of payloads) {
          if (this.#closed) return;
          this.#events.message(decodePayload(payload));
        }
      } catch (err) {
        this.close(VirtError.is(err) ? err : new ProtocolError(errorMessage(err)));
        return;
      }
      this.#watchFrame();
      // A short read emptied the socket: the level-triggered poll reports whatever comes next, so
      // no second read is spent just to learn there is nothing more.
      if (bytes.length < READ_CAPACITY) return;
    }
  }

  /** Starts the partial-frame timer when a frame is left half-received, stops it when not. */
  #watchFrame(): void {
    if (this.#frameTimeoutMs === undefined || this.#closed) return;
    if (!this.#reader.pending) {
      if (this.#frameTimer) {
        clearTimeout(this.#frameTimer);
        this.#frameTimer = undefined;
      }
      return;
    }
    if (this.#frameTimer) return;
    const ms = this.#frameTimeoutMs;
    this.#frameTimer = setTimeout(() => {
      this.#frameTimer = undefined;
      if (this.#reader.pending) this.close(new ProtocolError(`a frame was not completed within ${ms} ms`));
    }, ms);
    this.#frameTimer.unref();
  }

  #flush(): void {
    while (!this.#closed) {
      const next = this.#out[0];
      if (!next) break;
      let sent: number | undefined;
      try {
        sent =
          next.fds.length > 0
            ? sendWithRights(this.#fd, next.data, next.fds)
            : sendPlain(this.#fd, next.data);
      } catch (err) {
        // The peer hung up (EPIPE, ECONNRESET): what it said before, such as why, is still readable.
        this.#read();
        this.close(
          new VirtError(
            ErrorCode.SYSTEM_ERROR,
            `socket write failed: ${errorMessage(err)}`,
            {},
            { cause: err },
          ),
        );
        return;
      }
      if (sent === undefined) {
        // The peer is not reading: wait for room instead of retrying.
        this.#watch.want(true);
        return;
      }
      closeAll(next.fds);
      next.fds = [];
      next.data = next.data.subarray(sent);
      if (next.data.length === 0) this.#out.shift();
    }
    if (this.#closed) return;
    this.#watch.want(false);
    if (this.#ending) this.close();
  }
}

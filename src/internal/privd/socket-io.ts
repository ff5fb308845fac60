import { constants as osConstants } from 'node:os';
import koffi from 'koffi';
import { loadLibc, SyscallError } from '../../util/libc.js';
import { MAX_FDS_PER_MESSAGE } from '../../util/unix-socket.js';

/*
 * The hot path of the helper's protocol: one send and one receive per frame on each side. Passing
 * a msghdr as a koffi struct (an object with a nested iovec array, marshalled in and out on every
 * call) cost more than the system call itself, so:
 * - frames without descriptors go out with send(2), and the helper — which never accepts
 *   descriptors — reads with recv(2): plain (int, pointer, size, flags) calls. Descriptors a client
 *   sends anyway are discarded by the kernel, never installed in the helper;
 * - the client, which must receive descriptors, uses recvmsg(2) on one msghdr built once in native
 *   memory (iovec, data and control buffer beside it); only msg_controllen and msg_flags are
 *   reset before each call, and the data is read through a view of that memory.
 * Both are for 64-bit Linux (the msghdr layout of x86_64 and arm64).
 */

const MSG_DONTWAIT = 0x40;
const MSG_CTRUNC = 0x8;
const MSG_NOSIGNAL = 0x4000;
const MSG_CMSG_CLOEXEC = 0x4000_0000;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const CMSG_HEADER = 16;
const EINTR = osConstants.errno.EINTR;
const EAGAIN = osConstants.errno.EAGAIN;

interface IoLib {
  send(fd: number, buf: Buffer, len: number, flags: number): number;
  recv(fd: number, buf: Buffer, len: number, flags: number): number;
  recvmsg(fd: number, msg: unknown, flags: number): number;
}

let io: IoLib | undefined;

function lib(): IoLib {
  if (io) return io;
  const so = loadLibc();
  io = {
    send: so.func('send', 'long', ['int', 'void *', 'size_t', 'int']),
    recv: so.func('recv', 'long', ['int', 'void *', 'size_t', 'int']),
    recvmsg: so.func('recvmsg', 'long', ['int', 'void *', 'int']),
  };
  return io;
}

/**
 * Sends bytes without descriptors: `send(MSG_DONTWAIT | MSG_NOSIGNAL)`.
 *
 * @returns the bytes sent, or undefined when the socket buffer is full
 * @throws {@link SyscallError} otherwise (`EPIPE`, `ECONNRESET`…)
 */
export function sendPlain(fd: number, data: Buffer): number | undefined {
  const c = lib();
  for (;;) {
    const n = c.send(fd, data, data.length, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n >= 0) return n;
    const errno = koffi.errno();
    if (errno === EINTR) continue;
    if (errno === EAGAIN) return undefined;
    throw new SyscallError('send', errno, `${fd}, ${data.length} bytes`);
  }
}

/**
 * Reads what is available into `buf`, discarding any descriptors sent with it: `recv(MSG_DONTWAIT)`.
 *
 * @returns the bytes read (0: the peer closed), or undefined when nothing is available
 * @throws {@link SyscallError} on errors (`ECONNRESET`…)
 */
export function receivePlain(fd: number, buf: Buffer): number | undefined {
  const c = lib();
  for (;;) {
    const n = c.recv(fd, buf, buf.length, MSG_DONTWAIT);
    if (n >= 0) return n;
    const errno = koffi.errno();
    if (errno === EINTR) continue;
    if (errno === EAGAIN) return undefined;
    throw new SyscallError('recv', errno, String(fd));
  }
}

/** What {@link NativeReceiver.receive} read: `data` is valid until the next receive. */
export interface NativeReceived {
  readonly data: Buffer;
  readonly fds: number[];
  readonly truncated: boolean;
}

const MSGHDR = 56;
const IOVEC = 16;
const CONTROL = CMSG_HEADER + 4 * MAX_FDS_PER_MESSAGE + 4;

/** recvmsg(2) on a msghdr that lives in native memory, built once. */
export class NativeReceiver {
  readonly #mem: unknown;
  readonly #view: DataView;
  readonly #bytes: Buffer;
  readonly #dataAt = MSGHDR + IOVEC;
  readonly #controlAt: number;

  /** @param capacity - the most bytes one receive reads */
  constructor(capacity: number) {
    this.#controlAt = this.#dataAt + capacity;
    const size = this.#controlAt + CONTROL;
    this.#mem = koffi.alloc('uint8_t', size);
    const base = BigInt(koffi.address(this.#mem));
    const ab = koffi.view(this.#mem, size);
    this.#view = new DataView(ab);
    this.#bytes = Buffer.from(ab);
    const v = this.#view;
    v.setBigUint64(0, 0n, true); // msg_name
    v.setUint32(8, 0, true); // msg_namelen
    v.setBigUint64(16, base + BigInt(MSGHDR), true); // msg_iov
    v.setBigUint64(24, 1n, true); // msg_iovlen
    v.setBigUint64(32, base + BigInt(this.#controlAt), true); // msg_control
    v.setBigUint64(MSGHDR, base + BigInt(this.#dataAt), true); // iov_base
    v.setBigUint64(MSGHDR + 8, BigInt(capacity), true); // iov_len
  }

  /**
   * Reads what is available and the descriptors that came with it (close-on-exec).
   *
   * @returns what was read (`data.length` 0: the peer closed), or undefined when nothing is available
   * @throws {@link SyscallError} on errors
   */
  receive(fd: number): NativeReceived | undefined {
    const v = this.#view;
    const c = lib();
    let n: number;
    for (;;) {
      v.setBigUint64(40, BigInt(CONTROL), true); // msg_controllen
      v.setInt32(48, 0, true); // msg_flags
      n = c.recvmsg(fd, this.#mem, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
      if (n >= 0) break;
      const errno = koffi.errno();
      if (errno === EINTR) continue;
      if (errno === EAGAIN) return undefined;
      throw new SyscallError('recvmsg', errno, String(fd));
    }
    const controllen = Number(v.getBigUint64(40, true));
    const fds: number[] = [];
    for (let off = 0; off + CMSG_HEADER <= controllen; ) {
      const at = this.#controlAt + off;
      const len = Number(v.getBigUint64(at, true));
      if (len < CMSG_HEADER || off + len > controllen) break;
      if (v.getInt32(at + 8, true) === SOL_SOCKET && v.getInt32(at + 12, true) === SCM_RIGHTS) {
        for (let p = at + CMSG_HEADER; p + 4 <= at + len; p += 4) fds.push(v.getInt32(p, true));
      }
      off += CMSG_HEADER + ((len - CMSG_HEADER + 7) & ~7);
    }
    return {
      data: this.#bytes.subarray(this.#dataAt, this.#dataAt + n),
      fds,
      truncated: (v.getInt32(48, true) & MSG_CTRUNC) !== 0,
    };
  }
}

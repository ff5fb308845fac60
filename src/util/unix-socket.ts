/**
 * Raw AF_UNIX stream sockets through koffi, for the privileged helper and its delegation client:
 * non-blocking listen/accept/connect, the peer's credentials (`SO_PEERCRED`), and `sendmsg` /
 * `recvmsg` carrying file descriptors (`SCM_RIGHTS`).
 *
 * Node's own `net` sockets cannot pass descriptors (only its IPC channel can, and only to a child),
 * so these sockets are never handed to Node's stream machinery: readiness comes from a libuv poll
 * handle on the raw fd ({@link watchFd}), and every read and write is a non-blocking system call, so
 * the event loop never blocks on them.
 *
 * Struct layouts are those of 64-bit Linux (x86_64, arm64).
 *
 * @internal
 * @packageDocumentation
 */

import { constants as osConstants } from 'node:os';
import koffi from 'koffi';
import { closeFd, loadLibc, SyscallError } from './libc.js';

/**
 * The credentials of the process at the other end of a Unix socket, as the kernel recorded them
 * when it connected (`SO_PEERCRED`): the peer cannot fake them.
 *
 * @internal
 */
export interface PeerCredentials {
  /** The peer's process id. */
  readonly pid: number;
  /** The peer's effective user id. */
  readonly uid: number;
  /** The peer's effective group id. */
  readonly gid: number;
}

/**
 * What {@link receiveWithRights} read.
 *
 * @internal
 */
export interface Received {
  /** Bytes read into the buffer; 0 means the peer closed its end. */
  readonly bytes: number;
  /** Descriptors that came with them (close-on-exec), in the order they were sent. */
  readonly fds: number[];
  /** True when the kernel had to drop descriptors for lack of control-buffer room (`MSG_CTRUNC`). */
  readonly truncated: boolean;
}

/**
 * The readiness events of a watched fd.
 *
 * @internal
 */
export interface FdEvents {
  readonly readable: boolean;
  readonly writable: boolean;
  readonly disconnect: boolean;
}

/**
 * A libuv poll handle on a raw fd.
 *
 * @internal
 */
export interface FdWatch {
  /** Changes the events watched for (readable is always watched). */
  want(writable: boolean): void;
  /** Lets the process exit while the fd is watched (or not). */
  ref(on: boolean): void;
  /** Stops watching; call before closing the fd. */
  close(): void;
}

// ---------------------------------------------------------------------------------------------------------
// Constants (Linux generic)
// ---------------------------------------------------------------------------------------------------------

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_PEERCRED = 17;
const SCM_RIGHTS = 1;
const MSG_DONTWAIT = 0x40;
const MSG_CTRUNC = 0x8;
const MSG_NOSIGNAL = 0x4000;
const MSG_CMSG_CLOEXEC = 0x4000_0000;
const SUN_PATH_MAX = 108;
/** `SCM_MAX_FD`: the most descriptors one message may carry. */
export const MAX_FDS_PER_MESSAGE = 253;
/** `sizeof(struct cmsghdr)` on 64-bit Linux: `size_t cmsg_len; int cmsg_level; int cmsg_type`. */
const CMSG_HEADER = 16;
const EINTR = osConstants.errno.EINTR;
const EAGAIN = osConstants.errno.EAGAIN;

/** `CMSG_SPACE(n)`: a header plus `n` data bytes rounded up to the 8-byte alignment. */
function cmsgSpace(n: number): number {
  return CMSG_HEADER + ((n + 7) & ~7);
}

/**
 * A control buffer big enough for the most descriptors one message can carry.
 *
 * @internal
 */
export function controlBuffer(): Buffer {
  return Buffer.alloc(cmsgSpace(4 * MAX_FDS_PER_MESSAGE));
}

// ---------------------------------------------------------------------------------------------------------
// koffi declarations
// ---------------------------------------------------------------------------------------------------------

interface RawSockaddrUn {
  sun_family: number;
  sun_path: Uint8Array;
}

interface RawIovec {
  iov_base: Buffer;
  iov_len: number;
}

interface RawMsghdr {
  msg_name: null;
  msg_namelen: number;
  msg_iov: RawIovec[];
  msg_iovlen: number;
  msg_control: Buffer | null;
  msg_controllen: number;
  msg_flags: number;
}

interface RawUcred {
  pid: number;
  uid: number;
  gid: number;
}

interface SocketLib {
  socket(domain: number, type: number, protocol: number): number;
  bind(fd: number, addr: RawSockaddrUn, addrlen: number): number;
  listen(fd: number, backlog: number): number;
  connect(fd: number, addr: RawSockaddrUn, addrlen: number): number;
  accept4(fd: number, addr: null, addrlen: null, flags: number): number;
  getsockopt(fd: number, level: number, name: number, value: Partial<RawUcred>, len: Uint32Array): number;
  sendmsg(fd: number, msg: RawMsghdr, flags: number): number;
  recvmsg(fd: number, msg: RawMsghdr, flags: number): number;
}

let lib: SocketLib | undefined;

function sockets(): SocketLib {
  if (lib) return lib;
  const so = loadLibc();
  // Anonymous structs: koffi type names are process-global (see libc.ts).
  const sockaddrUn = koffi.struct({ sun_family: 'uint16_t', sun_path: koffi.array('uint8_t', SUN_PATH_MAX) });
  const ucred = koffi.struct({ pid: 'int32_t', uid: 'uint32_t', gid: 'uint32_t' });
  const iovec = koffi.struct({ iov_base: 'void *', iov_len: 'size_t' });
  const msghdr = koffi.struct({
    msg_name: 'void *',
    msg_namelen: 'uint32_t',
    msg_iov: koffi.pointer(iovec),
    msg_iovlen: 'size_t',
    msg_control: 'void *',
    msg_controllen: 'size_t',
    msg_flags: 'int',
  });
  lib = {
    socket: so.func('socket', 'int', ['int', 'int', 'int']),
    bind: so.func('bind', 'int', ['int', koffi.pointer(sockaddrUn), 'uint32_t']),
    listen: so.func('listen', 'int', ['int', 'int']),
    connect: so.func('connect', 'int', ['int', koffi.pointer(sockaddrUn), 'uint32_t']),
    accept4: so.func('accept4', 'int', ['int', 'void *', 'void *', 'int']),
    getsockopt: so.func('getsockopt', 'int', [
      'int',
      'int',
      'int',
      koffi.out(koffi.pointer(ucred)),
      'uint32_t *',
    ]),
    sendmsg: so.func('sendmsg', 'long', ['int', koffi.pointer(msghdr), 'int']),
    // inout: the kernel writes msg_controllen and msg_flags back.
    recvmsg: so.func('recvmsg', 'long', ['int', koffi.inout(koffi.pointer(msghdr)), 'int']),
  };
  return lib;
}

// ---------------------------------------------------------------------------------------------------------
// Addresses and sockets
// ---------------------------------------------------------------------------------------------------------

function address(path: string, syscall: string): { addr: RawSockaddrUn; len: number } {
  const bytes = Buffer.from(path, 'utf8');
  if (bytes.length === 0 || bytes.includes(0) || bytes.length >= SUN_PATH_MAX) {
    throw new SyscallError(
      syscall,
      bytes.length >= SUN_PATH_MAX ? osConstants.errno.ENAMETOOLONG : osConstants.errno.EINVAL,
      JSON.stringify(path),
      `a Unix socket path must be 1 to ${SUN_PATH_MAX - 1} bytes without NUL`,
    );
  }
  const sunPath = new Uint8Array(SUN_PATH_MAX);
  sunPath.set(bytes);
  return { addr: { sun_family: AF_UNIX, sun_path: sunPath }, len: 2 + bytes.length + 1 };
}

function newSocket(): number {
  const fd = sockets().socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    throw new SyscallError('socket', koffi.errno(), 'AF_UNIX, SOCK_STREAM|SOCK_NONBLOCK|SOCK_CLOEXEC');
  return fd;
}

function closeQuietly(fd: number): void {
  try {
    closeFd(fd);
  } catch {
    // The error that led here matters more.
  }
}

/**
 * Creates a non-blocking, close-on-exec listening socket bound to `path`. An existing file at
 * `path` is left alone (`EADDRINUSE`).
 *
 * @param path - the socket path (shorter than 108 bytes)
 * @param backlog - the listen backlog
 * @returns the listening fd
 * @throws {@link SyscallError} on failure; nothing is left open
 * @internal
 */
export function unixListen(path: string, backlog = 64): number {
  const { addr, len } = address(path, 'bind');
  const c = sockets();
  const fd = newSocket();
  if (c.bind(fd, addr, len) !== 0) {
    const err = new SyscallError('bind', koffi.errno(), JSON.stringify(path));
    closeQuietly(fd);
    throw err;
  }
  if (c.listen(fd, backlog) !== 0) {
    const err = new SyscallError('listen', koffi.errno(), String(backlog));
    closeQuietly(fd);
    throw err;
  }
  return fd;
}

/**
 * Connects a new non-blocking, close-on-exec socket to `path`. A Unix stream connect completes at
 * once or fails; `EAGAIN` means the listener's backlog is full (try again shortly).
 *
 * @param path - the socket path
 * @returns the connected fd
 * @throws {@link SyscallError} `ENOENT`, `ECONNREFUSED`, `EACCES`, `EAGAIN`…; nothing is left open
 * @internal
 */
export function unixConnect(path: string): number {
  const { addr, len } = address(path, 'connect');
  const fd = newSocket();
  for (;;) {
    if (sockets().connect(fd, addr, len) === 0) return fd;
    const errno = koffi.errno();
    if (errno === EINTR) continue;
    closeQuietly(fd);
    throw new SyscallError('connect', errno, JSON.stringify(path));
  }
}

/**
 * Accepts one pending connection as a non-blocking, close-on-exec fd.
 *
 * @param fd - a listening socket
 * @returns the new connection, or undefined when none is pending
 * @throws {@link SyscallError} on other errors (`EMFILE`…)
 * @internal
 */
export function unixAccept(fd: number): number | undefined {
  for (;;) {
    const conn = sockets().accept4(fd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (conn >= 0) return conn;
    const errno = koffi.errno();
    if (errno === EINTR) continue;
    // ECONNABORTED: the client gave up while queued; nothing to serve.
    if (errno === EAGAIN || errno === osConstants.errno.ECONNABORTED) return undefined;
    throw new SyscallError('accept4', errno, String(fd));
  }
}

/**
 * The credentials of the peer of a connected Unix socket: `getsockopt(SO_PEERCRED)`.
 *
 * @param fd - a connected socket
 * @returns pid, uid and gid as the kernel recorded them at connect time
 * @throws {@link SyscallError} on failure
 * @internal
 */
export function peerCredentials(fd: number): PeerCredentials {
  const out: Partial<RawUcred> = {};
  const len = new Uint32Array([12]);
  if (sockets().getsockopt(fd, SOL_SOCKET, SO_PEERCRED, out, len) !== 0) {
    throw new SyscallError('getsockopt', koffi.errno(), `${fd}, SOL_SOCKET, SO_PEERCRED`);
  }
  return { pid: out.pid ?? 0, uid: out.uid ?? 0, gid: out.gid ?? 0 };
}

// ---------------------------------------------------------------------------------------------------------
// Data and descriptors
// ---------------------------------------------------------------------------------------------------------

/**
 * Sends bytes, with descriptors attached to the first byte: `sendmsg(MSG_DONTWAIT|MSG_NOSIGNAL)`.
 * The descriptors are duplicated into the message; the caller still owns (and closes) its copies.
 *
 * @param fd - a connected socket
 * @param data - the bytes (non-empty)
 * @param fds - descriptors to pass (at most {@link MAX_FDS_PER_MESSAGE})
 * @returns the number of bytes sent (the descriptors went with them), or undefined when the socket
 *   buffer is full (nothing was sent)
 * @throws {@link SyscallError} on other errors (`EPIPE`, `ECONNRESET`…)
 * @internal
 */
export function sendWithRights(fd: number, data: Buffer, fds: readonly number[] = []): number | undefined {
  let control: Buffer | null = null;
  if (fds.length > 0) {
    control = Buffer.alloc(cmsgSpace(4 * fds.length));
    control.writeBigUInt64LE(BigInt(CMSG_HEADER + 4 * fds.length), 0);
    control.writeInt32LE(SOL_SOCKET, 8);
    control.writeInt32LE(SCM_RIGHTS, 12);
    fds.forEach((d, i) => {
      control?.writeInt32LE(d, CMSG_HEADER + 4 * i);
    });
  }
  const msg: RawMsghdr = {
    msg_name: null,
    msg_namelen: 0,
    msg_iov: [{ iov_base: data, iov_len: data.length }],
    msg_iovlen: 1,
    msg_control: control,
    msg_controllen: control?.length ?? 0,
    msg_flags: 0,
  };
  for (;;) {
    const n = sockets().sendmsg(fd, msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n >= 0) return n;
    const errno = koffi.errno();
    if (errno === EINTR) continue;
    if (errno === EAGAIN) return undefined;
    throw new SyscallError('sendmsg', errno, `${fd}, ${data.length} bytes, ${fds.length} fds`);
  }
}

/**
 * Reads what is available, and any descriptors that came with it (close-on-exec):
 * `recvmsg(MSG_DONTWAIT|MSG_CMSG_CLOEXEC)`.
 *
 * @param fd - a connected socket
 * @param buf - where the bytes go
 * @param control - a control buffer from {@link controlBuffer}
 * @returns what was read, or undefined when nothing is available yet
 * @throws {@link SyscallError} on errors (`ECONNRESET`…)
 * @internal
 */
export function receiveWithRights(fd: number, buf: Buffer, control: Buffer): Received | undefined {
  const msg: RawMsghdr = {
    msg_name: null,
    msg_namelen: 0,
    msg_iov: [{ iov_base: buf, iov_len: buf.length }],
    msg_iovlen: 1,
    msg_control: control,
    msg_controllen: control.length,
    msg_flags: 0,
  };
  let n: number;
  for (;;) {
    n = sockets().recvmsg(fd, msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n >= 0) break;
    const errno = koffi.errno();
    if (errno === EINTR) continue;
    if (errno === EAGAIN) return undefined;
    throw new SyscallError('recvmsg', errno, String(fd));
  }
  const fds: number[] = [];
  let offset = 0;
  while (offset + CMSG_HEADER <= msg.msg_controllen) {
    const len = Number(control.readBigUInt64LE(offset));
    if (len < CMSG_HEADER || offset + len > msg.msg_controllen) break;
    if (control.readInt32LE(offset + 8) === SOL_SOCKET && control.readInt32LE(offset + 12) === SCM_RIGHTS) {
      for (let at = offset + CMSG_HEADER; at + 4 <= offset + len; at += 4) fds.push(control.readInt32LE(at));
    }
    offset += cmsgSpace(len - CMSG_HEADER);
  }
  return { bytes: n, fds, truncated: (msg.msg_flags & MSG_CTRUNC) !== 0 };
}

// ---------------------------------------------------------------------------------------------------------
// Readiness
// ---------------------------------------------------------------------------------------------------------

/** What koffi's poll handle calls back with: libuv's status (< 0 on error) and the events. */
type PollCallback = (status: number, events: FdEvents) => void;

/**
 * Watches a raw fd for readiness on Node's own event loop (a libuv `uv_poll_t`, through koffi's
 * `koffi.node.poll`), so no thread ever blocks waiting for it. Readable (and peer hang-up) is always
 * watched; writable only while {@link FdWatch.want} asks for it, since a socket is nearly always
 * writable and a level-triggered watch would call back in a loop.
 *
 * @param fd - a non-blocking fd that nothing else in the process polls
 * @param onEvent - called with libuv's status (negative on error) and the events
 * @returns the watch
 * @internal
 */
export function watchFd(fd: number, onEvent: (status: number, events: FdEvents) => void): FdWatch {
  const callback: PollCallback = (status, events) => onEvent(status, events);
  // koffi's typings describe the callback as (events) => void; it is in fact (status, events).
  const cb = callback as unknown as Parameters<typeof koffi.node.poll>[1];
  const handle = koffi.node.poll(fd, { readable: true, disconnect: true }, cb);
  let writable = false;
  let closed = false;
  return {
    want(on) {
      if (closed || on === writable) return;
      writable = on;
      handle.start({ readable: true, disconnect: true, writable: on }, cb);
    },
    ref(on) {
      if (closed) return;
      if (on) handle.ref();
      else handle.unref();
    },
    close() {
      if (closed) return;
      closed = true;
      handle.close();
    },
  };
}

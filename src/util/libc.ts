/**
 * Thin koffi bindings to the few libc calls Node.js does not expose: resource limits of other
 * processes, real-time scheduling of threads, advisory file locks and listening AF_UNIX sockets
 * whose raw fd can be handed to a child process.
 *
 * libc is loaded lazily, once, on the first call. Every failed call throws {@link SyscallError},
 * whose `code` is the errno name (`EPERM`…), so `errnoOf()` from `src/errors.ts` recognises it.
 *
 * @internal
 * @packageDocumentation
 */

import { constants as osConstants } from 'node:os';
import koffi from 'koffi';
import { ErrorCode, VirtError } from '../errors.js';

/**
 * A failed libc call. `code` is the errno name (`EPERM`, `ESRCH`…), like Node's own system errors.
 *
 * @internal
 */
export class SyscallError extends Error {
  /** The libc function that failed, e.g. `prlimit`. */
  readonly syscall: string;
  /** The raw errno value. */
  readonly errno: number;
  /** The errno name, e.g. `EPERM`; `EUNKNOWN` when the number has no known name. */
  readonly code: string;

  /**
   * @param syscall - the libc function that failed
   * @param errno - the errno it left
   * @param args - a human-readable rendering of its arguments, shown in the message
   * @param hint - an optional explanation appended to the message
   */
  constructor(syscall: string, errno: number, args = '', hint?: string) {
    const code = errnoName(errno);
    super(`${syscall}(${args}): ${code} (${hint ?? strerror(errno)})`);
    this.name = 'SyscallError';
    this.syscall = syscall;
    this.errno = errno;
    this.code = code;
  }
}

/**
 * A resource limit value: a byte/count value, or `'unlimited'` for `RLIM_INFINITY`.
 *
 * @internal
 */
export type RlimitValue = bigint | 'unlimited';

/**
 * The soft and hard values of one resource limit.
 *
 * @internal
 */
export interface Rlimit {
  /** The value the kernel enforces. */
  soft: RlimitValue;
  /** The ceiling an unprivileged process may raise its soft limit to. */
  hard: RlimitValue;
}

/**
 * The `RLIMIT_*` resource numbers virtkit uses (Linux, all architectures but alpha/mips/sparc).
 *
 * @internal
 */
export const RLIMIT = { MEMLOCK: 8, RTPRIO: 14, NOFILE: 7 } as const;

/**
 * A thread scheduling policy: `SCHED_OTHER`, `SCHED_FIFO`, `SCHED_RR`, `SCHED_BATCH` or `SCHED_IDLE`.
 *
 * @internal
 */
export type SchedPolicy = 'other' | 'fifo' | 'rr' | 'batch' | 'idle';

// ---------------------------------------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------------------------------------

const RLIM_INFINITY = 0xffff_ffff_ffff_ffffn;
const SCHED_POLICIES: Readonly<Record<SchedPolicy, number>> = { other: 0, fifo: 1, rr: 2, batch: 3, idle: 5 };
const SCHED_RESET_ON_FORK = 0x4000_0000;
const LOCK_EX = 2;
const LOCK_NB = 4;
const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const SUN_PATH_MAX = 108;
const EINTR = osConstants.errno.EINTR;
const EAGAIN = osConstants.errno.EAGAIN;
const EWOULDBLOCK = osConstants.errno.EWOULDBLOCK;

// ---------------------------------------------------------------------------------------------------------
// koffi declarations: the only place that knows C types.
// ---------------------------------------------------------------------------------------------------------

/** `struct rlimit` as koffi hands it back: uint64 decodes to a number when safe, else a bigint. */
interface RawRlimit {
  rlim_cur: number | bigint;
  rlim_max: number | bigint;
}

/** `struct sched_param`. */
interface RawSchedParam {
  sched_priority: number;
}

/** `struct sockaddr_un`. */
interface RawSockaddrUn {
  sun_family: number;
  sun_path: Uint8Array;
}

interface Libc {
  prlimit(
    pid: number,
    resource: number,
    newLimit: RawRlimit | null,
    oldLimit: Partial<RawRlimit> | null,
  ): number;
  sched_setscheduler(pid: number, policy: number, param: RawSchedParam): number;
  sched_getscheduler(pid: number): number;
  sched_getparam(pid: number, param: Partial<RawSchedParam>): number;
  flock(fd: number, operation: number): number;
  socket(domain: number, type: number, protocol: number): number;
  bind(fd: number, addr: RawSockaddrUn, addrlen: number): number;
  listen(fd: number, backlog: number): number;
  close(fd: number): number;
  /** Variadic: the mode is passed as a (type, value) pair. */
  open(path: string, flags: number, modeType: 'int', mode: number): number;
  /** Variadic: the third C argument is passed as a (type, value) pair. */
  ioctl(fd: number, request: number, argType: string, arg: Uint8Array): number;
  getuid(): number;
  geteuid(): number;
  strerror(errnum: number): string | null;
  renameat2(olddirfd: number, oldpath: string, newdirfd: number, newpath: string, flags: number): number;
}

let libc: Libc | undefined;
let libcLibrary: ReturnType<typeof koffi.load> | undefined;

/** The C library, loaded once per process; the bindings of sibling modules declare from it. */
export function loadLibc(): ReturnType<typeof koffi.load> {
  libcLibrary ??= koffi.load('libc.so.6');
  return libcLibrary;
}

/** Declares every function of this module, once. */
function lib(): Libc {
  if (libc) return libc;
  const so = loadLibc();
  // Anonymous structs: koffi's type names are process-global, so named ones would clash if this
  // module were ever evaluated twice in one process (test isolation, two copies of virtkit).
  const rlimit = koffi.struct({ rlim_cur: 'uint64_t', rlim_max: 'uint64_t' });
  const schedParam = koffi.struct({ sched_priority: 'int' });
  const sockaddrUn = koffi.struct({ sun_family: 'uint16_t', sun_path: koffi.array('uint8_t', SUN_PATH_MAX) });
  libc = {
    prlimit: so.func('prlimit', 'int', [
      'int',
      'int',
      koffi.pointer(rlimit),
      koffi.out(koffi.pointer(rlimit)),
    ]),
    sched_setscheduler: so.func('sched_setscheduler', 'int', ['int', 'int', koffi.pointer(schedParam)]),
    sched_getscheduler: so.func('sched_getscheduler', 'int', ['int']),
    sched_getparam: so.func('sched_getparam', 'int', ['int', koffi.out(koffi.pointer(schedParam))]),
    flock: so.func('flock', 'int', ['int', 'int']),
    socket: so.func('socket', 'int', ['int', 'int', 'int']),
    bind: so.func('bind', 'int', ['int', koffi.pointer(sockaddrUn), 'uint32_t']),
    listen: so.func('listen', 'int', ['int', 'int']),
    close: so.func('close', 'int', ['int']),
    // open(2) and ioctl(2) are variadic in C; open's mode is always passed, ioctl's argument is a
    // (type, value) pair at each call.
    open: so.func('open', 'int', ['str', 'int', '...']),
    ioctl: so.func('ioctl', 'int', ['int', 'unsigned long', '...']),
    getuid: so.func('getuid', 'uint32_t', []),
    geteuid: so.func('geteuid', 'uint32_t', []),
    strerror: so.func('strerror', 'const char *', ['int']),
    renameat2: so.func('renameat2', 'int', ['int', 'str', 'int', 'str', 'unsigned int']),
  };
  return libc;
}

/**
 * Reads errno for the call that just returned. koffi runs synchronous calls on the JS thread and
 * does not snapshot errno, so this must run immediately after the call, before anything else that
 * could touch errno.
 */
function lastErrno(): number {
  return koffi.errno();
}

// ---------------------------------------------------------------------------------------------------------
// errno names
// ---------------------------------------------------------------------------------------------------------

let errnoNames: Map<number, string> | undefined;

/** errnos `os.constants.errno` does not list (e.g. `EBADFD`, which `TUNGETIFF` returns). */
const LINUX_ONLY_ERRNOS: ReadonlyArray<readonly [number, string]> = [
  [76, 'ENOTUNIQ'],
  [77, 'EBADFD'],
  [123, 'ENOMEDIUM'],
  [124, 'EMEDIUMTYPE'],
  [126, 'ENOKEY'],
  [127, 'EKEYEXPIRED'],
  [128, 'EKEYREVOKED'],
  [129, 'EKEYREJECTED'],
  [132, 'ERFKILL'],
];

/** The name of an errno value (`EPERM`…), preferring the first name `os.constants.errno` lists (EAGAIN). */
function errnoName(errno: number): string {
  if (!errnoNames) {
    errnoNames = new Map();
    for (const [name, value] of Object.entries(osConstants.errno)) {
      if (!errnoNames.has(value)) errnoNames.set(value, name);
    }
    errnoNames.set(EAGAIN, 'EAGAIN');
    // Linux-only errnos Node's table (libuv's POSIX list) lacks; numbers are the same on every
    // Linux architecture but alpha/mips/parisc/sparc.
    for (const [value, name] of LINUX_ONLY_ERRNOS) if (!errnoNames.has(value)) errnoNames.set(value, name);
  }
  return errnoNames.get(errno) ?? 'EUNKNOWN';
}

/** glibc's description of an errno value. */
function strerror(errno: number): string {
  try {
    return lib().strerror(errno) ?? `errno ${errno}`;
  } catch {
    return `errno ${errno}`;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Argument checks
// ---------------------------------------------------------------------------------------------------------

function checkInt(what: string, value: number, min: number, max = 0x7fff_ffff): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new VirtError(
      ErrorCode.INTERNAL_ERROR,
      `${what} must be an integer in [${min}, ${max}], got ${value}`,
    );
  }
}

function resourceName(resource: number): string {
  for (const [name, value] of Object.entries(RLIMIT)) if (value === resource) return name;
  return String(resource);
}

function toRaw(value: RlimitValue, what: string): bigint {
  if (value === 'unlimited') return RLIM_INFINITY;
  if (typeof value !== 'bigint' || value < 0n || value >= RLIM_INFINITY) {
    throw new VirtError(
      ErrorCode.INTERNAL_ERROR,
      `${what} must be 'unlimited' or a bigint in [0, 2^64-2], got ${String(value)}`,
    );
  }
  return value;
}

function fromRaw(value: number | bigint | undefined): RlimitValue {
  const v = BigInt(value ?? 0);
  return v === RLIM_INFINITY ? 'unlimited' : v;
}

// ---------------------------------------------------------------------------------------------------------
// Resource limits
// ---------------------------------------------------------------------------------------------------------

/**
 * Reads a resource limit of any process: `prlimit(pid, resource, NULL, &old)`.
 *
 * @param pid - the process (0 for the calling process)
 * @param resource - an `RLIMIT_*` number, see {@link RLIMIT}
 * @returns the soft and hard limits; `RLIM_INFINITY` reads as `'unlimited'`
 * @throws {@link SyscallError} `ESRCH` when there is no such process, `EPERM` when not allowed
 */
export function prlimitGet(pid: number, resource: number): Rlimit {
  checkInt('pid', pid, 0);
  checkInt('resource', resource, 0);
  const c = lib();
  const old: Partial<RawRlimit> = {};
  if (c.prlimit(pid, resource, null, old) !== 0) {
    throw new SyscallError('prlimit', lastErrno(), `${pid}, ${resourceName(resource)}`);
  }
  return { soft: fromRaw(old.rlim_cur), hard: fromRaw(old.rlim_max) };
}

/**
 * Sets a resource limit of any process: `prlimit(pid, resource, &new, NULL)`. Raising the hard
 * limit needs `CAP_SYS_RESOURCE`; changing another user's process needs `CAP_SYS_RESOURCE` too.
 *
 * @param pid - the process (0 for the calling process)
 * @param resource - an `RLIMIT_*` number, see {@link RLIMIT}
 * @param limit - the new soft and hard limits (`'unlimited'` is `RLIM_INFINITY`)
 * @throws {@link SyscallError} `EINVAL` when soft exceeds hard, `EPERM`, `ESRCH`
 */
export function prlimitSet(pid: number, resource: number, limit: Rlimit): void {
  checkInt('pid', pid, 0);
  checkInt('resource', resource, 0);
  const raw: RawRlimit = {
    rlim_cur: toRaw(limit.soft, 'soft limit'),
    rlim_max: toRaw(limit.hard, 'hard limit'),
  };
  const c = lib();
  if (c.prlimit(pid, resource, raw, null) !== 0) {
    throw new SyscallError(
      'prlimit',
      lastErrno(),
      `${pid}, ${resourceName(resource)}, {soft: ${limit.soft}, hard: ${limit.hard}}`,
    );
  }
}

// ---------------------------------------------------------------------------------------------------------
// Scheduling
// ---------------------------------------------------------------------------------------------------------

/**
 * Sets the scheduling policy and priority of one thread: `sched_setscheduler(tid, policy, &param)`.
 * `fifo` and `rr` need a priority in 1..99 (and `CAP_SYS_NICE` or a sufficient `RLIMIT_RTPRIO`);
 * the other policies need 0.
 *
 * @param tid - the thread id (a pid addresses the process's main thread only)
 * @param policy - the policy
 * @param priority - the static priority
 * @throws {@link SyscallError} `EINVAL` for a priority the policy does not accept, `EPERM`, `ESRCH`
 */
export function schedSet(tid: number, policy: SchedPolicy, priority: number): void {
  checkInt('tid', tid, 0);
  checkInt('priority', priority, -0x8000_0000);
  const num = SCHED_POLICIES[policy];
  if (num === undefined) {
    throw new VirtError(ErrorCode.INTERNAL_ERROR, `unknown scheduling policy ${JSON.stringify(policy)}`);
  }
  const c = lib();
  if (c.sched_setscheduler(tid, num, { sched_priority: priority }) !== 0) {
    throw new SyscallError('sched_setscheduler', lastErrno(), `${tid}, ${policy}, ${priority}`);
  }
}

/**
 * Reads the scheduling policy (`sched_getscheduler`, `SCHED_RESET_ON_FORK` masked off) and the
 * static priority (`sched_getparam`) of one thread.
 *
 * @param tid - the thread id
 * @returns the policy and priority
 * @throws {@link SyscallError} `ESRCH` when there is no such thread; a {@link VirtError}
 *   `CONFIG_UNSUPPORTED` when the thread uses a policy outside {@link SchedPolicy} (e.g. `SCHED_DEADLINE`)
 */
export function schedGet(tid: number): { policy: SchedPolicy; priority: number } {
  checkInt('tid', tid, 0);
  const c = lib();
  const raw = c.sched_getscheduler(tid);
  if (raw < 0) throw new SyscallError('sched_getscheduler', lastErrno(), String(tid));
  const param: Partial<RawSchedParam> = {};
  if (c.sched_getparam(tid, param) !== 0) throw new SyscallError('sched_getparam', lastErrno(), String(tid));
  const num = raw & ~SCHED_RESET_ON_FORK;
  const policy = (Object.keys(SCHED_POLICIES) as SchedPolicy[]).find((p) => SCHED_POLICIES[p] === num);
  if (!policy) {
    throw new VirtError(ErrorCode.CONFIG_UNSUPPORTED, `thread ${tid} uses scheduling policy ${num}`, {
      pid: tid,
    });
  }
  return { policy, priority: param.sched_priority ?? 0 };
}

// ---------------------------------------------------------------------------------------------------------
// Locks, sockets, fds, ids
// ---------------------------------------------------------------------------------------------------------

/**
 * Tries to take an exclusive advisory lock without waiting: `flock(fd, LOCK_EX | LOCK_NB)`. The lock
 * belongs to the open file description, so a second `open()` of the same file, even in the same
 * process, conflicts with it. It is released when every fd sharing the description is closed.
 *
 * @param fd - an open fd
 * @returns true if the lock was taken, false if another open file description holds it
 * @throws {@link SyscallError} on any other error (`EBADF`, `ENOLCK`…)
 */
export function flockTry(fd: number): boolean {
  checkInt('fd', fd, 0);
  const c = lib();
  for (;;) {
    if (c.flock(fd, LOCK_EX | LOCK_NB) === 0) return true;
    const errno = lastErrno();
    if (errno === EWOULDBLOCK || errno === EAGAIN) return false;
    if (errno !== EINTR) throw new SyscallError('flock', errno, `${fd}, LOCK_EX|LOCK_NB`);
  }
}

/**
 * Creates a listening Unix stream socket bound to `path` and returns its raw fd
 * (`socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC)`, `bind`, `listen`). The fd is close-on-exec;
 * pass it to a child through `spawn`'s `stdio` (which dups it) and close it with {@link closeFd}.
 * An existing file at `path` is not removed (bind fails with `EADDRINUSE`).
 *
 * @param path - the socket path; must be shorter than 108 bytes (UTF-8) and contain no NUL
 * @param backlog - the listen backlog (default 16)
 * @returns the fd
 * @throws {@link SyscallError} on failure (`ENAMETOOLONG` for a path that does not fit in
 *   `sockaddr_un`); the fd is closed first
 */
export function listenUnixSocket(path: string, backlog = 16): number {
  checkInt('backlog', backlog, 0);
  const bytes = Buffer.from(path, 'utf8');
  if (bytes.length === 0 || bytes.includes(0)) {
    throw new SyscallError(
      'bind',
      osConstants.errno.EINVAL,
      JSON.stringify(path),
      'a Unix socket path must be non-empty and contain no NUL byte',
    );
  }
  if (bytes.length >= SUN_PATH_MAX) {
    throw new SyscallError(
      'bind',
      osConstants.errno.ENAMETOOLONG,
      JSON.stringify(path),
      `the socket path is ${bytes.length} bytes; a Unix socket path must be shorter than ${SUN_PATH_MAX} bytes`,
    );
  }
  const sunPath = new Uint8Array(SUN_PATH_MAX);
  sunPath.set(bytes);
  const c = lib();
  const fd = c.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new SyscallError('socket', lastErrno(), 'AF_UNIX, SOCK_STREAM|SOCK_CLOEXEC, 0');
  let err: SyscallError | undefined;
  // addrlen: sun_family + the path + its terminating NUL.
  if (c.bind(fd, { sun_family: AF_UNIX, sun_path: sunPath }, 2 + bytes.length + 1) !== 0) {
    err = new SyscallError('bind', lastErrno(), `${fd}, ${JSON.stringify(path)}`);
  } else if (c.listen(fd, backlog) !== 0) {
    err = new SyscallError('listen', lastErrno(), `${fd}, ${backlog}`);
  }
  if (err) {
    c.close(fd);
    throw err;
  }
  return fd;
}

/**
 * Closes a raw fd: `close(fd)`. `EINTR` counts as success (Linux always releases the fd).
 *
 * @param fd - the fd
 * @throws {@link SyscallError} `EBADF` when it is not open, `EIO`…
 */
export function closeFd(fd: number): void {
  checkInt('fd', fd, 0);
  const c = lib();
  if (c.close(fd) !== 0) {
    const errno = lastErrno();
    if (errno !== EINTR) throw new SyscallError('close', errno, String(fd));
  }
}

const AT_FDCWD = -100;
const RENAME_EXCHANGE = 2;

/**
 * Swaps two existing paths atomically: `renameat2(from, to, RENAME_EXCHANGE)`. Unlike a rename
 * over an existing file, it does not make ext4 (`auto_da_alloc`) start writing the new file back
 * at once, which costs milliseconds on a slow disk.
 *
 * @param from - an existing path
 * @param to - an existing path on the same file system
 * @returns false, having changed nothing, when `to` does not exist or the file system (or kernel)
 *   cannot exchange (`ENOENT`, `EINVAL`, `ENOSYS`, `ENOTSUP`): rename instead
 * @throws {@link SyscallError} on any other error
 */
export function renameExchange(from: string, to: string): boolean {
  const c = lib();
  for (;;) {
    if (c.renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_EXCHANGE) === 0) return true;
    const errno = lastErrno();
    if (errno === EINTR) continue;
    const e = osConstants.errno;
    if (errno === e.ENOENT || errno === e.EINVAL || errno === e.ENOSYS || errno === e.ENOTSUP) return false;
    throw new SyscallError(
      'renameat2',
      errno,
      `${JSON.stringify(from)}, ${JSON.stringify(to)}, RENAME_EXCHANGE`,
    );
  }
}

/**
 * The real user id of the calling process: `getuid()`.
 *
 * @returns the uid
 */
export function getuid(): number {
  return lib().getuid();
}

/**
 * The effective user id of the calling process: `geteuid()`.
 *
 * @returns the uid
 */
export function geteuid(): number {
  return lib().geteuid();
}

// ---------------------------------------------------------------------------------------------------------
// Raw open and ioctl
// ---------------------------------------------------------------------------------------------------------

/**
 * The `O_*` open flags virtkit passes to {@link openRaw} (Linux, x86 and arm generic values).
 *
 * @internal
 */
export const O = { RDONLY: 0, WRONLY: 1, RDWR: 2, NONBLOCK: 0o4000, CLOEXEC: 0o2000000 } as const;

/**
 * Opens a file and returns the raw fd: `open(path, flags, 0)`, retried on `EINTR`. Unlike
 * `fs.openSync`, nothing adds `O_CLOEXEC` for you: pass it in `flags` when the fd must not leak
 * into children. Close the fd with {@link closeFd}.
 *
 * @param path - the path; must contain no NUL byte
 * @param flags - `O_*` flags, see {@link O}
 * @returns the fd
 * @throws {@link SyscallError} on failure (`ENOENT`, `EACCES`…)
 */
export function openRaw(path: string, flags: number): number {
  checkInt('flags', flags, 0);
  if (path.length === 0 || path.includes('\0')) {
    throw new SyscallError(
      'open',
      osConstants.errno.EINVAL,
      JSON.stringify(path),
      'a path must be non-empty and contain no NUL byte',
    );
  }
  const c = lib();
  for (;;) {
    const fd = c.open(path, flags, 'int', 0);
    if (fd >= 0) return fd;
    const errno = lastErrno();
    if (errno !== EINTR)
      throw new SyscallError('open', errno, `${JSON.stringify(path)}, 0x${flags.toString(16)}`);
  }
}

/**
 * Calls an ioctl whose argument is a pointer to a buffer: `ioctl(fd, request, buf)`. The kernel
 * reads the buffer and may write into it (in place) before the call returns.
 *
 * @param fd - the fd
 * @param request - the ioctl request number, e.g. `0x400454ca` (`TUNSETIFF`)
 * @param buf - the argument, sized as the request expects (e.g. 40 bytes for `struct ifreq`)
 * @returns the ioctl's non-negative return value
 * @throws {@link SyscallError} on failure, retried on `EINTR`
 */
export function ioctlBuffer(fd: number, request: number, buf: Uint8Array): number {
  checkInt('fd', fd, 0);
  checkInt('request', request, 0, 0xffff_ffff);
  const c = lib();
  for (;;) {
    const ret = c.ioctl(fd, request, 'void *', buf);
    if (ret >= 0) return ret;
    const errno = lastErrno();
    if (errno !== EINTR) throw new SyscallError('ioctl', errno, `${fd}, 0x${request.toString(16)}`);
  }
}

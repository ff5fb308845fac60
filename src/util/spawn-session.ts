/**
 * Starting a process in a session of its own without forking the Node.js process: `posix_spawn`
 * (glibc and musl use `clone(CLONE_VM|CLONE_VFORK)`), and its exit watched through a pidfd on
 * Node's own event loop.
 *
 * `child_process.spawn` forks: the kernel copies the page tables of the whole driver process (a
 * hundred MiB and more with many domains), and libuv then blocks the event loop until the child
 * has exec'd. With many domains starting at once that was the largest single share of the
 * driver's event-loop time (`npm run bench:scale`, CPU profile). A vfork shares the memory, so the
 * loop waits only for the exec.
 *
 * @internal
 * @packageDocumentation
 */

import { constants as osConstants } from 'node:os';
import koffi from 'koffi';
import { closeFd, loadLibc, SyscallError } from './libc.js';
import { watchFd } from './unix-socket.js';

/** How a spawned process ended: its exit code, or the signal that killed it. */
export interface SpawnedExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** A process started by {@link spawnInSession}. */
export interface SpawnedProcess {
  readonly pid: number;
  /** Resolves once the process has exited and been reaped (unless {@link forget} came first). */
  readonly exited: Promise<SpawnedExit>;
  /** Reaps the process when it exits but no longer reports it: `exited` then never settles. */
  forget(): void;
}

interface SpawnLib {
  posix_spawn(pid: Int32Array, path: string, fa: Buffer, attr: Buffer, argv: unknown, envp: unknown): number;
  fa_init(fa: Buffer): number;
  fa_adddup2(fa: Buffer, fd: number, newfd: number): number;
  fa_addopen(fa: Buffer, fd: number, path: string, flags: number, mode: number): number;
  fa_destroy(fa: Buffer): number;
  attr_init(attr: Buffer): number;
  attr_setflags(attr: Buffer, flags: number): number;
  attr_setsigdefault(attr: Buffer, set: Buffer): number;
  attr_setsigmask(attr: Buffer, set: Buffer): number;
  attr_destroy(attr: Buffer): number;
  sigfillset(set: Buffer): number;
  sigemptyset(set: Buffer): number;
  pipe2(fds: Int32Array, flags: number): number;
  fcntl(...args: unknown[]): number;
  syscall(...args: unknown[]): number | bigint;
  waitid(idtype: number, id: number, info: Buffer, options: number): number;
}

// glibc and musl (Linux): <spawn.h>, <fcntl.h>, <sys/wait.h>, x86-64/arm64 syscall numbers agree for pidfd_open.
const POSIX_SPAWN_SETSIGDEF = 0x04;
const POSIX_SPAWN_SETSIGMASK = 0x08;
const POSIX_SPAWN_SETSID = 0x80;
const O_CLOEXEC = 0o2000000;
const F_DUPFD_CLOEXEC = 1030;
const SYS_PIDFD_OPEN = 434;
const P_PID = 1;
const WNOHANG = 1;
const WEXITED = 4;
const CLD_EXITED = 1;
const EINTR = osConstants.errno.EINTR;
/** Larger than glibc's posix_spawn_file_actions_t (80 bytes), posix_spawnattr_t (336) and sigset_t (128). */
const OPAQUE_BYTES = 1024;

let bindings: SpawnLib | undefined;
let supported: boolean | undefined;

function lib(): SpawnLib {
  if (bindings) return bindings;
  const so = loadLibc();
  bindings = {
    posix_spawn: so.func('posix_spawn', 'int', [
      'int *',
      'str',
      'void *',
      'void *',
      'const char **',
      'const char **',
    ]),
    fa_init: so.func('posix_spawn_file_actions_init', 'int', ['void *']),
    fa_adddup2: so.func('posix_spawn_file_actions_adddup2', 'int', ['void *', 'int', 'int']),
    fa_addopen: so.func('posix_spawn_file_actions_addopen', 'int', [
      'void *',
      'int',
      'str',
      'int',
      'uint32_t',
    ]),
    fa_destroy: so.func('posix_spawn_file_actions_destroy', 'int', ['void *']),
    attr_init: so.func('posix_spawnattr_init', 'int', ['void *']),
    attr_setflags: so.func('posix_spawnattr_setflags', 'int', ['void *', 'short']),
    attr_setsigdefault: so.func('posix_spawnattr_setsigdefault', 'int', ['void *', 'void *']),
    attr_setsigmask: so.func('posix_spawnattr_setsigmask', 'int', ['void *', 'void *']),
    attr_destroy: so.func('posix_spawnattr_destroy', 'int', ['void *']),
    sigfillset: so.func('sigfillset', 'int', ['void *']),
    sigemptyset: so.func('sigemptyset', 'int', ['void *']),
    pipe2: so.func('pipe2', 'int', ['int *', 'int']),
    fcntl: so.func('fcntl', 'int', ['int', 'int', '...']),
    syscall: so.func('syscall', 'long', ['long', '...']),
    waitid: so.func('waitid', 'int', ['int', 'int', 'void *', 'int']),
  };
  return bindings;
}

/** A pidfd for `pid` (close-on-exec), or the errno. */
function pidfdOpen(pid: number): number {
  const fd = Number(lib().syscall(SYS_PIDFD_OPEN, 'long', pid, 'long', 0));
  return fd >= 0 ? fd : -koffi.errno();
}

/**
 * True when this host can spawn through {@link spawnInSession}: libc has `posix_spawn` and the
 * kernel pidfds (Linux 5.3). Checked once, on a pidfd of this very process.
 */
export function canSpawnInSession(): boolean {
  if (supported !== undefined) return supported;
  try {
    const fd = pidfdOpen(process.pid);
    supported = fd >= 0;
    if (fd >= 0) closeFd(fd);
  } catch {
    supported = false;
  }
  return supported;
}

/**
 * A pipe whose both ends are close-on-exec: `pipe2(O_CLOEXEC)`.
 *
 * @returns `[read, write]`
 */
export function pipeCloexec(): [number, number] {
  const fds = new Int32Array(2);
  if (lib().pipe2(fds, O_CLOEXEC) !== 0) throw new SyscallError('pipe2', koffi.errno(), 'O_CLOEXEC');
  return [fds[0] as number, fds[1] as number];
}

function dupAbove(fd: number, min: number): number {
  for (;;) {
    const dup = lib().fcntl(fd, F_DUPFD_CLOEXEC, 'int', min);
    if (dup >= 0) return dup;
    const errno = koffi.errno();
    if (errno !== EINTR) throw new SyscallError('fcntl', errno, `${fd}, F_DUPFD_CLOEXEC, ${min}`);
  }
}

/**
 * Starts `file` in a new session (`setsid`, as `spawn(…, { detached: true })`), with every signal
 * at its default disposition and none blocked (as libuv leaves a child), the environment `env`
 * only, and the descriptors `fds` at 0, 1, 2, …: a number is a descriptor of this process (which
 * keeps its own copy), `null` is `/dev/null`. Nothing else is inherited: every descriptor Node.js
 * and virtkit open is close-on-exec.
 *
 * @throws {@link SyscallError} when the process cannot be started
 */
export function spawnInSession(
  file: string,
  argv: readonly string[],
  env: Readonly<Record<string, string>>,
  fds: ReadonlyArray<number | null>,
): SpawnedProcess {
  const c = lib();
  const fa = Buffer.alloc(OPAQUE_BYTES);
  const attr = Buffer.alloc(OPAQUE_BYTES);
  const all = Buffer.alloc(OPAQUE_BYTES);
  const none = Buffer.alloc(OPAQUE_BYTES);
  // A source below the last target could be overwritten by an earlier dup2 of the list (or be its
  // own target, which keeps close-on-exec on older libcs): such sources are copied above it first.
  const copies: number[] = [];
  let pid: number;
  c.fa_init(fa);
  c.attr_init(attr);
  try {
    const last = fds.length - 1;
    fds.forEach((fd, target) => {
      if (fd === null) {
        check(
          'posix_spawn_file_actions_addopen',
          c.fa_addopen(fa, target, '/dev/null', target === 0 ? 0 : 2, 0),
        );
        return;
      }
      let source = fd;
      if (source <= last) {
        source = dupAbove(fd, last + 1);
        copies.push(source);
      }
      check('posix_spawn_file_actions_adddup2', c.fa_adddup2(fa, source, target));
    });
    c.sigfillset(all);
    c.sigemptyset(none);
    check('posix_spawnattr_setsigdefault', c.attr_setsigdefault(attr, all));
    check('posix_spawnattr_setsigmask', c.attr_setsigmask(attr, none));
    check(
      'posix_spawnattr_setflags',
      c.attr_setflags(attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK),
    );
    const out = new Int32Array(1);
    const envp = Object.entries(env).map(([k, v]) => `${k}=${v}`);
    const rc = c.posix_spawn(out, file, fa, attr, [...argv, null], [...envp, null]);
    if (rc !== 0) throw new SyscallError('posix_spawn', rc, JSON.stringify(file));
    pid = out[0] as number;
  } finally {
    c.fa_destroy(fa);
    c.attr_destroy(attr);
    for (const fd of copies) closeFd(fd);
  }
  return watchExit(pid);
}

function check(call: string, rc: number): void {
  if (rc !== 0) throw new SyscallError(call, rc);
}

/** Watches our own child `pid` through a pidfd, and reaps it once it has exited. */
function watchExit(pid: number): SpawnedProcess {
  let report = true;
  let resolve!: (exit: SpawnedExit) => void;
  const exited = new Promise<SpawnedExit>((r) => {
    resolve = r;
  });
  // Our unreaped child keeps its pid, so the pidfd cannot name another process.
  const pidfd = pidfdOpen(pid);
  if (pidfd < 0) {
    // Out of descriptors: the child cannot be watched, so it must not live on unwatched.
    process.kill(pid, 'SIGKILL');
    throw new SyscallError('pidfd_open', -pidfd, String(pid));
  }
  const info = Buffer.alloc(128);
  const watch = watchFd(pidfd, () => {
    info.fill(0);
    const rc = lib().waitid(P_PID, pid, info, WEXITED | WNOHANG);
    // si_pid (offset 16) is 0 while the child still runs (a spurious wake-up).
    if (rc === 0 && info.readInt32LE(16) === 0) return;
    watch.close();
    closeFd(pidfd);
    if (!report) return;
    resolve(rc === 0 ? exitOf(info) : { code: null, signal: null });
  });
  // The VM outlives this process: the watch must not keep Node's event loop alive.
  watch.ref(false);
  return {
    pid,
    exited,
    forget: () => {
      report = false;
    },
  };
}

let signalNames: Map<number, NodeJS.Signals> | undefined;

/** siginfo_t of a child: si_code at offset 8, si_status at 24. */
function exitOf(info: Buffer): SpawnedExit {
  const code = info.readInt32LE(8);
  const status = info.readInt32LE(24);
  if (code === CLD_EXITED) return { code: status, signal: null };
  signalNames ??= new Map(
    Object.entries(osConstants.signals).map(([name, n]) => [n, name as NodeJS.Signals]),
  );
  return { code: null, signal: signalNames.get(status) ?? null };
}

import { fstatSync, lstatSync, readlinkSync, realpathSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { posix } from 'node:path';
import koffi from 'koffi';
import { ErrorCode, errnoOf, errorMessage, VirtError } from '../../errors.js';
import { closeFd, loadLibc, O, SyscallError } from '../../util/libc.js';
import { denied } from './denied.js';

/** A storage prefix as configured and as the file system resolves it. */
export interface StoragePrefix {
  readonly given: string;
  readonly real: string;
  /**
   * The directory `real` was when the policy was loaded (opened without following any symlink):
   * every request checks that `real` still is that directory. Undefined when it could not be
   * opened then: requests below it are refused until the helper is restarted.
   */
  readonly identity: { readonly dev: bigint; readonly ino: bigint } | undefined;
}

/**
 * A storage prefix as the policy names it, resolved now (the administrator's symlinks in the
 * configured path are followed once, here) and recorded by device and inode.
 */
export function storagePrefix(p: string): StoragePrefix {
  const given = posix.normalize(p).replace(/(.)\/+$/, '$1');
  let real = given;
  try {
    real = realpathSync(given);
  } catch {
    // Missing now: recorded as such, and refused at each request.
  }
  return { given, real, identity: prefixIdentity(real) };
}

/*
 * storage.openFile on the helper side. The prefix itself is opened first, from / with
 * openat2(RESOLVE_NO_SYMLINKS), and must be the very directory (device and inode) it was when the
 * policy was loaded: a peer that owns the prefix's parent could otherwise rename the prefix away and
 * put a symlink to / in its place. Everything after that is relative to that descriptor. The
 * requested path is resolved component by component below it, following symlinks only while they
 * stay inside (a link pointing out is refused before anything outside is touched); the resulting
 * symlink-free path is then opened relative to the prefix's descriptor with
 * openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) and O_NOFOLLOW, so a component swapped for a
 * symlink between the check and the open makes the open fail instead of escaping the prefix.
 */

const SYS_openat2 = 437;
const O_NOFOLLOW = 0o400000;
const O_NOCTTY = 0o400;
const O_DIRECTORY = 0o200000;
const O_PATH = 0o10000000;
const RESOLVE_NO_MAGICLINKS = 0x02;
const RESOLVE_NO_SYMLINKS = 0x04;
const RESOLVE_BENEATH = 0x08;
const F_GETFL = 3;
const F_SETFL = 4;
const MAX_SYMLINKS = 40;
const AT_FDCWD = -100;
const NO_LINKS = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;

interface OpenLib {
  /** syscall(2) is variadic: each argument after the number is a (type, value) pair. */
  syscall(...args: unknown[]): number;
  /** fcntl(2) is variadic too. */
  fcntl(fd: number, cmd: number, ...rest: unknown[]): number;
}

let lib: OpenLib | undefined;

function openLib(): OpenLib {
  if (lib) return lib;
  const so = loadLibc();
  lib = {
    syscall: so.func('syscall', 'long', ['long', '...']),
    fcntl: so.func('fcntl', 'int', ['int', 'int', '...']),
  };
  return lib;
}

/** `openat2(dirfd, path, {flags, mode: 0, resolve}, 24)`. */
function openat2(dirfd: number, path: string, flags: number, resolve: number): number {
  const how = Buffer.alloc(24);
  how.writeBigUInt64LE(BigInt(flags), 0);
  how.writeBigUInt64LE(BigInt(resolve), 16);
  for (;;) {
    const fd = openLib().syscall(SYS_openat2, 'int', dirfd, 'str', path, 'void *', how, 'size_t', 24);
    if (fd >= 0) return fd;
    const errno = koffi.errno();
    if (errno !== osConstants.errno.EINTR)
      throw new SyscallError('openat2', errno, `${dirfd}, ${JSON.stringify(path)}`);
  }
}

function inside(path: string, root: string): boolean {
  return root === '/' || path === root || path.startsWith(`${root}/`);
}

function relativeTo(path: string, root: string): string[] {
  return (root === '/' ? path.slice(1) : path.slice(root.length + 1)).split('/');
}

function fileError(path: string, err: unknown): VirtError {
  return new VirtError(
    ErrorCode.SYSTEM_ERROR,
    `storage.openFile: cannot open ${path}: ${errorMessage(err)}`,
    { path, errno: errnoOf(err) },
    { cause: err },
  );
}

/**
 * Resolves `parts` below `prefix.real` like realpath(3), except that a symlink leading outside the
 * prefix is refused instead of followed.
 */
function resolveBeneath(requested: string, prefix: StoragePrefix, dirfd: number, parts: string[]): string[] {
  // The verified prefix directory, whatever its path has become since.
  const root = `/proc/self/fd/${dirfd}`;
  const stack: string[] = [];
  const queue = [...parts];
  let links = 0;
  let lastLink: { at: string; target: string } | undefined;
  while (queue.length > 0) {
    const part = queue.shift() as string;
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (stack.length === 0) {
        const via = lastLink ? `: symlink ${lastLink.at} points to ${lastLink.target}, ` : ' ';
        throw denied('storage.prefixes', `${requested}${via}leads out of ${prefix.given}`, {
          path: requested,
          ...(lastLink ? { symlink: lastLink.at, target: lastLink.target } : {}),
        });
      }
      stack.pop();
      continue;
    }
    const at = posix.join(prefix.real, ...stack, part);
    const via = posix.join(root, ...stack, part);
    let isLink: boolean;
    try {
      isLink = lstatSync(via).isSymbolicLink();
    } catch (err) {
      throw fileError(requested, err);
    }
    if (!isLink) {
      stack.push(part);
      continue;
    }
    if (++links > MAX_SYMLINKS) throw fileError(requested, new SyscallError('open', osConstants.errno.ELOOP));
    const link = readlinkSync(via);
    lastLink = { at, target: link };
    if (!link.startsWith('/')) {
      queue.unshift(...link.split('/'));
      continue;
    }
    const abs = posix.normalize(link);
    const base = inside(abs, prefix.real)
      ? prefix.real
      : inside(abs, prefix.given)
        ? prefix.given
        : undefined;
    if (base === undefined) {
      throw denied(
        'storage.prefixes',
        `${requested}: symlink ${at} points to ${link}, outside ${prefix.given}`,
        {
          path: requested,
          symlink: at,
          target: link,
        },
      );
    }
    stack.length = 0;
    queue.unshift(...(abs === base ? [] : relativeTo(abs, base)));
  }
  return stack;
}

/**
 * The device and inode of a directory, opened from / without following a symlink at any
 * component (a missing or non-directory path gives undefined).
 *
 * @param real - an absolute, symlink-free path
 */
export function prefixIdentity(real: string): { dev: bigint; ino: bigint } | undefined {
  let fd: number;
  try {
    fd = openat2(AT_FDCWD, real, O_PATH | O_DIRECTORY | O_NOFOLLOW | O.CLOEXEC, NO_LINKS);
  } catch {
    return undefined;
  }
  try {
    const st = fstatSync(fd, { bigint: true });
    return { dev: st.dev, ino: st.ino };
  } finally {
    closeFd(fd);
  }
}

/**
 * Opens a prefix directory (O_PATH) without following a symlink at any component, and checks it
 * is the directory recorded when the policy was loaded.
 */
function openPrefix(prefix: StoragePrefix, path: string): number {
  const refuse = (why: string, extra: Record<string, unknown> = {}) =>
    denied('storage.prefixes', `${path}: the prefix ${prefix.given} ${why}`, {
      path,
      prefix: prefix.given,
      ...extra,
    });
  if (prefix.identity === undefined) {
    throw refuse('could not be opened when the policy was loaded; create it and restart virtkit-privd');
  }
  let fd: number;
  try {
    fd = openat2(AT_FDCWD, prefix.real, O_PATH | O_DIRECTORY | O_NOFOLLOW | O.CLOEXEC, NO_LINKS);
  } catch (err) {
    const errno = err instanceof SyscallError ? err.code : undefined;
    if (errno === 'ELOOP' || errno === 'ENOTDIR') {
      throw refuse(`(${prefix.real}) has been replaced by a symlink`, { errno });
    }
    throw fileError(path, err);
  }
  let st: { dev: bigint; ino: bigint };
  try {
    st = fstatSync(fd, { bigint: true });
  } catch (err) {
    closeFd(fd);
    throw fileError(path, err);
  }
  if (st.dev !== prefix.identity.dev || st.ino !== prefix.identity.ino) {
    closeFd(fd);
    throw refuse(`(${prefix.real}) is no longer the directory it was when the policy was loaded`);
  }
  return fd;
}

/**
 * Opens a file below one of the allowed prefixes, without following symlinks out of it.
 *
 * @param prefixes - the policy's storage prefixes
 * @param path - the requested absolute path
 * @param mode - `r` or `rw`
 * @returns a close-on-exec fd of the regular file or block device
 * @throws {@link VirtError} `ACCESS_DENIED` (rule `storage.prefixes` or `storage.fileType`),
 *   `SYSTEM_ERROR` when the file cannot be opened
 */
export function openBeneath(prefixes: readonly StoragePrefix[], path: string, mode: 'r' | 'rw'): number {
  const requested = posix.normalize(path);
  const prefix = prefixes.find(
    (p) =>
      (inside(requested, p.given) && requested !== p.given) ||
      (inside(requested, p.real) && requested !== p.real),
  );
  if (!prefix || path.includes('\0')) {
    throw denied('storage.prefixes', `${path} is not below ${prefixes.map((p) => p.given).join(', ')}`, {
      path,
      prefixes: prefixes.map((p) => p.given),
    });
  }
  const base = inside(requested, prefix.given) && requested !== prefix.given ? prefix.given : prefix.real;
  const dirfd = openPrefix(prefix, path);
  let fd: number;
  try {
    const rel = resolveBeneath(requested, prefix, dirfd, relativeTo(requested, base));
    if (rel.length === 0)
      throw denied('storage.prefixes', `${path} is a prefix itself, not a file below it`, { path });
    // O_NONBLOCK: opening a FIFO planted in the prefix must not hang the helper.
    const flags = (mode === 'r' ? O.RDONLY : O.RDWR) | O_NOFOLLOW | O_NOCTTY | O.NONBLOCK | O.CLOEXEC;
    fd = openat2(dirfd, rel.join('/'), flags, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
  } catch (err) {
    if (VirtError.is(err)) throw err;
    const errno = err instanceof SyscallError ? err.code : undefined;
    if (errno === 'ELOOP' || errno === 'EXDEV') {
      throw denied('storage.prefixes', `${path} changed into a symlink while it was being opened`, { path });
    }
    throw fileError(path, err);
  } finally {
    closeFd(dirfd);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile() && !st.isBlockDevice()) {
      throw denied('storage.fileType', `${path} is neither a regular file nor a block device`, { path });
    }
    const c = openLib();
    const fl = c.fcntl(fd, F_GETFL);
    if (fl < 0 || c.fcntl(fd, F_SETFL, 'int', fl & ~O.NONBLOCK) < 0) {
      throw new SyscallError('fcntl', koffi.errno(), `${fd}, F_SETFL`);
    }
  } catch (err) {
    closeFd(fd);
    throw VirtError.is(err) ? err : fileError(path, err);
  }
  return fd;
}

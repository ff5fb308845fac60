/**
 * Crash-safe file replacement: write a temporary file next to the target, fsync it, rename it
 * over the target and fsync the directory, so a reader (or a reboot) sees the old content or the
 * new content, never a mix or an empty file.
 *
 * @internal
 * @packageDocumentation
 */

import { randomBytes } from 'node:crypto';
import {
  closeSync,
  fchmodSync,
  constants as fsConstants,
  fsync,
  fsyncSync,
  lstatSync,
  openSync,
  renameSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { type FileHandle, open, rename, unlink } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { ErrorCode, errnoOf, toVirtError } from '../errors.js';
import { faultPoint } from './fault-points.js';
import { renameExchange } from './libc.js';

/** errnos of a directory fsync that only mean "this file system does not sync directories". */
const DIR_FSYNC_UNSUPPORTED = new Set(['EINVAL', 'ENOTSUP', 'EOPNOTSUPP', 'EISDIR', 'EBADF']);

/**
 * Temporaries are `<target>.tmp-<pid>-<hex>`: a random prefix per copy of this module (two copies,
 * ESM and CJS, may share a process) and a counter. A random suffix per write cost a synchronous
 * read of the kernel's random pool every time, many per start.
 */
const tempPrefix = randomBytes(4).toString('hex');
let tempCounter = 0;

/** A fresh temporary name in the target's directory. */
function tempPath(path: string): string {
  tempCounter++;
  return `${path}.tmp-${process.pid}-${tempPrefix}${tempCounter.toString(16).padStart(8, '0')}`;
}

function fail(err: unknown, path: string): never {
  throw toVirtError(err, ErrorCode.SYSTEM_ERROR, `cannot write ${path}`, { errno: errnoOf(err), file: path });
}

function isFile(path: string): boolean {
  return lstatSync(path, { throwIfNoEntry: false })?.isFile() ?? false;
}

function toBytes(data: string | Uint8Array): Uint8Array {
  return typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
}

/**
 * Writes `data` to a fresh temporary beside `path` and puts it in `path`'s place. Unless `durable`,
 * by exchanging the two files and removing the temporary, which then holds the old content; if
 * `durable`, by fsyncing the temporary and renaming it over `path`. With `keepOpen` the new file's
 * descriptor is returned still open; otherwise it is closed before the swap.
 */
function swapIn(
  path: string,
  data: string | Uint8Array,
  mode: number | undefined,
  durable: boolean,
  keepOpen: true,
): number;
function swapIn(
  path: string,
  data: string | Uint8Array,
  mode: number | undefined,
  durable: boolean,
  keepOpen: false,
): void;
function swapIn(
  path: string,
  data: string | Uint8Array,
  mode: number | undefined,
  durable: boolean,
  keepOpen: boolean,
): number | undefined {
  const tmp = tempPath(path);
  const bytes = toBytes(data);
  let fd: number | undefined;
  let exchanged = false;
  try {
    fd = openSync(tmp, 'wx', mode ?? 0o666);
    let off = 0;
    while (off < bytes.length) off += writeSync(fd, bytes, off, bytes.length - off);
    if (mode !== undefined) fchmodSync(fd, mode);
    if (durable) fsyncSync(fd);
    if (!keepOpen) {
      const f = fd;
      fd = undefined;
      closeSync(f);
    }
    faultPoint(`atomic:${basename(dirname(path))}`);
    // Only a regular file is exchanged: a directory in its place must fail the rename as before.
    exchanged = !durable && isFile(path) && renameExchange(tmp, path);
    if (!exchanged) renameSync(tmp, path);
  } catch (err) {
    if (fd !== undefined) {
      try {
        closeSync(fd);
      } catch {}
    }
    try {
      unlinkSync(tmp);
    } catch {}
    fail(err, path);
  }
  if (exchanged) {
    try {
      unlinkSync(tmp);
    } catch {
      // The new content is in place; the old one, left under the temporary's name, is swept later.
    }
  }
  return fd;
}

/** How {@link writeFileAtomic} writes. */
export interface AtomicWriteOptions {
  /**
   * `false` skips both fsyncs: the replacement is still atomic for any reader and survives the
   * writer being killed, but not a crash of the host (for records of things that do not survive
   * one either, such as running processes). Default true.
   */
  readonly durable?: boolean;
  /**
   * Durable, with the file's fsync after the rename instead of before it: one journal commit
   * instead of two on ext4 (about half the wait). Until the call returns, a crash of the host may
   * leave `path` empty instead of with its old content, so only for replacing a record that was
   * not durable itself.
   */
  readonly syncAfterRename?: boolean;
}

/**
 * Replaces the content of `path` atomically and durably.
 *
 * @param path - the file to write; its directory must exist
 * @param data - the new content (strings are written as UTF-8)
 * @param mode - the permission bits of the new file, applied exactly (not masked by the umask);
 *   default `0o666` masked by the umask
 * @param options - see {@link AtomicWriteOptions}
 * @throws {@link VirtError} `SYSTEM_ERROR` on any failure; the temporary file is removed and
 *   `path` keeps its old content (unless the rename was done: with `syncAfterRename`, a failed
 *   fsync leaves the new content in place, not durable)
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  mode?: number,
  options: AtomicWriteOptions = {},
): Promise<void> {
  const durable = options.durable ?? true;
  if (durable && options.syncAfterRename === true) return replaceThenSync(path, data, mode);
  const tmp = tempPath(path);
  const bytes = toBytes(data);
  let fh: FileHandle | undefined;
  let renamed = false;
  try {
    fh = await open(tmp, 'wx', mode ?? 0o666);
    let off = 0;
    while (off < bytes.length) {
      const { bytesWritten } = await fh.write(bytes, off, bytes.length - off);
      off += bytesWritten;
    }
    if (mode !== undefined) await fh.chmod(mode);
    if (durable) await fh.sync();
    const h = fh;
    fh = undefined;
    await h.close();
    faultPoint(`atomic:${basename(dirname(path))}`);
    await rename(tmp, path);
    renamed = true;
  } catch (err) {
    await fh?.close().catch(() => {});
    if (!renamed) await unlink(tmp).catch(() => {});
    fail(err, path);
  }
  if (!durable) return;
  try {
    const dir = await open(dirname(path), fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  } catch (err) {
    if (!DIR_FSYNC_UNSUPPORTED.has(errnoOf(err) ?? '')) fail(err, path);
  }
}

function fsyncAsync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fsync(fd, (err) => (err ? reject(err) : resolve())));
}

/**
 * {@link writeFileAtomic} with `syncAfterRename`: the file is written and swapped in synchronously
 * (as {@link writeFileAtomicSync} does without fsync, tens of µs), then the file and its directory
 * are fsync'd at once, off the event loop. Through `fs/promises` the same took about ten round
 * trips through libuv's thread pool, each waking a pool thread and then the event loop: with a
 * hundred domains starting at once, the largest share of the driver's event-loop time.
 */
async function replaceThenSync(
  path: string,
  data: string | Uint8Array,
  mode: number | undefined,
): Promise<void> {
  const fd = swapIn(path, data, mode, false, true);
  let dir: number | undefined;
  try {
    dir = openSync(dirname(path), fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
    // Settled both before either descriptor is closed: a close under a pending fsync could let
    // that fsync reach a reused descriptor number.
    const [file, directory] = await Promise.allSettled([fsyncAsync(fd), fsyncAsync(dir)]);
    if (file.status === 'rejected') throw file.reason;
    if (directory.status === 'rejected' && !DIR_FSYNC_UNSUPPORTED.has(errnoOf(directory.reason) ?? ''))
      throw directory.reason;
  } catch (err) {
    fail(err, path);
  } finally {
    closeSync(fd);
    if (dir !== undefined) closeSync(dir);
  }
}

/**
 * Synchronous {@link writeFileAtomic}.
 *
 * With `durable: false` the new content replaces the old by exchanging the two files
 * (`renameat2(RENAME_EXCHANGE)`), then removing the temporary, which now holds the old content.
 * A plain rename over an existing file makes ext4 start writing the new file back at once
 * (`auto_da_alloc`), up to milliseconds on a slow disk, which a record that need not survive a
 * crash of the host should not pay. A writer killed between the two steps leaves the temporary
 * (old content, under the temporary's name) for a clean-up of `*.tmp-<pid>-<hex>` files.
 *
 * @param path - the file to write; its directory must exist
 * @param data - the new content (strings are written as UTF-8)
 * @param mode - the permission bits of the new file, applied exactly; default `0o666` masked by the umask
 * @param options - `durable: false` skips both fsyncs, as for {@link writeFileAtomic}
 * @throws {@link VirtError} `SYSTEM_ERROR` on any failure; the temporary file is removed and
 *   `path` keeps its old content
 */
export function writeFileAtomicSync(
  path: string,
  data: string | Uint8Array,
  mode?: number,
  options: { readonly durable?: boolean } = {},
): void {
  const durable = options.durable ?? true;
  swapIn(path, data, mode, durable, false);
  if (!durable) return;
  try {
    const dir = openSync(dirname(path), fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
  } catch (err) {
    if (!DIR_FSYNC_UNSUPPORTED.has(errnoOf(err) ?? '')) fail(err, path);
  }
}

import {
  type Dirent,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { posix } from 'node:path';
import { ErrorCode, errnoOf, errorMessage, VirtError } from '../errors.js';
import type { PlaceRequest } from './cgroup-types.js';

/*
 * The cgroup manager's contact with the file system: the names that become path components,
 * checked before anything is touched, and the file operations, whose failures become VirtErrors.
 */

const NAME_RE = /^[A-Za-z0-9_.-]+$/;

function invalid(what: string, value: unknown, why: string): VirtError {
  return new VirtError(ErrorCode.XML_ERROR, `invalid cgroup ${what} ${JSON.stringify(value)}: ${why}`, {
    path: what,
  });
}

export function checkName(what: string, value: unknown): void {
  if (typeof value !== 'string' || !NAME_RE.test(value) || value === '.' || value === '..') {
    throw invalid(what, value, "it must match [A-Za-z0-9_.-]+ and not be '.' or '..'");
  }
}

export function checkParent(parent: unknown): void {
  if (typeof parent !== 'string' || parent === '' || parent.startsWith('/')) {
    throw invalid('parent', parent, 'it must be a non-empty path relative to the hierarchy root');
  }
  for (const part of parent.split('/')) {
    if (part === '' || part === '.' || part === '..' || !NAME_RE.test(part)) {
      throw invalid('parent', parent, "its components must match [A-Za-z0-9_.-]+ and not be '.' or '..'");
    }
  }
}

function checkId(what: string, value: unknown): void {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 0x3fff_ffff) {
    throw invalid(what, value, 'it must be a positive integer');
  }
}

export function checkRequest(req: PlaceRequest): void {
  checkParent(req.parent);
  checkName('name', req.name);
  checkId('pid', req.pid);
  const seen = new Set<string>();
  for (const g of req.groups) {
    checkName('group', g.name);
    if (seen.has(g.name)) throw invalid('group', g.name, 'it is listed twice');
    seen.add(g.name);
    if (g.cpus !== undefined && (typeof g.cpus !== 'string' || !/^\d+(-\d+)?(,\d+(-\d+)?)*$/.test(g.cpus))) {
      throw invalid('cpus', g.cpus, "it must be a cpuset such as '0-1,3'");
    }
    for (const tid of g.tids) checkId('tid', tid);
  }
}

/**
 * Turns a failed file operation into a VirtError: `EACCES`/`EPERM` → `ACCESS_DENIED` naming what
 * was missing (`CAP_SYS_ADMIN` to move a task, else write access to the path), else `SYSTEM_ERROR`.
 */
export function fsError(err: unknown, action: string, path: string, moving = false): VirtError {
  if (VirtError.is(err)) return err;
  const errno = errnoOf(err) ?? 'EUNKNOWN';
  if (errno === 'EACCES' || errno === 'EPERM') {
    const capability = moving ? 'CAP_SYS_ADMIN' : `write access to ${path}`;
    return new VirtError(
      ErrorCode.ACCESS_DENIED,
      `cannot ${action}: ${errorMessage(err)}. Placing threads needs ${capability}; run as root, delegate the cgroup subtree to this uid, or let a privileged handler do it`,
      { capability, errno, path },
      { cause: err },
    );
  }
  return new VirtError(
    ErrorCode.SYSTEM_ERROR,
    `cannot ${action}: ${errorMessage(err)}`,
    { errno, path },
    {
      cause: err,
    },
  );
}

export function read(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw fsError(err, `read ${path}`, path);
  }
}

export function write(path: string, value: string, action: string, moving = false): void {
  try {
    writeFileSync(path, value);
  } catch (err) {
    throw fsError(err, action, path, moving);
  }
}

/** Creates a directory; returns true if it was created, false if it already existed. */
export function mkdir(path: string): boolean {
  try {
    mkdirSync(path);
    return true;
  } catch (err) {
    if (errnoOf(err) !== 'EEXIST') throw fsError(err, `create cgroup ${path}`, path);
  }
  let isDir = false;
  try {
    isDir = statSync(path).isDirectory();
  } catch (err) {
    throw fsError(err, `stat ${path}`, path);
  }
  if (!isDir) {
    throw new VirtError(ErrorCode.SYSTEM_ERROR, `cannot create cgroup ${path}: a file of that name exists`, {
      errno: 'EEXIST',
      path,
    });
  }
  return false;
}

/** Blocks the thread for `ms` milliseconds (used only for short retries). */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** The ids listed in a `tasks`/`cgroup.procs`/`cgroup.threads` file; empty if it is gone. */
export function members(file: string): number[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return [];
    throw fsError(err, `read ${file}`, file);
  }
  return text
    .split('\n')
    .filter((l) => /^\d+$/.test(l))
    .map(Number);
}

/** `/proc`'s view of a path below the mount. */
export function procPath(root: string, ...parts: string[]): string {
  return posix.join(root, ...parts);
}

/** The subdirectories of `dir`, deepest first, then `dir` itself; empty when `dir` is gone. */
export function treeBottomUp(dir: string): string[] {
  // Releasing a domain that placed nothing is the common case; a thrown ENOENT costs ~30 µs.
  if (!existsSync(dir)) return [];
  let entries: Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return [];
    throw fsError(err, `list ${dir}`, dir);
  }
  const out: string[] = [];
  for (const e of entries) if (e.isDirectory()) out.push(...treeBottomUp(`${dir}/${e.name}`));
  out.push(dir);
  return out;
}

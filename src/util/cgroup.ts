/**
 * virtkit's own cgroup manager: the fallback that places QEMU's threads (emulator, vCPUs, I/O
 * threads) into per-domain cgroups when no external manager (systemd, a privileged handler) does.
 *
 * Two layouts are supported, both `<mount>/<parent>/<name>/<group>`:
 *
 * - `v1-cpuset`: the cgroup v1 cpuset hierarchy. Each thread is written to its group's `tasks`;
 *   the rest of the process stays where it was.
 * - `v2-threaded`: the cgroup v2 unified hierarchy. The process is moved into the domain cgroup
 *   `<parent>/<name>`, the groups are threaded cgroups below it and each thread is written to
 *   its group's `cgroup.threads`. Threads that are placed nowhere stay in the domain cgroup. A
 *   group's `cpus` is applied only when the v2 cpuset controller is available; otherwise it is
 *   ignored and the threads are placed all the same.
 *
 * Every failure is a {@link VirtError}: `EACCES`/`EPERM` → `ACCESS_DENIED`, anything else →
 * `SYSTEM_ERROR`, invalid names → `XML_ERROR` before the file system is touched.
 *
 * @internal
 * @packageDocumentation
 */

import {
  type Dirent,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { posix } from 'node:path';
import { ErrorCode, errnoOf, errorMessage, VirtError } from '../stable/errors.js';
import { readThreadCgroups } from './proc.js';

/**
 * Which cgroup hierarchy virtkit places threads in.
 *
 * @internal
 */
export type CgroupMode = 'v1-cpuset' | 'v2-threaded';

/**
 * One group of threads below the domain cgroup.
 *
 * @internal
 */
export interface CgroupGroup {
  /** The directory name, e.g. `emulator`, `vcpu0`, `iothread1`. */
  name: string;
  /** A cpuset such as `0-1` or `1`; undefined inherits the parent's CPUs. */
  cpus?: string;
  /** The thread ids to place in the group. */
  tids: number[];
}

/**
 * Where one thread was placed.
 *
 * @internal
 */
export interface Placement {
  /** The thread id. */
  tid: number;
  /**
   * The cgroup path exactly as `/proc/<pid>/task/<tid>/cgroup` shows it for the hierarchy used,
   * e.g. `/virtkit/<name>/vcpu0` (compare with {@link threadCgroup}).
   */
  cgroup: string;
}

/**
 * Where the hierarchies are mounted, and which one to use.
 *
 * @internal
 */
export interface CgroupManagerOptions {
  /** The hierarchy; default {@link detectCgroupMode}. */
  mode?: CgroupMode;
  /** The cgroup v1 cpuset mount; default the one in `/proc/self/mountinfo`, else `/sys/fs/cgroup/cpuset`. */
  v1Mount?: string;
  /** The cgroup v2 mount; default `/sys/fs/cgroup` if it is cgroup2, else `/sys/fs/cgroup/unified`. */
  v2Mount?: string;
}

/**
 * What {@link placeThreads} is asked to do.
 *
 * @internal
 */
export interface PlaceRequest {
  /** The shared parent, relative to the mount, e.g. `virtkit` or `machine/virtkit`. */
  parent: string;
  /** The domain's directory below the parent, e.g. its uuid. */
  name: string;
  /** The process whose threads are placed. */
  pid: number;
  /** The groups to create below the domain directory. */
  groups: CgroupGroup[];
}

// ---------------------------------------------------------------------------------------------------------
// Mounts
// ---------------------------------------------------------------------------------------------------------

const DEFAULT_V1_MOUNT = '/sys/fs/cgroup/cpuset';
const CGROUP_ROOT = '/sys/fs/cgroup';
const DEFAULT_V2_MOUNT = '/sys/fs/cgroup/unified';
const NAME_RE = /^[A-Za-z0-9_.-]+$/;

interface MountEntry {
  /** The root of the mount within its file system (for cgroupfs: within the cgroup namespace). */
  root: string;
  mountPoint: string;
  fsType: string;
  superOptions: string[];
}

/** Undoes mountinfo's octal escapes (`\040` for a space…). */
function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(Number.parseInt(oct, 8)));
}

/** The cgroup and cgroup2 mounts of `/proc/self/mountinfo`; empty when it cannot be read. */
function cgroupMounts(): MountEntry[] {
  let text: string;
  try {
    text = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return [];
  }
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    // id parent major:minor root mount-point options [optional fields…] - fstype source super-options
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    const right = line.slice(sep + 3).split(' ');
    const fsType = right[0];
    if (fsType !== 'cgroup' && fsType !== 'cgroup2') continue;
    out.push({
      root: unescapeMount(left[3] ?? '/'),
      mountPoint: unescapeMount(left[4] ?? ''),
      fsType,
      superOptions: (right[2] ?? '').split(','),
    });
  }
  return out;
}

/** The mount entry at `path` (the last one, as later mounts hide earlier ones). */
function mountAt(mounts: MountEntry[], path: string): MountEntry | undefined {
  const p = posix.normalize(path).replace(/(.)\/$/, '$1');
  return mounts.filter((m) => m.mountPoint === p).pop();
}

function isV1Cpuset(m: MountEntry | undefined): boolean {
  return m?.fsType === 'cgroup' && m.superOptions.includes('cpuset');
}

function v1MountOf(options: CgroupManagerOptions | undefined, mounts: MountEntry[]): string {
  if (options?.v1Mount) return options.v1Mount;
  if (isV1Cpuset(mountAt(mounts, DEFAULT_V1_MOUNT))) return DEFAULT_V1_MOUNT;
  return mounts.filter((m) => isV1Cpuset(m)).pop()?.mountPoint ?? DEFAULT_V1_MOUNT;
}

function v2MountOf(options: CgroupManagerOptions | undefined, mounts: MountEntry[]): string {
  if (options?.v2Mount) return options.v2Mount;
  if (mountAt(mounts, CGROUP_ROOT)?.fsType === 'cgroup2') return CGROUP_ROOT;
  if (mountAt(mounts, DEFAULT_V2_MOUNT)?.fsType === 'cgroup2') return DEFAULT_V2_MOUNT;
  return mounts.filter((m) => m.fsType === 'cgroup2').pop()?.mountPoint ?? DEFAULT_V2_MOUNT;
}

/**
 * Which hierarchy virtkit can use: `v1-cpuset` when the cgroup v1 cpuset hierarchy is mounted
 * (at `options.v1Mount` when given), else `v2-threaded` when a cgroup2 file system is mounted (at
 * `options.v2Mount` when given). `options.mode`, when set, is returned as is.
 *
 * @param options - mount points to check instead of `/proc/self/mountinfo`'s
 * @returns the mode, or undefined when neither is mounted
 */
export function detectCgroupMode(options?: CgroupManagerOptions): CgroupMode | undefined {
  if (options?.mode) return options.mode;
  const mounts = cgroupMounts();
  if (options?.v1Mount ? isV1Cpuset(mountAt(mounts, options.v1Mount)) : mounts.some((m) => isV1Cpuset(m))) {
    return 'v1-cpuset';
  }
  if (
    options?.v2Mount
      ? mountAt(mounts, options.v2Mount)?.fsType === 'cgroup2'
      : mounts.some((m) => m.fsType === 'cgroup2')
  ) {
    return 'v2-threaded';
  }
  return undefined;
}

/** The hierarchy to use and where it is mounted, and the mount's root as /proc shows it. */
function resolve(options: CgroupManagerOptions | undefined): {
  mode: CgroupMode;
  mount: string;
  root: string;
} {
  const mode = options?.mode ?? detectCgroupMode(options);
  if (!mode) {
    throw new VirtError(
      ErrorCode.NO_SUPPORT,
      'no usable cgroup hierarchy: neither the cgroup v1 cpuset controller nor a cgroup2 file system is mounted',
      { path: '/proc/self/mountinfo' },
    );
  }
  const mounts = cgroupMounts();
  const mount = mode === 'v1-cpuset' ? v1MountOf(options, mounts) : v2MountOf(options, mounts);
  return { mode, mount, root: mountAt(mounts, mount)?.root ?? '/' };
}

// ---------------------------------------------------------------------------------------------------------
// Validation and errors
// ---------------------------------------------------------------------------------------------------------

function invalid(what: string, value: unknown, why: string): VirtError {
  return new VirtError(ErrorCode.XML_ERROR, `invalid cgroup ${what} ${JSON.stringify(value)}: ${why}`, {
    path: what,
  });
}

function checkName(what: string, value: unknown): void {
  if (typeof value !== 'string' || !NAME_RE.test(value) || value === '.' || value === '..') {
    throw invalid(what, value, "it must match [A-Za-z0-9_.-]+ and not be '.' or '..'");
  }
}

function checkParent(parent: unknown): void {
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

function checkRequest(req: PlaceRequest): void {
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
function fsError(err: unknown, action: string, path: string, moving = false): VirtError {
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

function read(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw fsError(err, `read ${path}`, path);
  }
}

function write(path: string, value: string, action: string, moving = false): void {
  try {
    writeFileSync(path, value);
  } catch (err) {
    throw fsError(err, action, path, moving);
  }
}

/** Creates a directory; returns true if it was created, false if it already existed. */
function mkdir(path: string): boolean {
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
function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** The ids listed in a `tasks`/`cgroup.procs`/`cgroup.threads` file; empty if it is gone. */
function members(file: string): number[] {
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

// ---------------------------------------------------------------------------------------------------------
// Placement
// ---------------------------------------------------------------------------------------------------------

/**
 * Creates the domain's cgroups and places the threads of a process in them.
 *
 * - v1: creates `<mount>/<parent>/<name>/<group>`; at every level whose `cpuset.mems` or
 *   `cpuset.cpus` is empty (a new directory) copies them from its parent (a group's `cpus`
 *   overrides its CPUs), then writes each tid to `<group>/tasks`.
 * - v2: creates `<mount>/<parent>/<name>`, moves the process into it (`cgroup.procs`), creates the
 *   groups as threaded cgroups, applies `cpus` when the cpuset controller is available (else
 *   ignores them) and writes each tid to `<group>/cgroup.threads`.
 *
 * On failure, the empty directories it created are removed again (nothing is moved back) and the
 * error is thrown.
 *
 * @param req - the parent, domain directory name, pid and groups
 * @param options - the mode and mount points
 * @returns the mode used and, for each tid, the cgroup path as `/proc` shows it
 * @throws {@link VirtError} `XML_ERROR` for an invalid name (before touching anything),
 *   `NO_SUPPORT` when no hierarchy is mounted, `ACCESS_DENIED` on `EACCES`/`EPERM`,
 *   `SYSTEM_ERROR` otherwise (e.g. `ESRCH` for a thread that has exited)
 */
export function placeThreads(
  req: PlaceRequest,
  options?: CgroupManagerOptions,
): { mode: CgroupMode; placements: Placement[] } {
  checkRequest(req);
  const { mode, mount, root } = resolve(options);
  const created: string[] = [];
  try {
    const placements =
      mode === 'v1-cpuset' ? placeV1(req, mount, root, created) : placeV2(req, mount, root, created);
    return { mode, placements };
  } catch (err) {
    for (const dir of created.reverse()) {
      try {
        rmdirSync(dir);
      } catch {
        // Still holds tasks (nothing is moved back), or already gone.
      }
    }
    throw err;
  }
}

/** `/proc`'s view of a path below the mount. */
function procPath(root: string, ...parts: string[]): string {
  return posix.join(root, ...parts);
}

function placeV1(req: PlaceRequest, mount: string, root: string, created: string[]): Placement[] {
  if (!existsCpuset(mount)) {
    throw new VirtError(
      ErrorCode.SYSTEM_ERROR,
      `${mount} is not a cgroup v1 cpuset hierarchy (no cpuset.cpus)`,
      { errno: 'ENOENT', path: `${mount}/cpuset.cpus` },
    );
  }
  /** Creates `dir` below `parentDir` and makes sure its cpuset is usable. */
  const level = (parentDir: string, dir: string, cpus?: string): void => {
    if (mkdir(dir)) created.push(dir);
    const mems = read(`${dir}/cpuset.mems`).trim();
    if (mems === '') {
      write(`${dir}/cpuset.mems`, read(`${parentDir}/cpuset.mems`).trim(), `set ${dir}/cpuset.mems`);
    }
    if (cpus !== undefined) {
      write(`${dir}/cpuset.cpus`, cpus, `set ${dir}/cpuset.cpus to ${cpus}`);
    } else if (read(`${dir}/cpuset.cpus`).trim() === '') {
      write(`${dir}/cpuset.cpus`, read(`${parentDir}/cpuset.cpus`).trim(), `set ${dir}/cpuset.cpus`);
    }
  };
  let dir = mount;
  for (const part of [...req.parent.split('/'), req.name]) {
    const next = `${dir}/${part}`;
    level(dir, next);
    dir = next;
  }
  const domainDir = dir;
  const placements: Placement[] = [];
  for (const g of req.groups) {
    const groupDir = `${domainDir}/${g.name}`;
    // A group without cpus inherits its parent's CPUs, even when it existed with others.
    level(domainDir, groupDir, g.cpus ?? read(`${domainDir}/cpuset.cpus`).trim());
  }
  for (const g of req.groups) {
    const groupDir = `${domainDir}/${g.name}`;
    for (const tid of g.tids) {
      write(
        `${groupDir}/tasks`,
        String(tid),
        `move thread ${tid} of process ${req.pid} into ${groupDir}`,
        true,
      );
      placements.push({ tid, cgroup: procPath(root, req.parent, req.name, g.name) });
    }
  }
  return placements;
}

function existsCpuset(mount: string): boolean {
  try {
    return statSync(`${mount}/cpuset.cpus`).isFile();
  } catch {
    return false;
  }
}

function placeV2(req: PlaceRequest, mount: string, root: string, created: string[]): Placement[] {
  let rootControllers: string[];
  try {
    rootControllers = readFileSync(`${mount}/cgroup.controllers`, 'utf8').trim().split(/\s+/);
  } catch (err) {
    throw new VirtError(
      ErrorCode.SYSTEM_ERROR,
      `${mount} is not a cgroup v2 hierarchy: ${errorMessage(err)}`,
      { errno: errnoOf(err), path: `${mount}/cgroup.controllers` },
      { cause: err },
    );
  }
  const chain = [mount];
  let dir = mount;
  for (const part of [...req.parent.split('/'), req.name]) {
    dir = `${dir}/${part}`;
    if (mkdir(dir)) created.push(dir);
    chain.push(dir);
  }
  const domainDir = dir;
  write(`${domainDir}/cgroup.procs`, String(req.pid), `move process ${req.pid} into ${domainDir}`, true);
  for (const g of req.groups) {
    const groupDir = `${domainDir}/${g.name}`;
    if (mkdir(groupDir)) created.push(groupDir);
    write(`${groupDir}/cgroup.type`, 'threaded', `make ${groupDir} a threaded cgroup`);
  }
  // cpuset is a threaded controller: it may be enabled all the way down to the domain cgroup even
  // though that cgroup holds the process. Without it, cpus are ignored and placement still happens.
  if (req.groups.some((g) => g.cpus !== undefined) && rootControllers.includes('cpuset')) {
    for (const d of chain) {
      const file = `${d}/cgroup.subtree_control`;
      if (!read(file).split(/\s+/).includes('cpuset')) write(file, '+cpuset', `enable cpuset in ${file}`);
    }
    for (const g of req.groups) {
      if (g.cpus === undefined) continue;
      const groupDir = `${domainDir}/${g.name}`;
      write(`${groupDir}/cpuset.cpus`, g.cpus, `set ${groupDir}/cpuset.cpus to ${g.cpus}`);
    }
  }
  const placements: Placement[] = [];
  for (const g of req.groups) {
    const groupDir = `${domainDir}/${g.name}`;
    for (const tid of g.tids) {
      write(
        `${groupDir}/cgroup.threads`,
        String(tid),
        `move thread ${tid} of process ${req.pid} into ${groupDir}`,
        true,
      );
      placements.push({ tid, cgroup: procPath(root, req.parent, req.name, g.name) });
    }
  }
  return placements;
}

// ---------------------------------------------------------------------------------------------------------
// Release
// ---------------------------------------------------------------------------------------------------------

/** The subdirectories of `dir`, deepest first, then `dir` itself; empty when `dir` is gone. */
function treeBottomUp(dir: string): string[] {
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

/**
 * Removes a domain's cgroups: every group below `<mount>/<parent>/<name>`, then that directory
 * (never the shared parent). Directories already gone are fine.
 *
 * @param req - the parent and domain directory name given to {@link placeThreads}
 * @param options - the mode and mount points
 * @throws {@link VirtError} `SYSTEM_ERROR` naming the cgroup when one still holds tasks (in v2,
 *   the process itself: stop it first) — nothing is removed then; `ACCESS_DENIED` on
 *   `EACCES`/`EPERM`; `XML_ERROR` for an invalid name
 */
export function releaseCgroups(req: { parent: string; name: string }, options?: CgroupManagerOptions): void {
  checkParent(req.parent);
  checkName('name', req.name);
  const { mode, mount } = resolve(options);
  const domainDir = `${mount}/${req.parent}/${req.name}`;
  const dirs = treeBottomUp(domainDir);
  // cgroup.threads lists every thread of a v2 cgroup, domain or threaded.
  const busy = (dir: string): number[] =>
    members(`${dir}/${mode === 'v1-cpuset' ? 'tasks' : 'cgroup.threads'}`);
  // Check first, so that a domain that is still running loses none of its groups.
  for (const dir of dirs) {
    const ids = busy(dir);
    if (ids.length > 0) throw stillBusy(dir, ids, mode);
  }
  for (const dir of dirs) {
    // A task that has just been reaped can keep a cgroup busy for a moment: retry EBUSY briefly.
    for (let attempt = 0; ; attempt++) {
      try {
        rmdirSync(dir);
        break;
      } catch (err) {
        const errno = errnoOf(err);
        if (errno === 'ENOENT') break;
        if (errno === 'EBUSY' && attempt < 50) {
          sleepSync(10);
          continue;
        }
        if (errno === 'EBUSY') throw stillBusy(dir, busy(dir), mode);
        throw fsError(err, `remove cgroup ${dir}`, dir);
      }
    }
  }
}

function stillBusy(dir: string, ids: number[], mode: CgroupMode): VirtError {
  const what =
    ids.length > 0 ? `task(s) ${ids.slice(0, 10).join(', ')}${ids.length > 10 ? '…' : ''}` : 'tasks';
  return new VirtError(
    ErrorCode.SYSTEM_ERROR,
    `cannot release cgroup ${dir}: it still holds ${what}${mode === 'v2-threaded' ? ' (stop the process first)' : ''}`,
    { errno: 'EBUSY', path: dir, ...(ids.length > 0 ? { tids: ids } : {}) },
  );
}

// ---------------------------------------------------------------------------------------------------------
// Inspection
// ---------------------------------------------------------------------------------------------------------

/**
 * The cgroup of a thread in one hierarchy, from `/proc/<pid>/task/<tid>/cgroup`: for `v1-cpuset`
 * the line whose controllers include `cpuset`, for `v2-threaded` the `0::` line.
 *
 * @param pid - the process
 * @param tid - the thread
 * @param mode - the hierarchy
 * @returns the path, e.g. `/virtkit/<name>/vcpu0`, or undefined when the thread does not exist or
 *   the hierarchy is not mounted
 */
export function threadCgroup(pid: number, tid: number, mode: CgroupMode): string | undefined {
  const entries = readThreadCgroups(pid, tid);
  const entry =
    mode === 'v1-cpuset'
      ? entries.find((e) => e.controllers.includes('cpuset'))
      : entries.find((e) => e.hierarchyId === 0 && e.controllers.length === 0);
  return entry?.path;
}

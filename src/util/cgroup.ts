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
 * This file holds the API; cgroup-mounts.ts finds the hierarchies, cgroup-fs.ts checks names and
 * does the file operations, cgroup-v1.ts and cgroup-v2.ts place the threads in each layout.
 *
 * @internal
 * @packageDocumentation
 */

import { rmdirSync } from 'node:fs';
import { ErrorCode, errnoOf, VirtError } from '../errors.js';
import {
  checkName,
  checkParent,
  checkRequest,
  fsError,
  members,
  sleepSync,
  treeBottomUp,
} from './cgroup-fs.js';
import { resolve } from './cgroup-mounts.js';
import type { CgroupManagerOptions, CgroupMode, Placement, PlaceRequest } from './cgroup-types.js';
import { placeV1 } from './cgroup-v1.js';
import { placeV2 } from './cgroup-v2.js';
import { readThreadCgroups } from './proc.js';

export { detectCgroupMode } from './cgroup-mounts.js';
export type {
  CgroupGroup,
  CgroupManagerOptions,
  CgroupMode,
  Placement,
  PlaceRequest,
} from './cgroup-types.js';

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

// ---------------------------------------------------------------------------------------------------------
// Release
// ---------------------------------------------------------------------------------------------------------

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
  const busy = (dir: string): number[] => members(tasksFile(dir, mode));
  // Check first, so that a domain that is still running loses none of its groups.
  for (const dir of dirs) {
    const ids = busy(dir);
    if (ids.length > 0) throw stillBusy(dir, ids, mode);
  }
  for (const dir of dirs) removeEmpty(dir, mode);
}

/**
 * Removes some groups of a running domain: `<mount>/<parent>/<name>/<group>` for each of `groups`
 * (a vCPU taken away), leaving the domain directory and its other groups alone. Groups already gone
 * are fine.
 *
 * @param req - the parent and domain directory name given to {@link placeThreads}, and the groups
 * @param options - the mode and mount points
 * @throws {@link VirtError} `SYSTEM_ERROR` naming the group when it still holds tasks (nothing is
 *   removed then); `ACCESS_DENIED` on `EACCES`/`EPERM`; `XML_ERROR` for an invalid name
 */
export function releaseGroups(
  req: { parent: string; name: string; groups: readonly string[] },
  options?: CgroupManagerOptions,
): void {
  checkParent(req.parent);
  checkName('name', req.name);
  for (const group of req.groups) checkName('group', group);
  const { mode, mount } = resolve(options);
  const dirs = req.groups.map((group) => `${mount}/${req.parent}/${req.name}/${group}`);
  for (const dir of dirs) {
    const ids = members(tasksFile(dir, mode));
    if (ids.length > 0) throw stillBusy(dir, ids, mode);
  }
  for (const dir of dirs) removeEmpty(dir, mode);
}

/** rmdir of an empty cgroup; a task just reaped can keep it busy for a moment, so EBUSY is retried briefly. */
function removeEmpty(dir: string, mode: CgroupMode): void {
  for (let attempt = 0; ; attempt++) {
    try {
      rmdirSync(dir);
      return;
    } catch (err) {
      const errno = errnoOf(err);
      if (errno === 'ENOENT') return;
      if (errno === 'EBUSY' && attempt < 50) {
        sleepSync(10);
        continue;
      }
      if (errno === 'EBUSY') throw stillBusy(dir, members(tasksFile(dir, mode)), mode);
      throw fsError(err, `remove cgroup ${dir}`, dir);
    }
  }
}

/** The file listing a cgroup's threads: cgroup.threads lists every thread of a v2 cgroup, domain or threaded. */
function tasksFile(dir: string, mode: CgroupMode): string {
  return `${dir}/${mode === 'v1-cpuset' ? 'tasks' : 'cgroup.threads'}`;
}

/**
 * Every thread id in a domain's cgroup tree; empty when the tree does not exist. Lets a privileged
 * caller see whether a domain's groups already hold another process before it places threads there.
 */
export function domainCgroupThreads(
  req: { parent: string; name: string },
  options?: CgroupManagerOptions,
): number[] {
  checkParent(req.parent);
  checkName('name', req.name);
  const { mode, mount } = resolve(options);
  return treeBottomUp(`${mount}/${req.parent}/${req.name}`).flatMap((dir) => members(tasksFile(dir, mode)));
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

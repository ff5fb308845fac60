import { readFileSync } from 'node:fs';
import { ErrorCode, errnoOf, errorMessage, VirtError } from '../errors.js';
import { mkdir, procPath, read, write } from './cgroup-fs.js';
import type { Placement, PlaceRequest } from './cgroup-types.js';
import { readThreadCgroups } from './proc.js';

/** True when the process's main thread is in the v2 cgroup `path` (as /proc shows it) or below it. */
function inTree(pid: number, path: string): boolean {
  const own = readThreadCgroups(pid, pid).find((e) => e.hierarchyId === 0 && e.controllers.length === 0);
  return own !== undefined && (own.path === path || own.path.startsWith(`${path}/`));
}

/*
 * Placement in the cgroup v2 unified hierarchy: only a threaded cgroup can hold single threads,
 * and its threads must belong to a process in the domain cgroup above it, so the process moves
 * there first.
 */

/** Creates the groups and writes each thread to its group's `cgroup.threads`; new directories go to `created`, for placeThreads to remove on failure. */
export function placeV2(req: PlaceRequest, mount: string, root: string, created: string[]): Placement[] {
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
  // Writing cgroup.procs moves every thread of the process: a process already in the domain's
  // tree (a vCPU hot-plugged after start) stays put, or its placed threads would all fall back.
  if (!inTree(req.pid, procPath(root, req.parent, req.name))) {
    write(`${domainDir}/cgroup.procs`, String(req.pid), `move process ${req.pid} into ${domainDir}`, true);
  }
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

import { statSync } from 'node:fs';
import { ErrorCode, VirtError } from '../errors.js';
import { mkdir, procPath, read, write } from './cgroup-fs.js';
import type { Placement, PlaceRequest } from './cgroup-types.js';

/*
 * Placement in the cgroup v1 cpuset hierarchy: a new cpuset has empty `cpuset.cpus` and
 * `cpuset.mems` and takes no task until they are set, so every level gets its parent's.
 */

/** Creates the groups and writes each thread to its group's `tasks`; new directories go to `created`, for placeThreads to remove on failure. */
export function placeV1(req: PlaceRequest, mount: string, root: string, created: string[]): Placement[] {
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

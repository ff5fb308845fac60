import { readFileSync } from 'node:fs';
import { posix } from 'node:path';
import { ErrorCode, VirtError } from '../errors.js';
import type { CgroupManagerOptions, CgroupMode } from './cgroup-types.js';

/* Where the cgroup hierarchies are mounted, from `/proc/self/mountinfo`, and which one to use. */

const DEFAULT_V1_MOUNT = '/sys/fs/cgroup/cpuset';
const CGROUP_ROOT = '/sys/fs/cgroup';
const DEFAULT_V2_MOUNT = '/sys/fs/cgroup/unified';

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

/*
 * Parsed once per process, as libvirt detects its cgroup mounts once at start-up: hierarchies are
 * mounted at boot, and re-reading mountinfo cost a privileged helper most of its time per request.
 * An empty result (nothing mounted yet, or unreadable) is not kept, so a later call looks again.
 */
let mountCache: MountEntry[] | undefined;

/** The cgroup and cgroup2 mounts of `/proc/self/mountinfo`; empty when it cannot be read. */
function cgroupMounts(): MountEntry[] {
  if (mountCache) return mountCache;
  const mounts = readCgroupMounts();
  if (mounts.length > 0) mountCache = mounts;
  return mounts;
}

function readCgroupMounts(): MountEntry[] {
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

interface Resolved {
  mode: CgroupMode;
  mount: string;
  root: string;
}

/** resolve() without options, for the mount table it was derived from (both are kept for good). */
let defaultResolved: { mounts: MountEntry[]; resolved: Readonly<Resolved> } | undefined;

/** The hierarchy to use and where it is mounted, and the mount's root as /proc shows it. */
export function resolve(options: CgroupManagerOptions | undefined): Readonly<Resolved> {
  if (options === undefined) {
    // Every request of the privileged helper asks this: once per mount table, not per request.
    const mounts = cgroupMounts();
    if (defaultResolved?.mounts !== mounts) {
      defaultResolved = { mounts, resolved: resolveFrom(undefined) };
    }
    return defaultResolved.resolved;
  }
  return resolveFrom(options);
}

function resolveFrom(options: CgroupManagerOptions | undefined): Resolved {
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

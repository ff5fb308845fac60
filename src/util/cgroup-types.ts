/**
 * The shapes of the cgroup manager (cgroup.ts), apart so that the files that implement it can use them
 * without importing the manager back.
 *
 * @internal
 * @packageDocumentation
 */

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
   * e.g. `/virtkit/<name>/vcpu0` (compare with `threadCgroup` in cgroup.ts).
   */
  cgroup: string;
}

/**
 * Where the hierarchies are mounted, and which one to use.
 *
 * @internal
 */
export interface CgroupManagerOptions {
  /** The hierarchy; default `detectCgroupMode`. */
  mode?: CgroupMode;
  /** The cgroup v1 cpuset mount; default the one in `/proc/self/mountinfo`, else `/sys/fs/cgroup/cpuset`. */
  v1Mount?: string;
  /** The cgroup v2 mount; default `/sys/fs/cgroup` if it is cgroup2, else `/sys/fs/cgroup/unified`. */
  v2Mount?: string;
}

/**
 * What `placeThreads` (cgroup.ts) is asked to do.
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

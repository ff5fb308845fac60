import { fstatSync, readFileSync, statSync } from 'node:fs';
import { threadGroups } from '../../privileged/builtins.js';
import type { InvocationScope, OperationBackend } from '../../privileged/invoke.js';
import { limitCovers } from '../../privileged/memlock.js';
import type { OperationArgs, OperationName, OperationResult } from '../../privileged/operations.js';
import {
  SIMULATED_PID_BASE,
  type SimulatedHost,
  type SimulatedProcess,
  type SimulatedThread,
} from '../../privileged/simulation.js';
import type { DomainDefinition, SchedulerPolicy } from '../../stable/definition/schema.js';

type Limit = bigint | 'unlimited';
type MutableThread = { -readonly [K in keyof SimulatedThread]: SimulatedThread[K] };

/** A simulated process as the driver keeps it. */
export interface SimProcess {
  readonly pid: number;
  readonly domain: { readonly uuid: string; readonly name: string; readonly id: number | null };
  memlock: { soft: Limit; hard: Limit };
  readonly threads: MutableThread[];
}

const MiB = 1024n * 1024n;
/** Descriptors the simulated built-ins "open": never real, so closing them is a harmless EBADF. */
const SIMULATED_FD_BASE = 2 ** 30;

function esrch(what: string): Error {
  return Object.assign(new Error(`no simulated ${what} (ESRCH)`), { code: 'ESRCH' });
}

/**
 * The test driver's simulated host: the processes of its starting and running domains with their
 * limits, scheduling and cgroups, what the simulated built-ins change, and what the post-checks read.
 */
export class Simulation implements SimulatedHost {
  readonly #processes = new Map<number, SimProcess>();
  readonly #threads = new Map<number, MutableThread>();
  readonly #logs = new Map<string, string[]>();
  readonly #fds = new Map<number, string>();
  #nextFd = SIMULATED_FD_BASE;
  #nextTap = 0;

  /** "Spawns" the QEMU of a domain with id `id`: the identity documented at SIMULATED_PID_BASE. */
  spawn(def: DomainDefinition, id: number): SimProcess {
    const pid = SIMULATED_PID_BASE + id * 1000;
    const t = (tid: number, role: SimulatedThread['role'], index: number): MutableThread => ({
      tid,
      role,
      index,
      policy: 'other',
      priority: 0,
      cgroup: '/',
    });
    const vcpus = def.vcpu.current ?? def.vcpu.count;
    const threads = [
      t(pid, 'emulator', 0),
      t(pid + 1, 'emulator', 0),
      ...Array.from({ length: vcpus }, (_, n) => t(pid + 10 + n, 'vcpu', n)),
      ...Array.from({ length: def.iothreads }, (_, k) => t(pid + 501 + k, 'iothread', k + 1)),
    ];
    const proc: SimProcess = {
      pid,
      domain: { uuid: def.uuid, name: def.name, id },
      memlock: { soft: 8n * MiB, hard: 8n * MiB },
      threads,
    };
    this.#processes.set(pid, proc);
    for (const thread of threads) this.#threads.set(thread.tid, thread);
    return proc;
  }

  /** A hot-plugged vCPU: QEMU's new thread, at the documented tid of vCPU `index` (pid+10+index). */
  addVcpu(pid: number, index: number): number {
    const proc = this.#processes.get(pid);
    if (!proc) throw esrch(`process ${pid}`);
    const thread: MutableThread = {
      tid: pid + 10 + index,
      role: 'vcpu',
      index,
      policy: 'other',
      priority: 0,
      cgroup: '/',
    };
    proc.threads.push(thread);
    this.#threads.set(thread.tid, thread);
    return thread.tid;
  }

  /** An unplugged vCPU: its thread ends. */
  removeVcpu(pid: number, index: number): void {
    const proc = this.#processes.get(pid);
    const at = proc?.threads.findIndex((t) => t.role === 'vcpu' && t.index === index) ?? -1;
    if (!proc || at < 0) return;
    const [thread] = proc.threads.splice(at, 1);
    if (thread) this.#threads.delete(thread.tid);
  }

  /** The driver's own record of a running process (not a copy). */
  running(pid: number): SimProcess {
    const proc = this.#processes.get(pid);
    if (!proc) throw esrch(`process ${pid}`);
    return proc;
  }

  /** The vCPU indexes of a running process, in order. */
  vcpuIndexes(pid: number): number[] {
    const proc = this.#processes.get(pid);
    return (proc?.threads ?? [])
      .filter((t) => t.role === 'vcpu')
      .map((t) => t.index)
      .sort((a, b) => a - b);
  }

  /** The process has exited: it and its threads disappear. */
  exit(pid: number): void {
    const proc = this.#processes.get(pid);
    if (!proc) return;
    this.#processes.delete(pid);
    for (const t of proc.threads) this.#threads.delete(t.tid);
  }

  appendLog(uuid: string, line: string): void {
    const lines = this.#logs.get(uuid) ?? [];
    lines.push(line);
    this.#logs.set(uuid, lines);
  }

  forgetLog(uuid: string): void {
    this.#logs.delete(uuid);
  }

  // ---- SimulatedHost ------------------------------------------------------------------------

  process(pid: number): SimulatedProcess | undefined {
    const proc = this.#processes.get(pid);
    return proc && structuredClone(proc);
  }

  setMemLock(pid: number, limit: { soft: Limit; hard: Limit }): void {
    const proc = this.#processes.get(pid);
    if (!proc) throw esrch(`process ${pid}`);
    proc.memlock = { soft: limit.soft, hard: limit.hard };
  }

  setScheduler(tid: number, policy: SchedulerPolicy, priority: number): void {
    const thread = this.#threads.get(tid);
    if (!thread) throw esrch(`thread ${tid}`);
    thread.policy = policy;
    thread.priority = priority;
  }

  placeThread(tid: number, cgroup: string): void {
    const thread = this.#threads.get(tid);
    if (!thread) throw esrch(`thread ${tid}`);
    if (!cgroup.startsWith('/')) throw new Error(`cgroup ${cgroup} must start with /`);
    thread.cgroup = cgroup;
  }

  log(uuid: string): readonly string[] {
    return [...(this.#logs.get(uuid) ?? [])];
  }

  // ---- the backend of invoke(): simulated built-ins and post-checks ---------------------------

  #fd(path: string): number {
    const fd = this.#nextFd++;
    this.#fds.set(fd, path);
    return fd;
  }

  readonly #builtins: {
    [Op in OperationName]: (args: OperationArgs<Op>, scope: InvocationScope) => OperationResult<Op>;
  } = {
    'process.setMaxMemLock': (a) => {
      this.setMemLock(a.pid, { soft: a.bytes, hard: a.bytes });
      return undefined;
    },
    'thread.setScheduler': (a) => {
      for (const t of a.threads) this.setScheduler(t.tid, t.policy, t.priority);
      return undefined;
    },
    'cgroup.placeThreads': (a, scope) => {
      const base = `/${scope.cgroupParent}/vk-${scope.domain.uuid}`;
      const placements = threadGroups(a).flatMap((g) =>
        g.tids.map((tid) => {
          this.placeThread(tid, `${base}/${g.name}`);
          return { tid, cgroup: `${base}/${g.name}` };
        }),
      );
      return { placements };
    },
    'cgroup.release': (a) => {
      // The process has exited by now; threads that still exist leave the domain's groups.
      for (const p of a.placements) {
        const thread = this.#threads.get(p.tid);
        if (thread) thread.cgroup = '/';
      }
      return undefined;
    },
    'net.openTap': (a) => {
      const ifname = a.ifname ?? `tap${this.#nextTap++}`;
      return { ifname, fds: Array.from({ length: a.queues }, () => this.#fd(`tap:${ifname}`)) };
    },
    'storage.openFile': (a) => ({ fd: this.#fd(a.path) }),
  };

  /** A descriptor is a simulated one the built-in made for `what`, or a real one of this process. */
  #checkFd(fd: number, what: string): 'simulated' | 'real' {
    const simulated = this.#fds.get(fd);
    if (simulated !== undefined) {
      if (simulated !== what) throw new Error(`fd ${fd} is ${simulated}, not ${what}`);
      return 'simulated';
    }
    try {
      fstatSync(fd);
    } catch {
      throw new Error(`fd ${fd} is not an open descriptor of this process`);
    }
    return 'real';
  }

  readonly #postchecks: {
    [Op in OperationName]: (args: OperationArgs<Op>, result: OperationResult<Op>) => void;
  } = {
    'process.setMaxMemLock': (a) => {
      const proc = this.#processes.get(a.pid);
      if (!proc) throw new Error(`simulated process ${a.pid} is gone`);
      const { soft, hard } = proc.memlock;
      if (!limitCovers(soft, a.bytes) || !limitCovers(hard, a.bytes))
        throw new Error(`simulated /proc/${a.pid}/limits shows ${soft}/${hard}, needed ${a.bytes}`);
    },
    'thread.setScheduler': (a) => {
      for (const t of a.threads) {
        const got = this.#threads.get(t.tid);
        if (got?.policy !== t.policy || got.priority !== t.priority) {
          throw new Error(
            `simulated thread ${t.tid} (${t.role} ${t.index}) runs ${got?.policy}/${got?.priority}, not ${t.policy}/${t.priority}`,
          );
        }
      }
    },
    'cgroup.placeThreads': (a, result) => {
      const placed = new Map(result.placements.map((p) => [p.tid, p.cgroup]));
      const mine = new Set(this.#processes.get(a.pid)?.threads.map((t) => t.tid));
      for (const t of a.threads) {
        const cgroup = placed.get(t.tid);
        if (!cgroup) throw new Error(`no placement for thread ${t.tid} (${t.role} ${t.index})`);
        if (!mine.has(t.tid)) throw new Error(`thread ${t.tid} is not a thread of pid ${a.pid}`);
        const actual = this.#threads.get(t.tid)?.cgroup;
        if (actual !== cgroup) throw new Error(`simulated thread ${t.tid} is in ${actual}, not ${cgroup}`);
      }
    },
    'cgroup.release': () => {},
    'net.openTap': (a, result) => {
      if (result.fds.length !== a.queues)
        throw new Error(`${result.fds.length} descriptors for ${a.queues} queues`);
      if (a.ifname && result.ifname !== a.ifname)
        throw new Error(`TAP ${result.ifname} is not the requested ${a.ifname}`);
      for (const fd of result.fds) this.#checkFd(fd, `tap:${result.ifname}`);
    },
    'storage.openFile': (a, result) => {
      if (this.#checkFd(result.fd, a.path) === 'simulated') return;
      // A real descriptor from a handler: it must be that file, when the file exists here.
      let want: ReturnType<typeof statSync>;
      try {
        want = statSync(a.path);
      } catch {
        return;
      }
      const got = fstatSync(result.fd);
      if (got.dev !== want.dev || got.ino !== want.ino)
        throw new Error(`fd ${result.fd} does not refer to ${a.path}`);
      const flags =
        /flags:\s+([0-7]+)/.exec(readFileSync(`/proc/self/fdinfo/${result.fd}`, 'utf8'))?.[1] ?? '0';
      const mode = (['r', 'w', 'rw'] as const)[Number.parseInt(flags, 8) & 3];
      if (mode !== (a.mode === 'r' ? 'r' : 'rw'))
        throw new Error(`fd ${result.fd} is open ${mode}, asked ${a.mode}`);
    },
  };

  readonly backend: OperationBackend = {
    builtin: (op, args, scope) => this.#builtins[op](args as never, scope) as never,
    postcheck: (op, args, result) => this.#postchecks[op](args as never, result as never),
  };
}

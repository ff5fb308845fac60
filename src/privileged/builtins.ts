import { constants, openSync } from 'node:fs';
import { ErrorCode, errnoOf, errorMessage, VirtError } from '../errors.js';
import { placeThreads, releaseCgroups, releaseGroups } from '../util/cgroup.js';
import { prlimitSet, RLIMIT, SyscallError, schedSet } from '../util/libc.js';
import { openTap } from '../util/tap.js';
import type { OperationArgs, OperationName, OperationResult, Phase } from './operations.js';
import type { BuiltinScope } from './scope.js';
import { verifyThreads } from './threads-verify.js';

type Builtin<Op extends OperationName> = (
  args: OperationArgs<Op>,
  scope: BuiltinScope,
  /** The phase of the invocation: `cgroup.release` gives back everything only after QEMU exited. */
  phase?: Phase,
) => OperationResult<Op> | Promise<OperationResult<Op>>;

/** A failed system call as the error a caller can act on: which privilege was missing, and the way out. */
function denied(op: OperationName, err: unknown, capability: string): VirtError {
  const errno = err instanceof SyscallError ? err.code : errnoOf(err);
  if (errno === 'EPERM' || errno === 'EACCES') {
    return new VirtError(
      ErrorCode.ACCESS_DENIED,
      `${op}: the driver lacks ${capability} (${errorMessage(err)}); run it with that privilege or register a handler for ${op} through virtkit/internal`,
      { operation: op, capability, errno },
      { cause: err },
    );
  }
  if (VirtError.is(err)) return err;
  return new VirtError(
    ErrorCode.SYSTEM_ERROR,
    `${op}: ${errorMessage(err)}`,
    { operation: op, errno },
    { cause: err },
  );
}

/**
 * The cgroups a `cgroup.placeThreads` request asks for: one per vCPU and per iothread, and one for
 * every other (emulator, housekeeping) thread, each with the cpuset the domain pins it to.
 */
export function threadGroups(
  args: OperationArgs<'cgroup.placeThreads'>,
  emulatorGroup = 'emulator',
): Array<{ name: string; cpus?: string; tids: number[] }> {
  const cpus = (role: string, index: number): string | undefined => {
    if (role === 'emulator') return args.cpusets.emulator;
    const list = role === 'vcpu' ? args.cpusets.vcpus : args.cpusets.iothreads;
    return list.find((c) => c.index === index)?.cpuset;
  };
  const groups = new Map<string, { name: string; cpus?: string; tids: number[] }>();
  for (const t of args.threads) {
    const name = t.role === 'emulator' ? emulatorGroup : `${t.role}${t.index}`;
    const group = groups.get(name) ?? { name, cpus: cpus(t.role, t.index), tids: [] };
    group.tids.push(t.tid);
    groups.set(name, group);
  }
  return [...groups.values()];
}

/**
 * The groups of the domain directory `name` that `placements` name (`…/<name>/<group>`, as /proc
 * shows them): a placement elsewhere is refused, so a release never reaches another domain's groups.
 */
function placedGroups(placements: OperationArgs<'cgroup.release'>['placements'], name: string): string[] {
  const groups = new Set<string>();
  for (const p of placements) {
    const parts = p.cgroup.split('/');
    if (parts.length < 3 || parts.at(-2) !== name) {
      throw new VirtError(
        ErrorCode.OPERATION_INVALID,
        `cgroup.release: the placement of thread ${p.tid} (${p.cgroup}) is not a group of ${name}`,
        { operation: 'cgroup.release', cgroup: p.cgroup },
      );
    }
    groups.add(parts.at(-1) as string);
  }
  return [...groups];
}

/**
 * Before a built-in touches a thread with the driver's privilege: the target is the domain's own
 * QEMU (the pid the driver launched, same start time) and every tid is one of its threads.
 */
function checkTargets(
  op: OperationName,
  scope: BuiltinScope,
  pid: number,
  threads: ReadonlyArray<{ tid: number; role: string; index: number }>,
): void {
  if (scope.pid !== undefined && pid !== scope.pid) {
    throw new VirtError(
      ErrorCode.OPERATION_FAILED,
      `${op}: pid ${pid} is not the domain's QEMU pid ${scope.pid}`,
      {
        operation: op,
        pid,
      },
    );
  }
  verifyThreads({ pid, startTime: scope.pid === pid ? scope.startTime : undefined }, threads);
}

/** Name of the driver's own cgroup of a domain: unique per domain, stable across restarts. */
export function domainCgroupName(uuid: string): string {
  return `vk-${uuid}`;
}

/** What the driver does itself when no handler is registered, as libvirt does. */
export const builtins: { [Op in OperationName]: Builtin<Op> } = {
  'process.setMaxMemLock': (args) => {
    try {
      prlimitSet(args.pid, RLIMIT.MEMLOCK, { soft: args.bytes, hard: args.bytes });
    } catch (err) {
      throw denied('process.setMaxMemLock', err, 'CAP_SYS_RESOURCE');
    }
    return undefined;
  },
  'thread.setScheduler': (args, scope) => {
    checkTargets('thread.setScheduler', scope, args.pid, args.threads);
    for (const t of args.threads) {
      try {
        schedSet(t.tid, t.policy, t.priority);
      } catch (err) {
        throw denied('thread.setScheduler', err, 'CAP_SYS_NICE');
      }
    }
    return undefined;
  },
  'cgroup.placeThreads': (args, scope) => {
    checkTargets('cgroup.placeThreads', scope, args.pid, args.threads);
    const groups = threadGroups(args);
    try {
      const { placements } = placeThreads({
        parent: scope.cgroupParent,
        name: domainCgroupName(scope.domain.uuid),
        pid: args.pid,
        groups,
      });
      return { placements };
    } catch (err) {
      throw denied('cgroup.placeThreads', err, 'CAP_SYS_ADMIN (write access to the cgroup hierarchy)');
    }
  },
  'cgroup.release': (args, scope, phase) => {
    const name = domainCgroupName(scope.domain.uuid);
    try {
      if (phase === 'hotplug') {
        releaseGroups({ parent: scope.cgroupParent, name, groups: placedGroups(args.placements, name) });
      } else {
        releaseCgroups({ parent: scope.cgroupParent, name });
      }
    } catch (err) {
      throw denied('cgroup.release', err, 'CAP_SYS_ADMIN (write access to the cgroup hierarchy)');
    }
    return undefined;
  },
  'net.openTap': (args) => {
    try {
      // A managed TAP is created exclusively: attaching to an existing device of that name could
      // hand this domain another domain's TAP (libvirt: "Disallow pre-existing TAP devices").
      return openTap(args.ifname, { queues: args.queues, vnetHdr: args.vnetHdr, exclusive: args.managed });
    } catch (err) {
      const errno = VirtError.is(err) ? err.details['errno'] : undefined;
      if (args.managed && args.ifname && errno === 'EBUSY') {
        throw new VirtError(
          ErrorCode.OPERATION_FAILED,
          `net.openTap: the interface ${args.ifname} already exists; virtkit creates managed TAP devices itself and never reuses one. Remove it, choose another target dev, or declare the interface managed='no' to use the existing TAP`,
          { operation: 'net.openTap', ifname: args.ifname, errno },
          { cause: err },
        );
      }
      throw denied('net.openTap', err, 'CAP_NET_ADMIN');
    }
  },
  'storage.openFile': (args) => {
    try {
      return { fd: openSync(args.path, args.mode === 'r' ? constants.O_RDONLY : constants.O_RDWR) };
    } catch (err) {
      throw denied(
        'storage.openFile',
        err,
        `read${args.mode === 'rw' ? '-write' : ''} access to ${args.path}`,
      );
    }
  },
};

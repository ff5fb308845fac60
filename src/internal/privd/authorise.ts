import { existsSync, readFileSync } from 'node:fs';
import { ErrorCode, VirtError } from '../../errors.js';
import type { OperationArgs, OperationName } from '../../privileged/operations.js';
import { STUB_ARGV0, STUB_SCRIPT } from '../../privileged/stub.js';
import { domainCgroupThreads } from '../../util/cgroup.js';
import {
  readParentPid,
  readProcExe,
  readProcParentAndStart,
  readProcStartTime,
  readThreadCgroups,
} from '../../util/proc.js';
import type { PeerCredentials } from '../../util/unix-socket.js';
import { denied } from './denied.js';
import type { Policy } from './policy.js';
import type { WireContext } from './protocol.js';

/**
 * A peer as the helper knows it: SO_PEERCRED's credentials, fixed when the socket connected, and
 * the start time of that pid read at the same moment, so a later reuse of the pid is detectable.
 */
export interface Peer extends PeerCredentials {
  /** As decimal digits: the peer appears in JSON audit lines. */
  readonly startTime: string | undefined;
}

/** What a request concerns, for the audit line. */
export interface AuditTarget {
  pid?: number;
  exe?: string;
  tids?: number[];
  bytes?: string;
  path?: string;
  ifname?: string;
  cgroup?: string;
}

/** `IFF_TAP` in tun_flags. */
const IFF_TAP = 0x0002;

/** One sysfs attribute, trimmed; undefined when it does not exist (or the device went away). */
function readSysfs(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return undefined;
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Real, effective, saved and fs ids of one `/proc/<pid>/status` line (`Uid:` or `Gid:`). */
function statusIds(pid: number, field: 'Uid' | 'Gid'): number[] | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const m = new RegExp(`^${field}:\\s+(\\d+)\\s+(\\d+)\\s+(\\d+)\\s+(\\d+)`, 'm').exec(text);
  return m ? m.slice(1, 5).map(Number) : undefined;
}

/**
 * The uid and gid that own a process, when all of its real, effective and saved ids agree (a
 * process in the middle of a setuid dance owns nothing for this purpose).
 */
export function processOwner(pid: number): { uid: number; gid: number } | undefined {
  const uids = statusIds(pid, 'Uid');
  const gids = statusIds(pid, 'Gid');
  if (!uids || !gids) return undefined;
  const [u, g] = [uids[0] as number, gids[0] as number];
  if (uids.slice(0, 3).some((x) => x !== u) || gids.slice(0, 3).some((x) => x !== g)) return undefined;
  return { uid: u, gid: g };
}

/** True when `ancestor` is up the parent chain from `parent` (the target's parent, already read). */
function isDescendant(parent: number, ancestor: number): boolean {
  let p: number | undefined = parent;
  // pid_max is 2^22, but chains are short; the bound only stops a loop on a racing reparent.
  for (let depth = 0; depth < 128 && p !== undefined && p > 1; depth++) {
    if (p === ancestor) return true;
    p = readParentPid(p);
  }
  return p === ancestor;
}

/** The cgroup that places a process for `cgroupSubtree`: the v2 unified entry, else v1 `name=systemd`. */
function trackingCgroup(pid: number): string | undefined {
  const entries = readThreadCgroups(pid, pid);
  return (
    entries.find((e) => e.hierarchyId === 0 && e.controllers.length === 0)?.path ??
    entries.find((e) => e.controllers.includes('name=systemd'))?.path
  );
}

function inside(path: string, root: string): boolean {
  return root === '/' || path === root || path.startsWith(`${root}/`);
}

function qualifies(
  policy: Policy,
  peer: Peer,
  pid: number,
  ppid: number,
  q: Policy['qualify'][number],
): boolean {
  switch (q) {
    case 'sameUid':
      return processOwner(pid)?.uid === peer.uid;
    case 'descendant':
      // The peer may have handed its socket on and exited: a reused pid is not its ancestor.
      return (
        peer.startTime !== undefined &&
        readProcStartTime(peer.pid)?.toString() === peer.startTime &&
        isDescendant(ppid, peer.pid)
      );
    case 'cgroupSubtree': {
      const cg = trackingCgroup(pid);
      return cg !== undefined && policy.cgroupSubtree !== undefined && inside(cg, policy.cgroupSubtree);
    }
  }
}

/**
 * True when `pid` is the driver's pre-exec stub for an allowed emulator. Only a shell running
 * exactly the driver's stub script can do nothing but exec its argument, so only then is raising
 * its limits the same as raising the emulator's.
 */
function isStubOfEmulator(policy: Policy, pid: number, exe: string): boolean {
  if (!policy.stubs.has(exe)) return false;
  let argv: string[];
  try {
    argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  } catch {
    return false;
  }
  return (
    argv[1] === '-c' &&
    argv[2] === STUB_SCRIPT &&
    argv[3] === STUB_ARGV0 &&
    argv[4] !== undefined &&
    policy.emulators.has(argv[4])
  );
}

/**
 * The target process rules: the process exists, qualifies by one of `targets.qualify`, and runs an
 * allowed emulator — or, for `process.setMaxMemLock` in `pre-exec` and `migration-in` only, is the
 * driver's stub about to exec one (the limit must be raised before QEMU runs, so the process is still a shell).
 * Returns the target's start time, read before its executable: the process that was checked.
 */
function checkTarget(
  policy: Policy,
  peer: Peer,
  pid: number,
  op: OperationName,
  phase: string,
  target: AuditTarget,
): bigint {
  target.pid = pid;
  // One read says that the process exists, whose child it is and which process the pid is.
  const stat = readProcParentAndStart(pid);
  const exe = stat && readProcExe(pid);
  if (stat === undefined || exe === undefined) {
    throw new VirtError(ErrorCode.OPERATION_FAILED, `${op}: process ${pid} does not exist`, {
      pid,
      errno: 'ESRCH',
    });
  }
  target.exe = exe;
  if (!policy.qualify.some((q) => qualifies(policy, peer, pid, stat.ppid, q))) {
    const rule = policy.qualify.length === 1 ? `targets.${policy.qualify[0]}` : 'targets.qualify';
    throw denied(
      rule,
      `process ${pid} is not the peer's (peer pid ${peer.pid} uid ${peer.uid}; qualifying by ${policy.qualify.join(' or ')})`,
      { pid, qualify: [...policy.qualify] },
    );
  }
  // The incoming QEMU of a migration is a stub too until its limit is raised (phase migration-in).
  const stubAllowed = op === 'process.setMaxMemLock' && (phase === 'pre-exec' || phase === 'migration-in');
  if (!policy.emulators.has(exe) && !(stubAllowed && isStubOfEmulator(policy, pid, exe))) {
    throw denied('targets.emulators', `process ${pid} runs ${exe}, which is not an allowed emulator`, {
      pid,
      exe,
      emulators: [...policy.emulators],
    });
  }
  return stat.startTime;
}

function checkTids(pid: number, tids: readonly number[], target: AuditTarget): void {
  target.tids = [...tids];
  for (const tid of tids) {
    // /proc/<pid>/task/<tid> exists exactly when tid is a thread of pid.
    if (!existsSync(`/proc/${pid}/task/${tid}`)) {
      throw denied('tid-of-pid', `thread ${tid} is not a thread of process ${pid}`, { pid, tid });
    }
  }
}

function domainCgroup(policy: Policy, uuid: string, target: AuditTarget): string {
  const parent = policy.cgroup?.parent;
  if (parent === undefined) throw denied('cgroup', 'the policy has no cgroup section');
  if (!UUID.test(uuid)) {
    // The uuid names the directory: anything else could name a cgroup outside the parent.
    throw denied('cgroup.parent', `domain uuid ${JSON.stringify(uuid)} is not a uuid`, { uuid });
  }
  target.cgroup = `/${parent}/vk-${uuid.toLowerCase()}`;
  return target.cgroup;
}

/**
 * Checks one request against the policy (everything but the storage path, which is checked as it
 * is opened, so that what is checked is what is opened).
 *
 * @param policy - the policy
 * @param peer - the peer's credentials (SO_PEERCRED)
 * @param op - the operation
 * @param ctx - the request context
 * @param args - the validated arguments
 * @param target - filled in with what the request concerns, for the audit line
 * @returns the start time of the target process, for operations that have one: what executes
 *   the request checks that the pid is still that process
 * @throws {@link VirtError} `ACCESS_DENIED` with `details.rule`, or `OPERATION_FAILED` for a target
 *   that does not exist
 */
export function authorise(
  policy: Policy,
  peer: Peer,
  op: OperationName,
  ctx: WireContext,
  args: OperationArgs<OperationName>,
  target: AuditTarget,
): bigint | undefined {
  if (!policy.peerUids.has(peer.uid)) {
    throw denied('peer.uid', `uid ${peer.uid} may not use this helper`, { uid: peer.uid });
  }
  switch (op) {
    case 'process.setMaxMemLock': {
      const a = args as OperationArgs<'process.setMaxMemLock'>;
      target.bytes = String(a.bytes);
      if (!policy.memlock) throw denied('memlock', 'the policy has no memlock section');
      const startTime = checkTarget(policy, peer, a.pid, op, ctx.phase, target);
      const max = policy.memlock.maxBytes;
      if (max !== 'unlimited' && (a.bytes === 'unlimited' || a.bytes > max)) {
        throw denied('memlock.maxBytes', `${a.bytes} bytes asked, at most ${max} allowed`, {
          bytes: String(a.bytes),
          maxBytes: String(max),
        });
      }
      return startTime;
    }
    case 'thread.setScheduler': {
      const a = args as OperationArgs<'thread.setScheduler'>;
      const sched = policy.scheduler;
      if (!sched) throw denied('scheduler', 'the policy has no scheduler section');
      const startTime = checkTarget(policy, peer, a.pid, op, ctx.phase, target);
      checkTids(
        a.pid,
        a.threads.map((t) => t.tid),
        target,
      );
      for (const t of a.threads) {
        if (!sched.policies.has(t.policy)) {
          throw denied('scheduler.policies', `policy ${t.policy} for thread ${t.tid} is not allowed`, {
            tid: t.tid,
            policy: t.policy,
          });
        }
        const realtime = t.policy === 'fifo' || t.policy === 'rr';
        if (realtime && (t.priority < sched.priority.min || t.priority > sched.priority.max)) {
          throw denied(
            'scheduler.priority',
            `priority ${t.priority} for thread ${t.tid} is outside ${sched.priority.min}..${sched.priority.max}`,
            { tid: t.tid, priority: t.priority, range: sched.priority },
          );
        }
      }
      return startTime;
    }
    case 'cgroup.placeThreads': {
      const a = args as OperationArgs<'cgroup.placeThreads'>;
      domainCgroup(policy, ctx.domain.uuid, target);
      const startTime = checkTarget(policy, peer, a.pid, op, ctx.phase, target);
      checkTids(
        a.pid,
        a.threads.map((t) => t.tid),
        target,
      );
      // The peer names the domain (and so the cgroup) itself: never let it place threads into, or
      // re-set the cpus of, groups that hold another process — another tenant's running VM.
      const foreign = domainCgroupThreads({
        parent: policy.cgroup?.parent ?? '',
        name: `vk-${ctx.domain.uuid.toLowerCase()}`,
      }).filter((tid) => !existsSync(`/proc/${a.pid}/task/${tid}`));
      if (foreign.length > 0) {
        throw denied(
          'cgroup.owner',
          `the cgroups of domain ${ctx.domain.uuid} hold threads of another process`,
          {
            tids: foreign.slice(0, 10),
          },
        );
      }
      return startTime;
    }
    case 'cgroup.release': {
      // After an exit (release, reconnect) there is no process to check: the helper removes only
      // its own vk-<uuid> directory, and util/cgroup refuses one that still holds any task. In
      // hotplug (vCPUs taken away) QEMU runs and must be the peer's, and only the groups of the
      // placements go, each refused while it holds a task.
      const a = args as OperationArgs<'cgroup.release'>;
      const dir = domainCgroup(policy, ctx.domain.uuid, target);
      const startTime =
        ctx.phase === 'hotplug' ? checkTarget(policy, peer, a.pid, op, ctx.phase, target) : undefined;
      for (const p of a.placements) {
        if (!p.cgroup.startsWith(`${dir}/`)) {
          throw denied('cgroup.parent', `cgroup ${p.cgroup} is outside ${dir}`, {
            cgroup: p.cgroup,
            parent: dir,
          });
        }
      }
      return startTime;
    }
    case 'net.openTap': {
      const a = args as OperationArgs<'net.openTap'>;
      if (!policy.tap) throw denied('tap', 'the policy has no tap section');
      target.ifname = a.ifname ?? `${policy.tap.prefix}%d`;
      if (!target.ifname.startsWith(policy.tap.prefix)) {
        throw denied('tap.prefix', `TAP name ${a.ifname} does not start with ${policy.tap.prefix}`, {
          ifname: a.ifname,
          prefix: policy.tap.prefix,
        });
      }
      // An existing TAP (managed='no', pre-created) is the peer's only if created for its uid
      // (`ip tuntap add … user <uid>`); otherwise it may be another tenant's, traffic and all.
      if (a.ifname !== undefined && existsSync(`/sys/class/net/${a.ifname}`)) {
        // Only TUN/TAP devices have tun_flags; the name may belong to a bridge, a veth, a NIC.
        const flags = readSysfs(`/sys/class/net/${a.ifname}/tun_flags`);
        if (flags === undefined || (Number.parseInt(flags, 16) & IFF_TAP) === 0) {
          throw denied('tap.type', `interface ${a.ifname} exists and is not a TAP device`, {
            ifname: a.ifname,
          });
        }
        if (a.managed) {
          // As the built-in: a managed TAP is never one that already exists (libvirt: "Disallow
          // pre-existing TAP devices"); managed='no' is how to use an existing one.
          throw new VirtError(
            ErrorCode.OPERATION_FAILED,
            `net.openTap: the interface ${a.ifname} already exists; managed TAP devices are created, never reused. Remove it, choose another target dev, or declare the interface managed='no'`,
            { operation: 'net.openTap', ifname: a.ifname, errno: 'EBUSY' },
          );
        }
        const owner = Number(readSysfs(`/sys/class/net/${a.ifname}/owner`) ?? Number.NaN);
        if (owner !== peer.uid) {
          throw denied(
            'tap.owner',
            `TAP ${a.ifname} exists and does not belong to uid ${peer.uid} (owner ${owner})`,
            {
              ifname: a.ifname,
              owner,
            },
          );
        }
      }
      return;
    }
    case 'storage.openFile': {
      const a = args as OperationArgs<'storage.openFile'>;
      target.path = a.path;
      if (!policy.storage) throw denied('storage', 'the policy has no storage section');
      if (a.mode === 'rw' && !policy.storage.allowWrite) {
        throw denied('storage.allowWrite', `${a.path} may only be opened read-only`, { path: a.path });
      }
      return;
    }
  }
}

import { existsSync, readFileSync } from 'node:fs';
import { ErrorCode, errorMessage, VirtError } from '../../errors.js';
import { builtins } from '../../privileged/builtins.js';
import type { OperationArgs, OperationName, OperationResult } from '../../privileged/operations.js';
import type { BuiltinScope } from '../../privileged/scope.js';
import { openTap } from '../../util/tap.js';
import { processOwner } from './authorise.js';
import type { OwnerWorkers } from './owner-workers.js';
import type { Policy } from './policy.js';
import type { WireContext } from './protocol.js';
import { openBeneath } from './storage.js';
import type { HelperTaps } from './taps.js';

const CAP_SYS_RESOURCE = 24n;

let capSysResource: boolean | undefined;

/** Whether this process may raise hard limits and change other users' limits. */
function hasCapSysResource(): boolean {
  if (capSysResource === undefined) {
    const hex = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? '0';
    capSysResource = ((BigInt(`0x${hex}`) >> CAP_SYS_RESOURCE) & 1n) === 1n;
  }
  return capSysResource;
}

/** What executing needs besides the policy: the helper's long-lived parts. */
export interface ExecuteServices {
  /** Sets memlock limits as the target's owner when the helper lacks CAP_SYS_RESOURCE. */
  readonly workers: OwnerWorkers;
  /** Remembers the TAPs created, to take them back from a peer. */
  readonly taps: HelperTaps;
  /** The peer's uid, for the TAP record. */
  readonly peerUid: number;
  /**
   * The start time of the target process as authorised: the built-ins verify thread ids against
   * this very process, so a pid replaced after the check is refused, not acted on.
   */
  readonly targetStartTime?: bigint;
}

/**
 * Sets a process's RLIMIT_MEMLOCK as its own user. Linux lets a process change another's limits
 * only with CAP_SYS_RESOURCE or as that process's own uid/gid; containers often drop the
 * capability even for root. As the owner, the soft limit can still be set up to the current hard
 * one and the hard one lowered, which is all a target whose hard limit already covers the need
 * requires. A bounded pool of per-owner worker processes does it (see owner-workers.ts for why).
 */
async function setMemlockAsOwner(
  workers: OwnerWorkers,
  pid: number,
  bytes: bigint | 'unlimited',
  deadline: number,
): Promise<void> {
  const owner = processOwner(pid);
  const fail = (why: string) =>
    new VirtError(
      ErrorCode.ACCESS_DENIED,
      `process.setMaxMemLock: virtkit-privd lacks CAP_SYS_RESOURCE and ${why}; grant the helper CAP_SYS_RESOURCE`,
      { operation: 'process.setMaxMemLock', capability: 'CAP_SYS_RESOURCE', pid },
    );
  if (!owner) throw fail(`process ${pid} has no single owner`);
  try {
    await workers.setMemlock(owner, pid, bytes, deadline);
  } catch (err) {
    if (VirtError.is(err) && err.code === ErrorCode.OPERATION_TIMEOUT) throw err;
    throw fail(
      `setting the limit as uid ${owner.uid} failed (${errorMessage(err)}); its hard limit may be below ${String(bytes)}`,
    );
  }
}

/**
 * Performs an authorised request with the driver's own built-in code (storage excepted: it opens
 * beneath the policy's prefixes instead of following the path anywhere).
 *
 * @param policy - the policy (cgroup parent, TAP prefix, storage prefixes)
 * @param op - the operation
 * @param ctx - the request context
 * @param args - the validated arguments
 * @returns the operation's result, descriptors as numbers of this process: at once when the
 *   operation is synchronous (all built-ins are), so that the answer can go out in the same turn
 *   of the event loop; a promise only for what waits (a memlock worker)
 */
export function execute(
  policy: Policy,
  op: OperationName,
  ctx: WireContext,
  args: OperationArgs<OperationName>,
  services: ExecuteServices,
): OperationResult<OperationName> | Promise<OperationResult<OperationName>> {
  const scope: BuiltinScope = {
    domain: { ...ctx.domain, uuid: ctx.domain.uuid.toLowerCase() },
    pid: ctx.pid ?? undefined,
    startTime: services.targetStartTime,
    cgroupParent: policy.cgroup?.parent ?? '',
  };
  switch (op) {
    case 'process.setMaxMemLock': {
      const a = args as OperationArgs<'process.setMaxMemLock'>;
      try {
        return builtins[op](a, scope);
      } catch (err) {
        if (!(VirtError.is(err) && err.details['errno'] === 'EPERM') || hasCapSysResource()) throw err;
      }
      return setMemlockAsOwner(services.workers, a.pid, a.bytes, ctx.deadline).then(() => undefined);
    }
    case 'net.openTap': {
      const a = args as OperationArgs<'net.openTap'>;
      const ifname = a.ifname ?? `${policy.tap?.prefix}%d`;
      // With CAP_NET_ADMIN, TUNSETIFF would attach to any existing TAP: an existing one was checked
      // for its owner (tap.owner); a new one is created exclusively, so none can appear in between.
      const existing = a.ifname !== undefined && existsSync(`/sys/class/net/${a.ifname}`);
      // managed='no' (managed false): the TAP must already exist (its owner was checked); otherwise
      // it is created exclusively, never attached to a leftover of that name.
      if (!a.managed && !existing) {
        throw new VirtError(
          ErrorCode.OPERATION_FAILED,
          `net.openTap: TAP ${ifname} is declared managed='no' but does not exist; create it first (ip tuntap add dev ${ifname} mode tap user <uid>)`,
          { operation: 'net.openTap', ifname },
        );
      }
      const tap = openTap(ifname, {
        queues: a.queues,
        vnetHdr: a.vnetHdr,
        exclusive: a.managed || !existing,
      });
      if (!existing) services.taps.record(tap.ifname, services.peerUid, ctx.domain.uuid);
      return tap;
    }
    case 'storage.openFile': {
      const a = args as OperationArgs<'storage.openFile'>;
      return { fd: openBeneath(policy.storage?.prefixes ?? [], a.path, a.mode) };
    }
    case 'cgroup.release': {
      // Only after QEMU exited are its TAPs released too; in hotplug, vCPU groups go and nothing else.
      if (ctx.phase === 'hotplug')
        return builtins[op](args as OperationArgs<'cgroup.release'>, scope, ctx.phase);
      const releaseTaps = () => services.taps.release(services.peerUid, ctx.domain.uuid);
      let released: OperationResult<'cgroup.release'> | Promise<OperationResult<'cgroup.release'>>;
      try {
        released = builtins[op](args as OperationArgs<'cgroup.release'>, scope, ctx.phase);
      } catch (err) {
        releaseTaps();
        throw err;
      }
      if (released instanceof Promise) return released.finally(releaseTaps);
      releaseTaps();
      return released;
    }
    default:
      return builtins[op](args as never, scope);
  }
}

import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { builtins } from '../../drivers/qemu/privileged/builtins.js';
import type { InvocationScope } from '../../drivers/qemu/privileged/invoke.js';
import { ErrorCode, VirtError } from '../../stable/errors.js';
import { openTap } from '../../util/tap.js';
import { HandlerTable } from '../handler-table.js';
import type { OperationArgs, OperationName, OperationResult } from '../operations.js';
import { processOwner } from './authorise.js';
import type { Policy } from './policy.js';
import type { WireContext } from './protocol.js';
import { openBeneath } from './storage.js';

const CAP_SYS_RESOURCE = 24n;
const PRLIMIT_BINARIES = ['/usr/bin/prlimit', '/bin/prlimit'];

let capSysResource: boolean | undefined;

/** Whether this process may raise hard limits and change other users' limits. */
function hasCapSysResource(): boolean {
  if (capSysResource === undefined) {
    const hex = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? '0';
    capSysResource = ((BigInt(`0x${hex}`) >> CAP_SYS_RESOURCE) & 1n) === 1n;
  }
  return capSysResource;
}

/**
 * Sets a process's RLIMIT_MEMLOCK as its own user. Linux lets a process change another's limits
 * only with CAP_SYS_RESOURCE or as that process's own uid/gid; containers often drop the
 * capability even for root. As the owner, prlimit(1) can still set the soft limit up to the
 * current hard one and lower the hard one, which is all a target whose hard limit already
 * covers the need requires. It runs in a short-lived child so the helper itself never changes
 * credentials.
 */
function prlimitAsOwner(pid: number, bytes: bigint | 'unlimited', deadline: number): Promise<void> {
  const owner = processOwner(pid);
  const binary = PRLIMIT_BINARIES.find((p) => existsSync(p));
  const fail = (why: string) =>
    new VirtError(
      ErrorCode.ACCESS_DENIED,
      `process.setMaxMemLock: virtkit-privd lacks CAP_SYS_RESOURCE and ${why}; grant the helper CAP_SYS_RESOURCE`,
      { operation: 'process.setMaxMemLock', capability: 'CAP_SYS_RESOURCE', pid },
    );
  if (!owner) return Promise.reject(fail(`process ${pid} has no single owner`));
  if (!binary) return Promise.reject(fail('prlimit(1) (util-linux) is not installed to act as the owner'));
  const value = bytes === 'unlimited' ? 'unlimited' : bytes.toString();
  return new Promise((resolve, reject) => {
    execFile(
      binary,
      ['--pid', String(pid), `--memlock=${value}:${value}`],
      { uid: owner.uid, gid: owner.gid, env: {}, timeout: Math.max(1, deadline - Date.now()) },
      (err, _stdout, stderr) => {
        if (!err) resolve();
        else
          reject(
            fail(
              `setting the limit as uid ${owner.uid} failed (${String(stderr).trim() || err.message}); its hard limit may be below ${value}`,
            ),
          );
      },
    );
  });
}

/**
 * Performs an authorised request with the driver's own built-in code (storage excepted: it opens
 * beneath the policy's prefixes instead of following the path anywhere).
 *
 * @param policy - the policy (cgroup parent, TAP prefix, storage prefixes)
 * @param op - the operation
 * @param ctx - the request context
 * @param args - the validated arguments
 * @returns the operation's result, descriptors as numbers of this process
 */
export async function execute(
  policy: Policy,
  op: OperationName,
  ctx: WireContext,
  args: OperationArgs<OperationName>,
): Promise<OperationResult<OperationName>> {
  const scope: InvocationScope = {
    handlers: new HandlerTable(),
    domain: { ...ctx.domain, uuid: ctx.domain.uuid.toLowerCase() },
    pid: ctx.pid ?? undefined,
    taints: [],
    cgroupParent: policy.cgroup?.parent ?? '',
    log: () => {},
  };
  switch (op) {
    case 'process.setMaxMemLock': {
      const a = args as OperationArgs<'process.setMaxMemLock'>;
      try {
        return builtins[op](a, scope);
      } catch (err) {
        if (!(VirtError.is(err) && err.details['errno'] === 'EPERM') || hasCapSysResource()) throw err;
      }
      await prlimitAsOwner(a.pid, a.bytes, ctx.deadline);
      return undefined;
    }
    case 'net.openTap': {
      const a = args as OperationArgs<'net.openTap'>;
      const ifname = a.ifname ?? `${policy.tap?.prefix}%d`;
      // With CAP_NET_ADMIN, TUNSETIFF would attach to any existing TAP: an existing one was checked
      // for its owner (tap.owner); a new one is created exclusively, so none can appear in between.
      const existing = a.ifname !== undefined && existsSync(`/sys/class/net/${a.ifname}`);
      return openTap(ifname, { queues: a.queues, vnetHdr: a.vnetHdr, exclusive: !existing });
    }
    case 'storage.openFile': {
      const a = args as OperationArgs<'storage.openFile'>;
      return { fd: openBeneath(policy.storage?.prefixes ?? [], a.path, a.mode) };
    }
    default:
      return builtins[op](args as never, scope);
  }
}

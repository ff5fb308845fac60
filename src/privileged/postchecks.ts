import { fstatSync, readFileSync, statSync } from 'node:fs';
import { schedGet } from '../util/libc.js';
import { listThreads, readProcLimits, readThreadCgroups } from '../util/proc.js';
import { isTapFd } from '../util/tap.js';
import { limitCovers } from './memlock.js';
import type { OperationArgs, OperationName, OperationResult } from './operations.js';
import type { BuiltinScope } from './scope.js';
import { isThreadOf, verifyOwner } from './threads-verify.js';

type Postcheck<Op extends OperationName> = (
  args: OperationArgs<Op>,
  result: OperationResult<Op>,
  scope?: Pick<BuiltinScope, 'pid' | 'startTime'>,
) => void;

/**
 * A pid that is no longer the QEMU process the driver launched (it died while the handler ran and
 * the number was reused) makes every per-thread reading meaningless: checked before and after them.
 */
function sameOwner(pid: number, scope: Pick<BuiltinScope, 'pid' | 'startTime'> | undefined): void {
  if (scope?.pid !== pid || scope.startTime === undefined) return;
  try {
    verifyOwner({ pid, startTime: scope.startTime });
  } catch (err) {
    throw new Error(`pid ${pid} is not the process the handler was asked about: ${(err as Error).message}`);
  }
}

/** The access mode of one of our descriptors, from /proc/self/fdinfo (O_ACCMODE bits of `flags`). */
function accessMode(fd: number): 'r' | 'w' | 'rw' {
  const flags = /flags:\s+([0-7]+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))?.[1] ?? '0';
  return (['r', 'w', 'rw'] as const)[Number.parseInt(flags, 8) & 3] ?? 'r';
}

/**
 * The check after each operation: the effect read back from the kernel, never the handler's word.
 * Each throws an Error saying what it found instead.
 */
export const postchecks: { [Op in OperationName]: Postcheck<Op> } = {
  'process.setMaxMemLock': (args) => {
    const limit = readProcLimits(args.pid).get('Max locked memory');
    if (!limit) throw new Error(`/proc/${args.pid}/limits has no locked-memory line (is the process gone?)`);
    if (!limitCovers(limit.soft, args.bytes) || !limitCovers(limit.hard, args.bytes)) {
      throw new Error(`/proc/${args.pid}/limits shows ${limit.soft}/${limit.hard}, needed ${args.bytes}`);
    }
  },
  'thread.setScheduler': (args, _result, scope) => {
    sameOwner(args.pid, scope);
    for (const t of args.threads) {
      // A tid that is not (or no longer) QEMU's says nothing about QEMU's scheduling.
      if (!isThreadOf(args.pid, t.tid)) throw new Error(`thread ${t.tid} is not a thread of pid ${args.pid}`);
      const got = schedGet(t.tid);
      if (got.policy !== t.policy || got.priority !== t.priority) {
        throw new Error(
          `thread ${t.tid} (${t.role} ${t.index}) runs ${got.policy}/${got.priority}, not ${t.policy}/${t.priority}`,
        );
      }
    }
    sameOwner(args.pid, scope);
  },
  'cgroup.placeThreads': (args, result, scope) => {
    sameOwner(args.pid, scope);
    const tids = new Set(listThreads(args.pid));
    const placed = new Map(result.placements.map((p) => [p.tid, p.cgroup]));
    for (const t of args.threads) {
      const cgroup = placed.get(t.tid);
      if (!cgroup) throw new Error(`no placement for thread ${t.tid} (${t.role} ${t.index})`);
      if (!tids.has(t.tid)) throw new Error(`thread ${t.tid} is not a thread of pid ${args.pid}`);
      const paths = readThreadCgroups(args.pid, t.tid).map((c) => c.path);
      if (!paths.includes(cgroup))
        throw new Error(`thread ${t.tid} is in ${paths.join(', ')}, not ${cgroup}`);
    }
    sameOwner(args.pid, scope);
  },
  'cgroup.release': () => {},
  'net.openTap': (args, result) => {
    if (result.fds.length !== args.queues)
      throw new Error(`${result.fds.length} descriptors for ${args.queues} queues`);
    if (args.ifname && result.ifname !== args.ifname)
      throw new Error(`TAP ${result.ifname} is not the requested ${args.ifname}`);
    for (const fd of result.fds)
      if (!isTapFd(fd, result.ifname))
        throw new Error(`fd ${fd} is not a TAP descriptor of ${result.ifname}`);
  },
  'storage.openFile': (args, result) => {
    const got = fstatSync(result.fd);
    const want = statSync(args.path);
    if (got.dev !== want.dev || got.ino !== want.ino)
      throw new Error(`fd ${result.fd} does not refer to ${args.path}`);
    const mode = accessMode(result.fd);
    if (mode !== (args.mode === 'r' ? 'r' : 'rw'))
      throw new Error(`fd ${result.fd} is open ${mode}, asked ${args.mode}`);
  },
};

import { existsSync } from 'node:fs';
import { ErrorCode, errorMessage, VirtError } from '../../../errors.js';
import { closeResultFds, type InvocationScope, invoke } from '../../../privileged/invoke.js';
import { limitCovers, memLockNeed } from '../../../privileged/memlock.js';
import type { OperationArgs } from '../../../privileged/operations.js';
import { verifyThreads } from '../../../privileged/threads-verify.js';
import type { DomainDefinition } from '../../../stable/definition/schema.js';
import { faultPoint } from '../../../util/fault-points.js';
import { prlimitGet, RLIMIT } from '../../../util/libc.js';
import { listThreads } from '../../../util/proc.js';
import { placementCpusets, placesThreads, schedulingOf } from '../../thread-tuning.js';
import type { ThreadIds } from '../status.js';

/** Descriptors opened before the stub exists, to be inherited by QEMU at fixed numbers. */
export interface PreExecDescriptors {
  /** One fd per disk, in definition order. */
  readonly disks: Array<number | undefined>;
  /** Per disk (definition order): the read-only fd of its backing image, else undefined. */
  readonly backings?: Array<number | undefined>;
  /** Per interface (definition order): the TAP fds of an ethernet interface, else undefined. */
  readonly taps: Array<number[] | undefined>;
  /** Every fd above, to close in the driver once the child holds its copies. */
  readonly all: number[];
}

/** `pre-exec`, first moment: open TAP devices and disk files (ctx.pid is undefined). */
export async function openPreExecDescriptors(
  scope: InvocationScope,
  def: DomainDefinition,
): Promise<PreExecDescriptors> {
  const backings: Array<number | undefined> = [];
  const out: PreExecDescriptors = { disks: [], backings, taps: [], all: [] };
  try {
    for (const disk of def.disks) {
      // An empty CD-ROM has nothing to open.
      if (disk.source === undefined) {
        out.disks.push(undefined);
        continue;
      }
      const { fd } = await invoke(scope, 'storage.openFile', 'pre-exec', {
        path: disk.source,
        mode: disk.readonly ? 'r' : 'rw',
      });
      out.disks.push(fd);
      out.all.push(fd);
    }
    // Backing images are read only: the guest's writes go to the overlay.
    for (const disk of def.disks) {
      if (!disk.backingStore) {
        backings.push(undefined);
        continue;
      }
      const { fd } = await invoke(scope, 'storage.openFile', 'pre-exec', {
        path: disk.backingStore.source,
        mode: 'r',
      });
      backings.push(fd);
      out.all.push(fd);
    }
    for (const nic of def.interfaces) {
      if (nic.type !== 'ethernet') {
        out.taps.push(undefined);
        continue;
      }
      const dev = nic.target?.dev;
      if (nic.target?.managed === false && dev && !existsSync(`/sys/class/net/${dev}`)) {
        // managed='no' promises a TAP someone else created; virtkit must not create it instead.
        throw new VirtError(
          ErrorCode.OPERATION_FAILED,
          `interface ${dev} is declared managed='no' but does not exist; create it (ip tuntap add dev ${dev} mode tap) first`,
          { path: `interfaces.${def.interfaces.indexOf(nic)}.target.dev` },
        );
      }
      const { fds } = await invoke(scope, 'net.openTap', 'pre-exec', {
        ifname: nic.target?.dev,
        queues: nic.queues ?? 1,
        vnetHdr: nic.model.startsWith('virtio'),
        managed: nic.target?.managed !== false,
      });
      out.taps.push(fds);
      out.all.push(...fds);
    }
  } catch (err) {
    closeResultFds({ fds: out.all });
    throw err;
  }
  return out;
}

/**
 * `pre-exec`, second moment: the stub has its final pid and QEMU has not run (or `migration-in`
 * at the same moment, or `hotplug` before a memory backend is added): raises the limit only when
 * the current one does not cover the need the driver computes.
 */
export async function raiseMemLock(
  scope: InvocationScope,
  def: DomainDefinition,
  pid: number,
  phase: 'pre-exec' | 'migration-in' | 'hotplug' = 'pre-exec',
): Promise<void> {
  const need = memLockNeed(def);
  if (!need) return;
  const current = prlimitGet(pid, RLIMIT.MEMLOCK);
  if (limitCovers(current.soft, need.bytes) && limitCovers(current.hard, need.bytes)) {
    scope.log(
      `internal: process.setMaxMemLock skipped: limit ${current.soft}/${current.hard} covers ${need.bytes} (${need.breakdown.explanation})`,
    );
    return;
  }
  await invoke(scope, 'process.setMaxMemLock', phase, {
    pid,
    bytes: need.bytes,
    current,
    breakdown: need.breakdown,
  });
}

type Placements = OperationArgs<'cgroup.release'>['placements'];

/**
 * `startup`: every thread exists and no vCPU has run. Threads get their roles from QMP; every
 * thread QMP does not name a vCPU or iothread is an emulator (housekeeping) thread.
 */
export async function configureThreads(
  scope: InvocationScope,
  def: DomainDefinition,
  pid: number,
  threads: ThreadIds,
  record: { placements: Placements; placementAttempted: boolean },
  /**
   * Records the placement state so a killed driver's successor can release it: `attempt` before
   * placing (a caller whose record already says so, written before the stub ran, may skip it),
   * `placed` after.
   */
  persist: (stage: 'attempt' | 'placed') => Promise<void> = async () => undefined,
  /** `migration-in` on the destination of a migration: the same moment, before any incoming vCPU runs. */
  phase: 'startup' | 'migration-in' = 'startup',
): Promise<void> {
  const tune = def.cputune;
  if (!tune) return;
  if (placesThreads(def)) {
    const known = new Set([...threads.vcpus, ...threads.iothreads].map((t) => t.tid));
    // One reading of the task list names the emulator threads and verifies every thread.
    const tasks = listThreads(pid);
    const all = [
      ...threads.vcpus.map((t) => ({ tid: t.tid, role: 'vcpu' as const, index: t.index })),
      ...threads.iothreads.map((t) => ({ tid: t.tid, role: 'iothread' as const, index: t.index })),
      ...tasks.filter((tid) => !known.has(tid)).map((tid) => ({ tid, role: 'emulator' as const, index: 0 })),
    ];
    verifyThreads({ pid, startTime: scope.startTime }, all, new Set(tasks));
    // Recorded at once: if this or a later step fails, the rollback must release what was made.
    record.placementAttempted = true;
    await persist('attempt');
    ({ placements: record.placements } = await invoke(scope, 'cgroup.placeThreads', phase, {
      pid,
      threads: all,
      cpusets: placementCpusets(tune),
    }));
    faultPoint('start:placed');
    await persist('placed');
  }
  const sched = schedulingOf(tune, threads.vcpus, threads.iothreads);
  if (sched.length > 0) {
    verifyThreads({ pid, startTime: scope.startTime }, sched);
    await invoke(scope, 'thread.setScheduler', phase, { pid, threads: sched });
  }
}

/**
 * `hotplug` of a vCPU: its thread exists (QEMU created it with `device_add`) and has run no guest
 * code, since the guest has not onlined the CPU yet. It gets the same cgroup placement and
 * scheduling a vCPU of that index gets at start; the placements are appended to `record` as soon
 * as they are known, so `release` gives them back even when a later step fails.
 */
export async function configureHotplugVcpu(
  scope: InvocationScope,
  def: DomainDefinition,
  pid: number,
  vcpu: { readonly tid: number; readonly index: number },
  record: { placements: Placements; placementAttempted: boolean },
): Promise<void> {
  const tune = def.cputune;
  if (!tune) return;
  const thread = { tid: vcpu.tid, role: 'vcpu' as const, index: vcpu.index };
  if (placesThreads(def)) {
    verifyThreads({ pid, startTime: scope.startTime }, [thread]);
    record.placementAttempted = true;
    const { placements } = await invoke(scope, 'cgroup.placeThreads', 'hotplug', {
      pid,
      threads: [thread],
      cpusets: placementCpusets(tune),
    });
    record.placements = [...record.placements, ...placements];
  }
  const sched = schedulingOf(tune, [thread]);
  if (sched.length > 0) {
    verifyThreads({ pid, startTime: scope.startTime }, sched);
    await invoke(scope, 'thread.setScheduler', 'hotplug', { pid, threads: sched });
  }
}

const THREAD_EXIT_TIMEOUT_MS = 10_000;

async function threadsExited(pid: number, tids: readonly number[]): Promise<void> {
  const until = Date.now() + THREAD_EXIT_TIMEOUT_MS;
  while (tids.some((tid) => existsSync(`/proc/${pid}/task/${tid}`))) {
    if (Date.now() >= until) {
      throw new VirtError(
        ErrorCode.OPERATION_TIMEOUT,
        `the threads ${tids.join(', ')} of QEMU ${pid} did not exit within ${THREAD_EXIT_TIMEOUT_MS} ms after their vCPUs were removed`,
        { pid, tids: [...tids] },
      );
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * `hotplug`, vCPUs taken away (an unplug, or the rollback of a hotplug): their threads have exited,
 * so the placements of `tids` are given back (`cgroup.release` with just those) and dropped from
 * `record`. Never throws: the vCPUs are gone either way. A release that fails keeps them in
 * `record`, so the domain's final release still gives them back.
 */
export async function releaseVcpuThreads(
  scope: InvocationScope,
  record: { readonly pid: number; placements: Placements },
  tids: readonly number[],
): Promise<void> {
  const gone = record.placements.filter((p) => tids.includes(p.tid));
  if (gone.length === 0) return;
  try {
    // QEMU joins a vCPU's thread as it removes the vCPU; the group is empty only once it has exited.
    await threadsExited(record.pid, tids);
    await invoke({ ...scope, signal: undefined }, 'cgroup.release', 'hotplug', {
      pid: record.pid,
      placements: gone,
    });
  } catch (err) {
    // invoke logged its own failures; what is left goes with the domain's release.
    scope.log(
      `vCPU threads ${tids.join(', ')}: their placements stay until the domain's release: ${errorMessage(err)}`,
    );
    return;
  }
  record.placements = record.placements.filter((p) => !gone.includes(p));
}

/** `release` (or `reconnect`): QEMU has exited; give back what `startup` placed. Never throws. */
export async function releaseThreads(
  scope: InvocationScope,
  record: { readonly pid: number; readonly placements: Placements; readonly placementAttempted: boolean },
  phase: 'release' | 'reconnect',
): Promise<void> {
  if (!record.placementAttempted && record.placements.length === 0) return;
  // Giving back must not stop because the job that placed the threads was aborted or destroyed.
  scope = { ...scope, signal: undefined };
  // The built-in may find a group still busy for a moment after the exit (threads finishing): it
  // is retried briefly; whatever is still left, the next driver's sweep releases.
  const attempts = scope.handlers.get('cgroup.release') ? 1 : 3;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    try {
      await invoke(scope, 'cgroup.release', phase, { pid: record.pid, placements: record.placements });
      return;
    } catch {
      // invoke logged it; the domain is gone either way and must still be recorded as shut off.
      if (attempt < attempts) await new Promise((r) => setTimeout(r, 200 * attempt));
    }
  }
}

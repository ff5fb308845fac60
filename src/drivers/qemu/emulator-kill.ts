import { readdirSync, readFileSync } from 'node:fs';
import { domainCgroupName } from '../../privileged/builtins.js';
import { domainCgroupThreads } from '../../util/cgroup.js';
import { readProcStartTime } from '../../util/proc.js';
import type { DriverContext } from './context.js';
import type { DomainObject } from './domain-object.js';

/*
 * QEMU is launched in its own session and process group (the stub is spawned detached, so its pid
 * is the group id). An emulator that forks leaves children in that group, and one that daemonises
 * leaves them in the domain's cgroup (when it has one). Stopping a domain therefore signals the
 * whole group, and the driver reports it shut off only once every member is gone.
 */

/** The emulator process as the driver recorded it: its pid is also its process-group id. */
export interface EmulatorIdentity {
  readonly pid: number;
  readonly startTime: bigint;
  /** The domain's built-in cgroup, `{ parent, name }`, when threads were placed there. */
  readonly cgroup?: { readonly parent: string; readonly name: string };
  /**
   * The leader is known to be gone with all its threads (reaped by this driver, whose wait
   * reports a process only once every thread has exited, or seen gone by {@link leaderGone}):
   * it is not looked up in /proc again.
   */
  readonly exited?: boolean;
}

/**
 * The identity of a domain's emulator. Its built-in cgroup counts only when the driver's own
 * manager placed the threads: a handler's cgroups are the handler's to judge.
 */
export function emulatorOf(
  ctx: Pick<DriverContext, 'handlers' | 'cgroupParent'>,
  dom: DomainObject,
  run: { readonly pid: number; readonly startTime: bigint; readonly placementAttempted: boolean },
): EmulatorIdentity {
  const builtin = run.placementAttempted && !ctx.handlers.get('cgroup.placeThreads');
  return {
    pid: run.pid,
    startTime: run.startTime,
    cgroup: builtin ? { parent: ctx.cgroupParent, name: domainCgroupName(dom.def.uuid) } : undefined,
  };
}

/** True once the leader has exited and none of its threads is still running its exit. */
export function leaderGone(id: EmulatorIdentity): boolean {
  if (id.exited) return true;
  const leader = readStat(id.pid);
  if (!leader || leader.startTime !== id.startTime) return true;
  return leader.state === 'Z' || leader.state === 'X' ? liveThreads(id.pid) === 0 : false;
}

interface ProcStat {
  readonly pid: number;
  readonly state: string;
  readonly pgrp: number;
  readonly startTime: bigint;
}

function readStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  const f = text
    .slice(text.lastIndexOf(')') + 2)
    .trim()
    .split(' ');
  // Fields after comm: [0] state (3), [2] pgrp (5), [19] starttime (22).
  return { pid, state: f[0] ?? '', pgrp: Number(f[2]), startTime: BigInt(f[19] ?? 0) };
}

/**
 * True when the process group `pgid` may still have a member: `kill(-pgid, 0)` answers without
 * reading /proc, and ESRCH means no process (not even a zombie) is left in the group.
 */
function groupMayLive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/**
 * Live (non-zombie) processes of the emulator's process group. Only processes started no earlier
 * than the emulator count: a group id is never reused while any member lives, so these are the
 * emulator's own descendants. Listing them reads every process of /proc, so it is done only when
 * the group is not already known to be empty.
 */
export function groupMembers(id: EmulatorIdentity): number[] {
  const out: number[] = [];
  // No process in the group at all: the common case once a domain has stopped, answered by one
  // kill(2) before any read of /proc (a missing /proc entry costs an exception in Node).
  if (!groupMayLive(id.pid)) return out;
  // The pid now belongs to another process: the old group was empty, so its id is free for reuse.
  const leader = readStat(id.pid);
  if (leader && leader.startTime !== id.startTime) return out;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const st = readStat(Number(entry));
    if (!st || st.pgrp !== id.pid || st.state === 'Z' || st.state === 'X') continue;
    if (st.startTime < id.startTime) continue;
    out.push(st.pid);
  }
  return out;
}

/** Processes (thread-group ids) with a thread in the domain's cgroup. */
function cgroupMembers(id: EmulatorIdentity): number[] {
  if (!id.cgroup) return [];
  let tids: number[];
  try {
    tids = domainCgroupThreads(id.cgroup);
  } catch {
    return [];
  }
  const tgids = new Set<number>();
  for (const tid of tids) {
    try {
      const m = /^Tgid:\s+(\d+)/m.exec(readFileSync(`/proc/${tid}/status`, 'utf8'));
      if (m) tgids.add(Number(m[1]));
    } catch {
      // exited meanwhile
    }
  }
  return [...tgids];
}

function send(pid: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    // gone already (ESRCH), or not ours to signal (EPERM): nothing more to do for it
    return false;
  }
}

/**
 * Signals the emulator, every process of its group and every process in its cgroup. The group is
 * signalled as a whole while its leader is verified to be the emulator (same start time), which
 * reaches every member; otherwise each member found in /proc is signalled on its own.
 *
 * @returns true when the verified leader's group was signalled (the leader with it)
 */
export function signalEmulator(id: EmulatorIdentity, sig: NodeJS.Signals): boolean {
  const verified = readProcStartTime(id.pid) === id.startTime;
  const sent = verified && send(-id.pid, sig);
  if (!verified) for (const pid of groupMembers(id)) send(pid, sig);
  for (const pid of cgroupMembers(id)) send(pid, sig);
  return sent;
}

/**
 * The emulator's processes still alive: the leader (unless a zombie), group and cgroup members.
 * While the leader lives the answer is never empty, so its group is listed (a scan of /proc) only
 * once the leader has gone, or when `complete` asks for every survivor by name.
 */
export function emulatorRemains(id: EmulatorIdentity, complete = false): number[] {
  const remains = new Set<number>();
  // A zombie leader may still have threads that are exiting: they hold the cgroups until done.
  if (!leaderGone(id)) remains.add(id.pid);
  if (remains.size === 0 || complete) for (const pid of groupMembers(id)) remains.add(pid);
  for (const pid of cgroupMembers(id)) remains.add(pid);
  return [...remains];
}

function liveThreads(pid: number): number {
  let n = 0;
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return 0;
  }
  for (const tid of tids) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      if (state !== 'Z' && state !== 'X') n++;
    } catch {
      // exited meanwhile
    }
  }
  return n;
}

/**
 * SIGKILLs whatever is left of the emulator (the leader included) and waits, up to `timeoutMs`,
 * until nothing is. Returns the pids still alive at the deadline (empty when all went).
 */
export async function reapEmulator(id: EmulatorIdentity, timeoutMs = 10_000): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  let delay = 1;
  for (;;) {
    const remains = emulatorRemains(id);
    if (remains.length === 0) return [];
    if (Date.now() > deadline) return emulatorRemains(id, true);
    signalEmulator(id, 'SIGKILL');
    for (const pid of remains) send(pid, 'SIGKILL');
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 50);
  }
}

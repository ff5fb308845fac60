import { type ChildProcess, spawn } from 'node:child_process';
import {
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  rmSync,
  symlinkSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  isAlive,
  listThreads,
  ProcStatFile,
  readParentPid,
  readProcCpuTimeNs,
  readProcExe,
  readProcLimits,
  readProcParentAndStart,
  readProcStartTime,
  readProcState,
  readProcUid,
  readThreadCgroups,
  readThreadComm,
} from '../../src/util/proc.js';

/** A pid above PID_MAX_LIMIT (2^22), so it can never exist. */
const NO_PID = 0x3fff_ffff;
const WEIRD = 'a b) c';

let dir: string;
const children: ChildProcess[] = [];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'virtkit-proc-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});
afterEach(() => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
});

function spawnTracked(cmd: string, args: string[]): number {
  const child = spawn(cmd, args, { stdio: 'ignore' });
  children.push(child);
  if (child.pid === undefined) throw new Error(`cannot spawn ${cmd}`);
  return child.pid;
}

async function until<T>(fn: () => T | undefined, ms = 5000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error('timed out');
    await sleep(10);
  }
}

describe('stat fields', () => {
  it('reads the CPU time of this process: utime + stime of /proc/self/stat, in ns, growing with work', () => {
    const fields = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]?.split(' ') ?? [];
    const before = readProcCpuTimeNs(process.pid) ?? -1n;
    expect(before).toBeGreaterThanOrEqual((BigInt(fields[11] ?? 0) + BigInt(fields[12] ?? 0)) * 10_000_000n);
    // 30 ms of CPU (not of wall time, which a loaded machine may not turn into CPU): 3 ticks at least.
    const cpu0 = process.cpuUsage();
    while (process.cpuUsage(cpu0).user + process.cpuUsage(cpu0).system < 30_000) Math.sqrt(Math.random());
    expect(readProcCpuTimeNs(process.pid)).toBeGreaterThan(before);
    expect(readProcCpuTimeNs(NO_PID)).toBeUndefined();
  });

  it('reads a stable start time of this process', () => {
    const t = readProcStartTime(process.pid);
    expect(typeof t).toBe('bigint');
    expect(t).toBeGreaterThan(0n);
    expect(readProcStartTime(process.pid)).toBe(t);
    expect(readProcState(process.pid)).toMatch(/^[RS]$/);
    expect(readParentPid(process.pid)).toBe(process.ppid);
  });

  it('parses a process whose comm contains spaces and a parenthesis', async () => {
    const link = join(dir, WEIRD);
    const sleepBin = realpathSync('/usr/bin/sleep');
    symlinkSync(sleepBin, link);
    const pid = spawnTracked(link, ['30']);
    // comm changes at exec; wait until the child has exec'd.
    await until(() => (readThreadComm(pid, pid) === WEIRD ? true : undefined));
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    expect(stat).toContain(`(${WEIRD})`);
    expect(readProcState(pid)).toMatch(/^[RS]$/);
    // utime and stime (fields 14, 15), counted after the last ')': a comm with ')' does not shift them.
    const [utime, stime] = stat
      .slice(stat.lastIndexOf(')') + 2)
      .split(' ')
      .slice(11, 13);
    expect(readProcCpuTimeNs(pid)).toBeGreaterThanOrEqual(
      (BigInt(utime ?? -1) + BigInt(stime ?? -1)) * 10_000_000n,
    );
    const file = new ProcStatFile(pid);
    expect(file.cpuTimeNs()).toBeGreaterThanOrEqual(
      (BigInt(utime ?? -1) + BigInt(stime ?? -1)) * 10_000_000n,
    );
    file.close();
    expect(readParentPid(pid)).toBe(process.pid);
    const start = readProcStartTime(pid);
    expect(typeof start).toBe('bigint');
    expect(start).toBeGreaterThanOrEqual(readProcStartTime(process.pid) ?? 0n);
    expect(readProcParentAndStart(pid)).toEqual({ ppid: process.pid, startTime: start });
    expect(readProcExe(pid)).toBe(sleepBin);
    expect(listThreads(pid)).toEqual([pid]);
    expect(isAlive(pid)).toBe(true);
  });

  it('reports nothing for a missing pid', () => {
    expect(readProcStartTime(NO_PID)).toBeUndefined();
    expect(readProcState(NO_PID)).toBeUndefined();
    expect(readParentPid(NO_PID)).toBeUndefined();
    expect(readProcParentAndStart(NO_PID)).toBeUndefined();
    expect(readProcExe(NO_PID)).toBeUndefined();
    expect(readThreadComm(NO_PID, NO_PID)).toBeUndefined();
    expect(readProcUid(NO_PID)).toBeUndefined();
    expect(listThreads(NO_PID)).toEqual([]);
    expect(readProcLimits(NO_PID).size).toBe(0);
    expect(readThreadCgroups(NO_PID, NO_PID)).toEqual([]);
    expect(isAlive(NO_PID)).toBe(false);
  });
});

describe('ProcStatFile', () => {
  /** The descriptors of this process open on `path`. */
  const openOn = (path: string) =>
    readdirSync('/proc/self/fd').filter((fd) => {
      try {
        return readlinkSync(`/proc/self/fd/${fd}`) === path;
      } catch {
        return false;
      }
    });

  it('reads the CPU time as readProcCpuTimeNs does, anew at every read, through one descriptor', () => {
    const file = new ProcStatFile(process.pid);
    try {
      const before = file.cpuTimeNs() ?? -1n;
      expect(before).toBeGreaterThan(0n);
      expect(readProcCpuTimeNs(process.pid)).toBeGreaterThanOrEqual(before);
      const cpu0 = process.cpuUsage();
      while (process.cpuUsage(cpu0).user + process.cpuUsage(cpu0).system < 30_000) Math.sqrt(Math.random());
      expect(file.cpuTimeNs()).toBeGreaterThan(before);
      expect(openOn(`/proc/${process.pid}/stat`)).toHaveLength(1);
    } finally {
      file.close();
    }
    expect(openOn(`/proc/${process.pid}/stat`)).toHaveLength(0);
    expect(file.cpuTimeNs()).toBeUndefined();
  });

  it('reads a reaped process as gone, closes its descriptor, and stays gone', async () => {
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    const pid = child.pid!;
    const file = new ProcStatFile(pid);
    try {
      expect(typeof file.cpuTimeNs()).toBe('bigint');
      child.kill('SIGKILL');
      await new Promise((resolve) => child.once('exit', resolve));
      expect(file.cpuTimeNs()).toBeUndefined();
      expect(openOn(`/proc/${pid}/stat`)).toHaveLength(0);
      expect(file.cpuTimeNs()).toBeUndefined();
    } finally {
      file.close();
    }
  });

  it('reads a missing pid as gone', () => {
    expect(new ProcStatFile(NO_PID).cpuTimeNs()).toBeUndefined();
  });
});

describe('isAlive', () => {
  it('is false for an exited and reaped child', async () => {
    const child = spawn('true', [], { stdio: 'ignore' });
    const pid = child.pid!;
    await new Promise((resolve) => child.once('exit', resolve));
    expect(readProcStartTime(pid)).toBeUndefined();
    expect(isAlive(pid)).toBe(false);
  });

  it('is false for a zombie', async () => {
    // sh forks `sleep 0`, then execs `sleep 30`, which never reaps it: a zombie grandchild.
    const parent = spawnTracked('sh', ['-c', 'sleep 0 & exec sleep 30']);
    const zombie = await until(() =>
      readdirSync('/proc')
        .filter((n) => /^\d+$/.test(n))
        .map(Number)
        .find((p) => readParentPid(p) === parent && readProcState(p) === 'Z'),
    );
    expect(isAlive(zombie)).toBe(false);
    expect(readProcExe(zombie)).toBeUndefined();
    expect(isAlive(parent)).toBe(true);
  });
});

describe('this process', () => {
  it('reads the executable', () => {
    expect(readProcExe(process.pid)).toBe(realpathSync(process.execPath));
  });

  it('lists threads, including the main one, sorted', () => {
    const tids = listThreads(process.pid);
    expect(tids).toContain(process.pid);
    expect(tids.length).toBeGreaterThan(1); // libuv and V8 threads
    expect([...tids].sort((a, b) => a - b)).toEqual(tids);
    expect(tids[0]).toBe(process.pid);
  });

  it('reads thread names', () => {
    expect(readThreadComm(process.pid, process.pid)).toBe(readFileSync('/proc/self/comm', 'utf8').trim());
    const names = listThreads(process.pid).map((t) => readThreadComm(process.pid, t));
    expect(names.every((n) => typeof n === 'string' && n.length > 0 && !n.includes('\n'))).toBe(true);
  });

  it('reads the uid', () => {
    expect(readProcUid(process.pid)).toBe(process.getuid?.());
  });

  it('parses /proc/<pid>/limits', () => {
    const limits = readProcLimits(process.pid);
    expect(limits.size).toBeGreaterThanOrEqual(16);
    expect(limits.get('Max locked memory')?.units).toBe('bytes');
    expect(limits.get('Max open files')?.units).toBe('files');
    expect(limits.get('Max cpu time')?.units).toBe('seconds');
    expect(limits.get('Max nice priority')?.units).toBe('');
    expect(limits.get('Max realtime timeout')?.units).toBe('us');
    const nofile = limits.get('Max open files');
    expect(typeof nofile?.soft).toBe('bigint');
    for (const [name, l] of limits) {
      expect(name).toMatch(/^Max [a-z ]+[a-z]$/);
      for (const v of [l.soft, l.hard]) expect(v === 'unlimited' || typeof v === 'bigint').toBe(true);
    }
  });

  it('reads cgroups of v1 hierarchies and the v2 unified one', () => {
    const groups = readThreadCgroups(process.pid, process.pid);
    const raw = readFileSync(`/proc/self/task/${process.pid}/cgroup`, 'utf8').trim().split('\n');
    expect(groups).toHaveLength(raw.length);
    for (const g of groups) {
      expect(Number.isInteger(g.hierarchyId)).toBe(true);
      expect(g.path.startsWith('/')).toBe(true);
    }
    const unified = groups.find((g) => g.hierarchyId === 0);
    expect(unified?.controllers).toEqual([]);
    if (groups.length > 1) {
      // This machine mixes v1 controllers with the unified hierarchy.
      expect(groups.some((g) => g.hierarchyId > 0 && g.controllers.includes('cpuset'))).toBe(true);
    }
    const threads = listThreads(process.pid);
    const other = threads.find((t) => t !== process.pid);
    if (other !== undefined) expect(readThreadCgroups(process.pid, other)).toHaveLength(groups.length);
  });
});

import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import {
  closeSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
} from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  closeFd,
  flockTry,
  geteuid,
  getuid,
  listenUnixSocket,
  prlimitGet,
  prlimitSet,
  RLIMIT,
  SyscallError,
  schedGet,
  schedSet,
} from '../../src/util/libc.js';
import { readProcLimits } from '../../src/util/proc.js';

/** A pid above PID_MAX_LIMIT (2^22), so it can never exist. */
const NO_PID = 0x3fff_ffff;
const MiB64 = 64n * 1024n * 1024n;
/** Raising a hard limit needs CAP_SYS_RESOURCE, which even root may lack in a container. */
const CAP_SYS_RESOURCE = 24n;
const capEff = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? '0';
const hasCapSysResource = ((BigInt(`0x${capEff}`) >> CAP_SYS_RESOURCE) & 1n) === 1n;

const children: ChildProcess[] = [];

function sleeper(): number {
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  children.push(child);
  if (child.pid === undefined) throw new Error('spawn failed');
  return child.pid;
}

afterEach(() => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
});

function catchErr(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected a throw');
}

function expectSyscallError(fn: () => unknown, syscall: string, code: string): SyscallError {
  const err = catchErr(fn);
  expect(err).toBeInstanceOf(SyscallError);
  const e = err as SyscallError;
  expect(e.syscall).toBe(syscall);
  expect(e.code).toBe(code);
  expect(e.errno).toBeGreaterThan(0);
  return e;
}

function procMemlock(pid: number): { soft: bigint | 'unlimited'; hard: bigint | 'unlimited' } {
  const l = readProcLimits(pid).get('Max locked memory');
  if (!l) throw new Error('no Max locked memory line');
  expect(l.units).toBe('bytes');
  return { soft: l.soft, hard: l.hard };
}

describe('prlimit', () => {
  it('reads the same MEMLOCK limit as /proc/<pid>/limits', () => {
    const pid = sleeper();
    expect(prlimitGet(pid, RLIMIT.MEMLOCK)).toEqual(procMemlock(pid));
  });

  it('reads the calling process with pid 0', () => {
    const own = readProcLimits(process.pid).get('Max open files');
    expect(prlimitGet(0, RLIMIT.NOFILE)).toEqual({ soft: own?.soft, hard: own?.hard });
  });

  it('lowers soft and hard and reads them back both ways', () => {
    const pid = sleeper();
    const { hard } = prlimitGet(pid, RLIMIT.MEMLOCK);
    // Without CAP_SYS_RESOURCE only values up to the current hard limit are allowed.
    const top = hard === 'unlimited' ? MiB64 : hard;
    prlimitSet(pid, RLIMIT.MEMLOCK, { soft: top / 2n, hard: top });
    expect(prlimitGet(pid, RLIMIT.MEMLOCK)).toEqual({ soft: top / 2n, hard: top });
    expect(procMemlock(pid)).toEqual({ soft: top / 2n, hard: top });
    prlimitSet(pid, RLIMIT.MEMLOCK, { soft: top / 4n, hard: top / 4n });
    expect(prlimitGet(pid, RLIMIT.MEMLOCK)).toEqual({ soft: top / 4n, hard: top / 4n });
    expect(procMemlock(pid)).toEqual({ soft: top / 4n, hard: top / 4n });
  });

  // Always runs: which branch applies depends on the machine, and both assert the kernel's answer.
  it('raises a hard limit exactly when the process has CAP_SYS_RESOURCE', () => {
    const pid = sleeper();
    prlimitSet(pid, RLIMIT.MEMLOCK, { soft: 4096n, hard: 8192n });
    if (!hasCapSysResource) {
      const e = expectSyscallError(
        () => prlimitSet(pid, RLIMIT.MEMLOCK, { soft: 4096n, hard: 16384n }),
        'prlimit',
        'EPERM',
      );
      expect(e.message).toBe(
        `prlimit(${pid}, MEMLOCK, {soft: 4096, hard: 16384}): EPERM (Operation not permitted)`,
      );
      expect(procMemlock(pid)).toEqual({ soft: 4096n, hard: 8192n });
      return;
    }
    prlimitSet(pid, RLIMIT.MEMLOCK, { soft: MiB64, hard: MiB64 });
    expect(procMemlock(pid)).toEqual({ soft: MiB64, hard: MiB64 });
    prlimitSet(pid, RLIMIT.MEMLOCK, { soft: 'unlimited', hard: 'unlimited' });
    expect(prlimitGet(pid, RLIMIT.MEMLOCK)).toEqual({ soft: 'unlimited', hard: 'unlimited' });
    expect(procMemlock(pid)).toEqual({ soft: 'unlimited', hard: 'unlimited' });
  });

  it('throws ESRCH for a missing pid, with errno in the message', () => {
    const e = expectSyscallError(() => prlimitGet(NO_PID, RLIMIT.MEMLOCK), 'prlimit', 'ESRCH');
    expect(e.message).toBe(`prlimit(${NO_PID}, MEMLOCK): ESRCH (No such process)`);
    expectSyscallError(() => prlimitSet(NO_PID, RLIMIT.MEMLOCK, { soft: 1n, hard: 1n }), 'prlimit', 'ESRCH');
  });

  it('throws EINVAL when soft exceeds hard', () => {
    const pid = sleeper();
    expectSyscallError(
      () => prlimitSet(pid, RLIMIT.MEMLOCK, { soft: MiB64, hard: MiB64 / 2n }),
      'prlimit',
      'EINVAL',
    );
  });

  it('rejects out-of-range values before calling libc', () => {
    const err = catchErr(() => prlimitSet(0, RLIMIT.MEMLOCK, { soft: -1n, hard: 1n }));
    expect(err).not.toBeInstanceOf(SyscallError);
    expect((err as { code?: unknown }).code).toBe('INTERNAL_ERROR');
  });
});

describe('sched', () => {
  function chrt(pid: number): string {
    return execFileSync('chrt', ['-p', String(pid)], { encoding: 'utf8' });
  }
  function procSched(pid: number, key: string): number {
    const m = new RegExp(`^${key}\\s*:\\s*(-?\\d+)`, 'm').exec(readFileSync(`/proc/${pid}/sched`, 'utf8'));
    if (!m) throw new Error(`no ${key} in /proc/${pid}/sched`);
    return Number(m[1]);
  }

  it('sets SCHED_FIFO 10 on an idle thread and back to SCHED_OTHER', () => {
    const pid = sleeper();
    expect(schedGet(pid)).toEqual({ policy: 'other', priority: 0 });
    schedSet(pid, 'fifo', 10);
    expect(schedGet(pid)).toEqual({ policy: 'fifo', priority: 10 });
    expect(chrt(pid)).toMatch(/policy: SCHED_FIFO\b/);
    expect(chrt(pid)).toMatch(/priority: 10\b/);
    expect(procSched(pid, 'policy')).toBe(1);
    expect(procSched(pid, 'prio')).toBe(99 - 10);
    schedSet(pid, 'rr', 5);
    expect(schedGet(pid)).toEqual({ policy: 'rr', priority: 5 });
    expect(chrt(pid)).toMatch(/policy: SCHED_RR\b/);
    schedSet(pid, 'other', 0);
    expect(schedGet(pid)).toEqual({ policy: 'other', priority: 0 });
    expect(chrt(pid)).toMatch(/policy: SCHED_OTHER\b/);
    expect(procSched(pid, 'policy')).toBe(0);
  });

  it('sets batch and idle with priority 0', () => {
    const pid = sleeper();
    schedSet(pid, 'batch', 0);
    expect(schedGet(pid)).toEqual({ policy: 'batch', priority: 0 });
    expect(chrt(pid)).toMatch(/policy: SCHED_BATCH\b/);
    schedSet(pid, 'idle', 0);
    expect(schedGet(pid)).toEqual({ policy: 'idle', priority: 0 });
    expect(chrt(pid)).toMatch(/policy: SCHED_IDLE\b/);
    expect(procSched(pid, 'policy')).toBe(5);
  });

  it('masks SCHED_RESET_ON_FORK', () => {
    const pid = sleeper();
    execFileSync('chrt', ['--reset-on-fork', '--batch', '-p', '0', String(pid)]);
    expect(chrt(pid)).toMatch(/SCHED_RESET_ON_FORK/);
    expect(schedGet(pid)).toEqual({ policy: 'batch', priority: 0 });
  });

  it('throws EINVAL for an invalid priority and ESRCH for a missing thread', () => {
    const pid = sleeper();
    expectSyscallError(() => schedSet(pid, 'fifo', 0), 'sched_setscheduler', 'EINVAL');
    expectSyscallError(() => schedSet(pid, 'other', 10), 'sched_setscheduler', 'EINVAL');
    expectSyscallError(() => schedSet(NO_PID, 'other', 0), 'sched_setscheduler', 'ESRCH');
    expectSyscallError(() => schedGet(NO_PID), 'sched_getscheduler', 'ESRCH');
    expect(schedGet(pid)).toEqual({ policy: 'other', priority: 0 });
  });
});

describe('flock, sockets, fds, ids', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'virtkit-libc-'));
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('flockTry conflicts between two open file descriptions', () => {
    const file = join(dir, 'lock');
    const a = openSync(file, 'w');
    const b = openSync(file, 'r');
    try {
      expect(flockTry(a)).toBe(true);
      expect(flockTry(a)).toBe(true); // re-locking the same description is fine
      expect(flockTry(b)).toBe(false);
      closeSync(a);
      expect(flockTry(b)).toBe(true);
    } finally {
      closeSync(b);
    }
  });

  it('flockTry throws EBADF for a closed fd', () => {
    const fd = openSync(join(dir, 'lock2'), 'w');
    closeSync(fd);
    expectSyscallError(() => flockTry(fd), 'flock', 'EBADF');
  });

  it('listenUnixSocket returns a listening close-on-exec fd that accepts connections', async () => {
    const path = join(dir, 'sock');
    const fd = listenUnixSocket(path);
    try {
      expect(statSync(path).isSocket()).toBe(true);
      expect(readlinkSync(`/proc/self/fd/${fd}`)).toMatch(/^socket:\[\d+\]$/);
      const flags = /^flags:\s+([0-7]+)/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
      expect(Number.parseInt(flags?.[1] ?? '0', 8) & 0o2000000).toBe(0o2000000);
      await new Promise<void>((resolve, reject) => {
        const s = connect(path);
        s.once('connect', () => {
          s.destroy();
          resolve();
        });
        s.once('error', reject);
      });
    } finally {
      closeFd(fd);
    }
    expect(() => readlinkSync(`/proc/self/fd/${fd}`)).toThrow();
  });

  it('listenUnixSocket hands a working fd to a child process', async () => {
    const path = join(dir, 'sock-child');
    const fd = listenUnixSocket(path);
    const child = spawn(
      process.execPath,
      [
        '-e',
        "const s=require('net').createServer(c=>{c.end('hello');s.close()});s.listen({fd:3},()=>process.stdout.write('ready'))",
      ],
      { stdio: ['ignore', 'pipe', 'inherit', fd] },
    );
    children.push(child);
    closeFd(fd);
    try {
      await new Promise<void>((resolve) => child.stdout?.once('data', () => resolve()));
      const got = await new Promise<string>((resolve, reject) => {
        let buf = '';
        const s = connect(path);
        s.setEncoding('utf8');
        s.on('data', (d: string) => {
          buf += d;
        });
        s.once('end', () => resolve(buf));
        s.once('error', reject);
      });
      expect(got).toBe('hello');
    } finally {
      child.kill();
    }
  });

  it('listenUnixSocket rejects a path of 108 bytes or more and closes the fd on bind errors', () => {
    const long = join(dir, 'x'.repeat(108));
    const e = expectSyscallError(() => listenUnixSocket(long), 'bind', 'ENAMETOOLONG');
    expect(e.message).toMatch(/shorter than 108 bytes/);
    const max = join(dir, 'z'.repeat(107 - dir.length - 1));
    expect(Buffer.byteLength(max)).toBe(107);
    closeFd(listenUnixSocket(max));
    expect(statSync(max).isSocket()).toBe(true);
    expectSyscallError(() => listenUnixSocket(`${max}z`), 'bind', 'ENAMETOOLONG');

    const path = join(dir, 'taken');
    const fd = listenUnixSocket(path);
    try {
      const before = readdirSync('/proc/self/fd').length;
      expectSyscallError(() => listenUnixSocket(path), 'bind', 'EADDRINUSE');
      expect(readdirSync('/proc/self/fd').length).toBe(before);
    } finally {
      closeFd(fd);
    }
  });

  it('closeFd throws EBADF for a closed fd', () => {
    const fd = openSync(join(dir, 'c'), 'w');
    closeFd(fd);
    expectSyscallError(() => closeFd(fd), 'close', 'EBADF');
  });

  it('getuid and geteuid match process', () => {
    expect(getuid()).toBe(process.getuid?.());
    expect(geteuid()).toBe(process.geteuid?.());
  });
});

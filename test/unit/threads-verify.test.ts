import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { builtins } from '../../src/privileged/builtins.js';
import { HandlerTable } from '../../src/privileged/handler-table.js';
import { type InvocationScope, invoke } from '../../src/privileged/invoke.js';
import { postchecks } from '../../src/privileged/postchecks.js';
import { verifyThreadCount, verifyThreads } from '../../src/privileged/threads-verify.js';
import { schedGet } from '../../src/util/libc.js';
import { readProcStartTime } from '../../src/util/proc.js';

let other: ChildProcess;
const self = { pid: process.pid, startTime: readProcStartTime(process.pid) as bigint };
const ownTids = readdirSync('/proc/self/task').map(Number);

beforeAll(() => {
  other = spawn('sleep', ['600'], { stdio: 'ignore' });
});
afterAll(() => {
  other.kill('SIGKILL');
});

function scope(pid: number, startTime?: bigint): InvocationScope {
  return {
    handlers: new HandlerTable(),
    domain: { uuid: '00000000-0000-4000-8000-000000000000', name: 'v', id: 1 },
    pid,
    startTime,
    taints: [],
    cgroupParent: 'virtkit',
    log: () => undefined,
  };
}

describe('verifyThreads', () => {
  it('accepts the threads of the process itself', () => {
    expect(() =>
      verifyThreads(
        self,
        ownTids.map((tid, index) => ({ tid, role: 'vcpu', index })),
      ),
    ).not.toThrow();
  });

  it('refuses a tid of another process, naming it', () => {
    const tid = other.pid as number;
    expect(() => verifyThreads(self, [{ tid, role: 'vcpu', index: 0 }])).toThrow(
      expect.objectContaining({ code: 'OPERATION_FAILED', details: expect.objectContaining({ tid }) }),
    );
  });

  it('refuses when the owner is no longer the process that was launched (start time changed)', () => {
    expect(() => verifyThreads({ pid: self.pid, startTime: self.startTime + 1n }, [])).toThrow(
      expect.objectContaining({ code: 'OPERATION_FAILED' }),
    );
  });

  it('refuses nonsense tids and duplicates', () => {
    for (const tid of [0, -1, 1.5, Number.NaN]) {
      expect(() => verifyThreads(self, [{ tid, role: 'vcpu', index: 0 }])).toThrow();
    }
    expect(() =>
      verifyThreads(self, [
        { tid: process.pid, role: 'vcpu', index: 0 },
        { tid: process.pid, role: 'vcpu', index: 1 },
      ]),
    ).toThrow(/twice/);
  });
});

describe('verifyThreads with the task list read once', () => {
  const tasks = () => new Set(readdirSync(`/proc/${process.pid}/task`).map(Number));

  it('accepts the threads of the process itself', () => {
    const listed = tasks();
    expect(() =>
      verifyThreads(
        self,
        [...listed].map((tid, index) => ({ tid, role: 'emulator', index })),
        listed,
      ),
    ).not.toThrow();
  });

  it('refuses a tid missing from the list (another process), naming it', () => {
    const tid = other.pid as number;
    expect(() => verifyThreads(self, [{ tid, role: 'vcpu', index: 0 }], tasks())).toThrow(
      expect.objectContaining({ code: 'OPERATION_FAILED', details: expect.objectContaining({ tid }) }),
    );
  });

  it('still checks the owner: a list of a process whose start time changed is refused', () => {
    expect(() =>
      verifyThreads(
        { pid: self.pid, startTime: self.startTime + 1n },
        [{ tid: process.pid, role: 'vcpu', index: 0 }],
        tasks(),
      ),
    ).toThrow(expect.objectContaining({ code: 'OPERATION_FAILED' }));
  });

  it('refuses nonsense tids even when the list were to hold them', () => {
    expect(() => verifyThreads(self, [{ tid: 1.5, role: 'vcpu', index: 0 }], new Set([1.5]))).toThrow();
  });
});

describe('verifyThreadCount', () => {
  const one = [{ index: 0, tid: process.pid }];
  it('accepts exactly the definition', () => {
    expect(() => verifyThreadCount('vcpu', one, 1, { first: 0, limit: 1 })).not.toThrow();
  });
  it('refuses 200,000 vCPUs for a 1-vCPU domain', () => {
    const many = Array.from({ length: 200_000 }, (_, index) => ({ index, tid: process.pid }));
    expect(() => verifyThreadCount('vcpu', many, 1, { first: 0, limit: 1 })).toThrow(/200000 vcpu/);
  });
  it('refuses indices outside the definition and repeated ones', () => {
    expect(() => verifyThreadCount('vcpu', [{ index: 3, tid: 1 }], 1, { first: 0, limit: 1 })).toThrow(
      /outside/,
    );
    expect(() =>
      verifyThreadCount('iothread', [{ index: Number.NaN, tid: 1 }], 1, { first: 1, limit: 1 }),
    ).toThrow(/outside/);
    const twice = [
      { index: 0, tid: 1 },
      { index: 0, tid: 2 },
    ];
    expect(() => verifyThreadCount('vcpu', twice, 2, { first: 0, limit: 2 })).toThrow(/twice/);
  });
});

describe('the built-ins and post-checks check the tids themselves', () => {
  it('thread.setScheduler never touches a tid that is not a thread of the pid', () => {
    const tid = other.pid as number;
    expect(() =>
      builtins['thread.setScheduler'](
        { pid: process.pid, threads: [{ tid, role: 'vcpu', index: 0, policy: 'batch', priority: 0 }] },
        scope(process.pid, self.startTime),
      ),
    ).toThrow(expect.objectContaining({ code: 'OPERATION_FAILED' }));
    expect(schedGet(tid).policy).toBe('other');
  });

  it('thread.setScheduler refuses a pid other than the domain’s', () => {
    expect(() =>
      builtins['thread.setScheduler'](
        {
          pid: other.pid as number,
          threads: [{ tid: other.pid as number, role: 'vcpu', index: 0, policy: 'batch', priority: 0 }],
        },
        scope(process.pid, self.startTime),
      ),
    ).toThrow(/not the domain's QEMU pid/);
    expect(schedGet(other.pid as number).policy).toBe('other');
  });

  it('cgroup.placeThreads refuses a foreign tid before touching any cgroup', () => {
    const tid = other.pid as number;
    expect(() =>
      builtins['cgroup.placeThreads'](
        {
          pid: process.pid,
          threads: [{ tid, role: 'vcpu', index: 0 }],
          cpusets: { vcpus: [], iothreads: [] },
        },
        scope(process.pid, self.startTime),
      ),
    ).toThrow(expect.objectContaining({ code: 'OPERATION_FAILED' }));
  });

  it('the thread.setScheduler post-check refuses a foreign tid even when its policy matches', () => {
    const tid = other.pid as number;
    expect(() =>
      postchecks['thread.setScheduler'](
        { pid: process.pid, threads: [{ tid, role: 'vcpu', index: 0, policy: 'other', priority: 0 }] },
        undefined,
      ),
    ).toThrow(/not a thread of pid/);
  });

  it('the thread.setScheduler post-check refuses when the pid is no longer the process the handler was asked about', async () => {
    // The handler reports success for the process's own thread, already SCHED_OTHER, so every
    // per-thread reading matches; only the pid's recorded start time (as if QEMU had died and its
    // pid been reused while the handler ran) tells that the effect is not QEMU's.
    const s = scope(process.pid, self.startTime + 1n);
    let called = 0;
    s.handlers.set('thread.setScheduler', async () => {
      called++;
    });
    const args = {
      pid: process.pid,
      threads: [{ tid: process.pid, role: 'vcpu' as const, index: 0, policy: 'other' as const, priority: 0 }],
    };
    await expect(invoke(s, 'thread.setScheduler', 'startup', args)).rejects.toMatchObject({
      code: 'POSTCONDITION_FAILED',
      message: expect.stringMatching(/start time changed/),
    });
    expect(called).toBe(1);
    // The same call for the process as recorded passes: the check refuses only the replaced pid.
    const ok = scope(process.pid, self.startTime);
    ok.handlers.set('thread.setScheduler', async () => undefined);
    await expect(invoke(ok, 'thread.setScheduler', 'startup', args)).resolves.toBeUndefined();
  });
});

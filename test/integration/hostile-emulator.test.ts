/*
 * Fault injection: a hostile "emulator" on the inherited QMP socket (test/fixtures/hostile-emulator.mjs).
 * Every misbehaviour must end in a typed VirtError with nothing left behind: no process (forked
 * children included), no socket or status file, no cgroup directory, no descriptor.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openInternal } from '../../src/internal/index.js';
import type { Connection, DomainDefinitionInput } from '../../src/stable/index.js';
import { schedGet } from '../../src/util/libc.js';
import { openRoot, processesMentioning, recordEvents, removeRoot, tempRoot } from '../helpers/env.js';
import { fdCount, hostileEmulator, leftovers, NOTHING_LEFT, virtErrorOf } from '../helpers/hostile.js';

let root: string;
let conn: Connection;
let fdsBefore: number;
let n = 0;

beforeAll(async () => {
  root = tempRoot('vk-hostile-');
  conn = await openRoot(root);
  fdsBefore = fdCount();
});

afterAll(async () => {
  // A failing test must not leak hostile processes into the next run.
  for (const dom of await conn.listDomains())
    for (const pid of processesMentioning(dom.uuid)) process.kill(pid, 'SIGKILL');
  // No descriptor of any failed start may stay open in the driver's process.
  expect(fdCount()).toBeLessThanOrEqual(fdsBefore);
  await conn.close();
  removeRoot(root);
});

function hostile(mode: string, extra: Partial<DomainDefinitionInput> = {}): DomainDefinitionInput {
  n++;
  return {
    name: `hostile-${n}-${process.pid}`,
    type: 'qemu',
    memoryKiB: 64 * 1024,
    emulator: hostileEmulator(root, mode),
    ...extra,
  };
}

async function failedStart(mode: string, extra: Partial<DomainDefinitionInput> = {}) {
  const dom = await conn.defineDomain(hostile(mode, extra));
  const err = await virtErrorOf(() => dom.start({ paused: true }));
  expect((await dom.getInfo()).state).toBe('shutoff');
  expect(await leftovers(root, dom.uuid)).toEqual(NOTHING_LEFT);
  await dom.undefine();
  return err;
}

describe('a hostile emulator on the QMP socket', () => {
  it('sends garbage: typed error, nothing left', async () => {
    const err = await failedStart('garbage');
    expect(err.code).toBe('OPERATION_FAILED');
  });

  it('sends a 100 MB line: refused at the line limit, nothing left', async () => {
    const err = await failedStart('huge-line');
    expect(err.code).toBe('OPERATION_FAILED');
  });

  it('closes the connection in the middle of a command and stays alive: killed, nothing left', async () => {
    const err = await failedStart('close-mid-command');
    expect(['OPERATION_FAILED', 'CONNECTION_CLOSED']).toContain(err.code);
  });

  it('never greets: times out, nothing left', { timeout: 90_000 }, async () => {
    const err = await failedStart('no-greeting');
    expect(err.code).toBe('OPERATION_TIMEOUT');
  });

  it('goes silent after the capabilities: times out, nothing left', { timeout: 90_000 }, async () => {
    const err = await failedStart('silent-after-caps');
    expect(err.code).toBe('OPERATION_TIMEOUT');
  });

  it('forks a child that keeps serving the monitor and exits: the child is killed too', async () => {
    const err = await failedStart('fork-exit');
    expect(err.code).toBe('OPERATION_FAILED');
  });

  it('claims 200,000 vCPUs for a 1-vCPU domain: refused, never written to the status file', async () => {
    const err = await failedStart('many-vcpus');
    expect(err.code).toBe('OPERATION_FAILED');
    expect(err.message).toMatch(/200000 vcpu/);
  });

  describe('reports a foreign process as a vCPU thread', () => {
    let victim: ChildProcess;
    beforeAll(() => {
      victim = spawn('sleep', ['600'], { stdio: 'ignore' });
    });
    afterAll(() => {
      victim.kill('SIGKILL');
    });

    it('with vcpusched: the foreign process is never made real-time, the start fails', async () => {
      const pid = victim.pid as number;
      const err = await failedStart(`foreign-tid:${pid}`, {
        cputune: { vcpusched: [{ ids: '0', scheduler: 'fifo', priority: 1 }] },
      });
      expect(err.code).toBe('OPERATION_FAILED');
      expect(err.details).toMatchObject({ tid: pid });
      expect(schedGet(pid)).toEqual({ policy: 'other', priority: 0 });
    });

    it('with vcpupin: the foreign process is never moved into the domain cgroup', async () => {
      const pid = victim.pid as number;
      const before = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
      const err = await failedStart(`foreign-tid:${pid}`, {
        cputune: { vcpupin: [{ vcpu: 0, cpuset: '0' }] },
      });
      expect(err.code).toBe('OPERATION_FAILED');
      expect(readFileSync(`/proc/${pid}/cgroup`, 'utf8')).toBe(before);
    });

    it('a registered handler never sees the foreign tid', async () => {
      const pid = victim.pid as number;
      // Handlers are sealed once a driver has started a domain: a root of its own.
      const hroot = tempRoot('vk-hostile-h-');
      const hconn = await openRoot(hroot);
      try {
        const seen: number[] = [];
        const api = openInternal(hconn, { apiVersion: '1.0' });
        api.setHandler('thread.setScheduler', (_ctx, args) => {
          seen.push(...args.threads.map((t) => t.tid));
        });
        api.setHandler('cgroup.placeThreads', (_ctx, args) => {
          seen.push(...args.threads.map((t) => t.tid));
          return { placements: [] };
        });
        const dom = await hconn.defineDomain({
          ...hostile(`foreign-tid:${pid}`),
          emulator: hostileEmulator(hroot, `foreign-tid:${pid}`),
          cputune: {
            vcpupin: [{ vcpu: 0, cpuset: '0' }],
            vcpusched: [{ ids: '0', scheduler: 'rr', priority: 1 }],
          },
        });
        const err = await virtErrorOf(() => dom.start({ paused: true }));
        expect(err.code).toBe('OPERATION_FAILED');
        expect(seen).toEqual([]);
        expect(await leftovers(hroot, dom.uuid)).toEqual(NOTHING_LEFT);
      } finally {
        await hconn.close();
        removeRoot(hroot);
      }
    });
  });

  it('ignores SIGTERM and forks a child that does too: destroy kills the whole process group', async () => {
    const dom = await conn.defineDomain(hostile('fork-serve'));
    await dom.start({ paused: true });
    // The QEMU process and its child.
    expect(processesMentioning(dom.uuid).length).toBe(2);
    await dom.destroy({ graceMs: 500 });
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'destroyed' });
    expect(await leftovers(root, dom.uuid)).toEqual(NOTHING_LEFT);
    await dom.undefine();
  });

  it('crashes while its forked child lives on: crash handling kills the child too', async () => {
    const dom = await conn.defineDomain(hostile('fork-serve'));
    await dom.start({ paused: true });
    const { pid } = await dom.getInfo();
    const rec = recordEvents(conn);
    process.kill(pid as number, 'SIGKILL');
    await rec.next((e) => e.type === 'stopped' && e.domain.uuid === dom.uuid);
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'crashed' });
    // Shut off is reported only once nothing of the emulator is left.
    expect(processesMentioning(dom.uuid)).toEqual([]);
    expect(await leftovers(root, dom.uuid)).toEqual(NOTHING_LEFT);
    await dom.undefine();
  });
});

import { mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type InternalApi,
  type InvocationContext,
  openInternal,
  SIMULATED_PID_BASE,
  type SimulatedHost,
  simulatedHost,
} from '../../src/internal/index.js';
import { type Connection, connect, type DomainDefinitionInput } from '../../src/stable/index.js';

/*
 * Handler simulation in test:///default: registered handlers are called at the embedded driver's
 * phases, in its order, with a synthetic identity, and checked against a simulated process.
 */

let conn: Connection;
let api: InternalApi;
let host: SimulatedHost;
let dir: string;
let events: string[];

beforeEach(async () => {
  conn = await connect('test:///default');
  api = openInternal(conn, { apiVersion: '1.0' });
  host = simulatedHost(conn);
  dir = mkdtempSync(join(tmpdir(), 'vk-sim-'));
  events = [];
  conn.on('domain-event', (e) => events.push(`${e.type}:${e.reason}`));
});

afterEach(async () => {
  await conn.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A domain that needs every operation: disk, TAP, memlock, pinning, FIFO vCPUs, an iothread. */
function privileged(name: string, extra: Partial<DomainDefinitionInput> = {}): DomainDefinitionInput {
  const disk = join(dir, `${name}.img`);
  writeFileSync(disk, Buffer.alloc(4096));
  return {
    name,
    type: 'kvm',
    memoryKiB: 64 * 1024,
    vcpu: { count: 2 },
    iothreads: 1,
    memtune: { hardLimitKiB: 16 * 1024 },
    cputune: {
      vcpupin: [
        { vcpu: 0, cpuset: '0' },
        { vcpu: 1, cpuset: '1' },
      ],
      emulatorpin: { cpuset: '0-1' },
      vcpusched: [{ ids: '0-1', scheduler: 'fifo', priority: 1 }],
      iothreadsched: [{ ids: '1', scheduler: 'rr', priority: 2 }],
    },
    disks: [{ type: 'file', source: disk, target: { dev: 'vda', bus: 'virtio' } }],
    interfaces: [{ type: 'ethernet', target: { dev: 'vnet-sim0' } }],
    ...extra,
  };
}

interface Call {
  op: string;
  phase: string;
  pid: number | undefined;
  id: number | null;
  args: unknown;
  alive?: boolean;
}

/** Handlers that do their work on the simulated host, as an agent would on the real one. */
function workingHandlers(calls: Call[]): void {
  const rec = (op: string, ctx: InvocationContext, args: unknown) =>
    calls.push({ op, phase: ctx.phase, pid: ctx.pid, id: ctx.domain.id, args });
  api.setHandler('storage.openFile', (ctx, args) => {
    rec('storage.openFile', ctx, args);
    return { fd: openSync(args.path, args.mode === 'r' ? 'r' : 'r+') };
  });
  api.setHandler('net.openTap', (ctx, args) => {
    rec('net.openTap', ctx, args);
    // No TAP without root: any open descriptor stands for it in the simulation.
    return { ifname: args.ifname ?? 'tap0', fds: [openSync('/dev/null', 'r')] };
  });
  api.setHandler('process.setMaxMemLock', (ctx, args) => {
    rec('process.setMaxMemLock', ctx, args);
    host.setMemLock(args.pid, { soft: args.bytes, hard: args.bytes });
  });
  api.setHandler('cgroup.placeThreads', (ctx, args) => {
    rec('cgroup.placeThreads', ctx, args);
    const placements = args.threads.map((t) => ({
      tid: t.tid,
      cgroup: `/agent/${ctx.domain.uuid}/${t.role === 'emulator' ? 'housekeeping' : `${t.role}${t.index}`}`,
    }));
    for (const p of placements) host.placeThread(p.tid, p.cgroup);
    return { placements };
  });
  api.setHandler('thread.setScheduler', (ctx, args) => {
    rec('thread.setScheduler', ctx, args);
    for (const t of args.threads) host.setScheduler(t.tid, t.policy, t.priority);
  });
  api.setHandler('cgroup.release', (ctx, args) => {
    calls.push({
      op: 'cgroup.release',
      phase: ctx.phase,
      pid: ctx.pid,
      id: ctx.domain.id,
      args,
      alive: host.process(args.pid) !== undefined,
    });
  });
}

describe('handlers are invoked as the embedded driver invokes them', () => {
  it('at its phases, in its order, with the documented synthetic identity, checked on the simulated process', async () => {
    const calls: Call[] = [];
    workingHandlers(calls);
    const dom = await conn.defineDomain(privileged('ordered'));
    await dom.start({ paused: true });
    const info = await dom.getInfo();
    const pid = SIMULATED_PID_BASE + 1 * 1000;
    expect(info).toMatchObject({ state: 'paused', id: 1, pid, taints: ['internal-handler'] });

    // The same sequence as test/integration/internal-handlers.test.ts expects of the embedded driver.
    expect(calls.map((c) => `${c.phase}:${c.op}`)).toEqual([
      'pre-exec:storage.openFile',
      'pre-exec:net.openTap',
      'pre-exec:process.setMaxMemLock',
      'startup:cgroup.placeThreads',
      'startup:thread.setScheduler',
    ]);
    // First pre-exec moment: no process and no id yet; then the final pid.
    expect(calls.slice(0, 2).map((c) => [c.pid, c.id])).toEqual([
      [undefined, null],
      [undefined, null],
    ]);
    expect(calls.slice(2).map((c) => [c.pid, c.id])).toEqual([
      [pid, 1],
      [pid, 1],
      [pid, 1],
    ]);
    expect(calls[0]?.args).toEqual({ path: join(dir, 'ordered.img'), mode: 'rw' });
    expect(calls[1]?.args).toEqual({ ifname: 'vnet-sim0', queues: 1, vnetHdr: true, managed: true });
    expect(calls[2]?.args).toMatchObject({
      pid,
      bytes: 16n * 1024n * 1024n,
      current: { soft: 8n * 1024n * 1024n, hard: 8n * 1024n * 1024n },
      breakdown: { rule: 'hard_limit' },
    });
    expect(calls[3]?.args).toEqual({
      pid,
      threads: [
        { tid: pid + 10, role: 'vcpu', index: 0 },
        { tid: pid + 11, role: 'vcpu', index: 1 },
        { tid: pid + 501, role: 'iothread', index: 1 },
        { tid: pid, role: 'emulator', index: 0 },
        { tid: pid + 1, role: 'emulator', index: 0 },
      ],
      cpusets: {
        emulator: '0-1',
        vcpus: [
          { index: 0, cpuset: '0' },
          { index: 1, cpuset: '1' },
        ],
        iothreads: [],
      },
    });
    expect(calls[4]?.args).toEqual({
      pid,
      threads: [
        { tid: pid + 10, role: 'vcpu', index: 0, policy: 'fifo', priority: 1 },
        { tid: pid + 11, role: 'vcpu', index: 1, policy: 'fifo', priority: 1 },
        { tid: pid + 501, role: 'iothread', index: 1, policy: 'rr', priority: 2 },
      ],
    });

    const proc = host.process(pid);
    expect(proc?.memlock).toEqual({ soft: 16n * 1024n * 1024n, hard: 16n * 1024n * 1024n });
    expect(proc?.threads.find((t) => t.tid === pid + 11)).toMatchObject({
      policy: 'fifo',
      priority: 1,
      cgroup: `/agent/${dom.uuid}/vcpu1`,
    });
    expect(proc?.threads.find((t) => t.tid === pid)?.cgroup).toBe(`/agent/${dom.uuid}/housekeeping`);
    expect(host.log(dom.uuid)).toEqual([
      expect.stringMatching(/^internal: storage\.openFile phase=pre-exec via=setHandler [\d.]+ms ok$/),
      expect.stringMatching(/^internal: net\.openTap phase=pre-exec via=setHandler [\d.]+ms ok$/),
      expect.stringMatching(/^internal: process\.setMaxMemLock phase=pre-exec via=setHandler [\d.]+ms ok$/),
      expect.stringMatching(/^internal: cgroup\.placeThreads phase=startup via=setHandler [\d.]+ms ok$/),
      expect.stringMatching(/^internal: thread\.setScheduler phase=startup via=setHandler [\d.]+ms ok$/),
    ]);

    // Release: after the process has gone, with what placeThreads returned.
    await dom.destroy();
    const release = calls.at(-1);
    expect(release).toMatchObject({ op: 'cgroup.release', phase: 'release', pid, id: 1, alive: false });
    expect((release?.args as { placements?: unknown[] } | undefined)?.placements).toHaveLength(5);
    expect(host.process(pid)).toBeUndefined();
    expect(events).toEqual(['defined:added', 'started:booted', 'suspended:user', 'stopped:destroyed']);
  });

  it('without handlers, simulated built-ins do the same work and nothing is tainted', async () => {
    const dom = await conn.defineDomain(privileged('builtin'));
    await dom.start({ paused: true });
    const { pid, taints } = await dom.getInfo();
    expect(taints).toEqual([]);
    const proc = host.process(pid as number);
    expect(proc?.memlock.soft).toBe(16n * 1024n * 1024n);
    expect(proc?.threads.find((t) => t.role === 'vcpu')).toMatchObject({
      policy: 'fifo',
      priority: 1,
      cgroup: `/virtkit/vk-${dom.uuid}/vcpu0`,
    });
    expect(host.log(dom.uuid)).toContainEqual(
      expect.stringMatching(/^internal: cgroup\.placeThreads phase=startup via=built-in [\d.]+ms ok$/),
    );
  });

  it('skips memlock when the simulated limit (8 MiB) already covers the need', async () => {
    let called = false;
    api.setHandler('process.setMaxMemLock', () => {
      called = true;
    });
    const dom = await conn.defineDomain({
      name: 'covered',
      type: 'kvm',
      memoryKiB: 65536,
      memtune: { hardLimitKiB: 4096 },
    });
    await dom.start({ paused: true });
    expect(called).toBe(false);
    expect(host.log(dom.uuid)).toEqual([expect.stringMatching(/process\.setMaxMemLock skipped/)]);
  });
});

describe('failures roll the domain back with the embedded driver codes', () => {
  async function expectFailure(def: DomainDefinitionInput, code: string) {
    const dom = await conn.defineDomain(def);
    const err = await dom.start({ paused: true }).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'VirtError', code });
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'failed', id: null, pid: null });
    return err as Error & { details: Record<string, unknown>; cause?: unknown };
  }

  it('a handler that lies (success without the effect): POSTCONDITION_FAILED, placements released', async () => {
    const released: unknown[] = [];
    api.setHandler('thread.setScheduler', () => undefined);
    api.setHandler('cgroup.release', (_ctx, args) => {
      released.push(...args.placements);
    });
    const err = await expectFailure(privileged('liar'), 'POSTCONDITION_FAILED');
    expect(err.message).toMatch(/thread\.setScheduler .*runs other\/0, not fifo\/1/);
    // The simulated built-in placed five threads; the rollback gave them back, then the process went.
    expect(released).toHaveLength(5);
    expect(host.process(SIMULATED_PID_BASE + 1000)).toBeUndefined();
    expect(events).toEqual(['defined:added', 'stopped:failed']);
  });

  it('a handler that throws before any process exists: HANDLER_FAILED with its cause, no event, no id used', async () => {
    api.setHandler('storage.openFile', () => {
      throw new Error('no disk for you');
    });
    const err = await expectFailure(privileged('thrower'), 'HANDLER_FAILED');
    expect(err.details).toMatchObject({ operation: 'storage.openFile', phase: 'pre-exec' });
    expect((err.cause as Error).message).toBe('no disk for you');
    expect(events).toEqual(['defined:added']);
    const dom = await conn.defineDomain({ name: 'next', type: 'kvm', memoryKiB: 65536 });
    await dom.start();
    expect((await dom.getInfo()).id).toBe(1);
  });

  it('a handler that hangs: OPERATION_TIMEOUT at its deadline, its signal aborted', async () => {
    let seen: { signal: AbortSignal; deadline: number; at: number } | undefined;
    api.setHandler(
      'thread.setScheduler',
      (ctx) => {
        seen = { signal: ctx.signal, deadline: ctx.deadline, at: Date.now() };
        return new Promise<undefined>(() => {});
      },
      { timeoutMs: 50 },
    );
    const err = await expectFailure(privileged('hangs'), 'OPERATION_TIMEOUT');
    expect(err.details).toMatchObject({ operation: 'thread.setScheduler', phase: 'startup' });
    expect(seen?.signal.aborted).toBe(true);
    expect((seen?.deadline ?? 0) - (seen?.at ?? 0)).toBeLessThanOrEqual(50);
  });

  it('a malformed result: HANDLER_FAILED naming the field', async () => {
    api.setHandler('cgroup.placeThreads', () => ({ placements: 'everywhere' }) as never);
    const err = await expectFailure(privileged('garbage'), 'HANDLER_FAILED');
    expect(err.message).toMatch(/malformed result \(placements:/);
  });

  it('a descriptor that is not open: POSTCONDITION_FAILED', async () => {
    api.setHandler('storage.openFile', () => ({ fd: 987_654 }));
    const err = await expectFailure(privileged('badfd'), 'POSTCONDITION_FAILED');
    expect(err.message).toMatch(/fd 987654 is not an open descriptor/);
  });

  it('destroy during a hung startup handler: the handler is aborted, the start fails, destroy returns', async () => {
    let entered!: () => void;
    const inHandler = new Promise<void>((r) => {
      entered = r;
    });
    let signal: AbortSignal | undefined;
    api.setHandler(
      'thread.setScheduler',
      (ctx) => {
        signal = ctx.signal;
        entered();
        return new Promise<undefined>(() => {});
      },
      { timeoutMs: 60_000 },
    );
    const dom = await conn.defineDomain(privileged('stuck'));
    const starting = dom.start({ paused: true }).catch((e: unknown) => e);
    await inHandler;
    // As the embedded driver: the simulated process exists, its vCPUs have not run.
    expect(await dom.getState()).toEqual({ state: 'paused', reason: 'starting-up' });
    await dom.destroy();
    expect(signal?.aborted).toBe(true);
    expect(await starting).toMatchObject({ name: 'VirtError', code: 'OPERATION_FAILED' });
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', pid: null });
  });
});

it('simulatedHost refuses a connection to the embedded driver', async () => {
  const root = mkdtempSync(join(tmpdir(), 'vk-sim-root-'));
  const embedded = await connect(`qemu:///embed?root=${root}`);
  try {
    expect(() => simulatedHost(embedded)).toThrow(expect.objectContaining({ code: 'OPERATION_INVALID' }));
  } finally {
    await embedded.close();
    rmSync(root, { recursive: true, force: true });
  }
});

// The example of the README, verbatim but for the imports.
it('README: raises memlock before QEMU runs, and a failing agent fails the start cleanly', async () => {
  const conn = await connect('test:///default');
  const host = simulatedHost(conn);
  const calls: string[] = [];
  const agent = { up: true };
  openInternal(conn, { apiVersion: '1.0' }).setHandler('process.setMaxMemLock', (ctx, args) => {
    calls.push(`${ctx.phase} ${args.pid} ${args.bytes}`);
    if (!agent.up) throw new Error('agent unreachable');
    host.setMemLock(args.pid, { soft: args.bytes, hard: args.bytes }); // your agent's effect
  });
  const dom = await conn.defineDomain({
    name: 'vm',
    type: 'kvm',
    memoryKiB: 65536,
    memtune: { hardLimitKiB: 65536 },
  });
  await dom.start({ paused: true });
  const { pid, taints } = await dom.getInfo();
  expect(calls).toEqual([`pre-exec ${pid} ${64n * 1024n * 1024n}`]);
  expect(host.process(pid as number)?.memlock.soft).toBe(64n * 1024n * 1024n);
  expect(taints).toContain('internal-handler');

  await dom.destroy();
  agent.up = false;
  await expect(dom.start()).rejects.toMatchObject({ code: 'HANDLER_FAILED' });
  expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'failed', pid: null });
  await conn.close();
});

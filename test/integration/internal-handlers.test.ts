import { existsSync, readdirSync, readFileSync, readlinkSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { QmpClient } from '../../src/drivers/qemu/qmp/client.js';
import { type InternalApi, openInternal } from '../../src/internal/index.js';
import { threadGroups } from '../../src/privileged/builtins.js';
import type { Connection, DomainDefinitionInput } from '../../src/stable/index.js';
import { detectCgroupMode, placeThreads, releaseCgroups, threadCgroup } from '../../src/util/cgroup.js';
import { prlimitGet, prlimitSet, RLIMIT, schedGet, schedSet } from '../../src/util/libc.js';
import { readProcExe, readProcLimits, readThreadComm } from '../../src/util/proc.js';
import { openTap } from '../../src/util/tap.js';
import {
  alive,
  openRoot,
  pausedOnly,
  processesMentioning,
  removeRoot,
  runLeftovers,
  tempRoot,
} from '../helpers/env.js';

let root: string;
let conn: Connection;
let internal: InternalApi;
const MiB = 1024n * 1024n;
const ownLimit = prlimitGet(process.pid, RLIMIT.MEMLOCK);

beforeEach(async () => {
  root = tempRoot();
  conn = await openRoot(root);
  internal = openInternal(conn, { apiVersion: '1.0' });
});

afterEach(async () => {
  prlimitSet(process.pid, RLIMIT.MEMLOCK, ownLimit);
  for (const dom of await conn.listDomains({ state: 'active' })) await dom.destroy({ graceMs: 1000 });
  await conn.close();
  removeRoot(root);
});

const cpusetRoot = '/sys/fs/cgroup/cpuset';

afterAll(() => {
  // The handlers' shared parent; the driver's own parent (virtkit) stays, like libvirt's machine.slice.
  const dir = join(cpusetRoot, `virtkit-test-${process.pid}`);
  if (existsSync(dir)) rmdirSync(dir);
});
const domainCgroupDir = (parent: string, uuid: string) => join(cpusetRoot, parent, `vk-${uuid}`);

/**
 * The domain of the ordering test: locked-memory limit from memtune (small, so it fits under this
 * machine's 8 MiB ceiling), both vCPUs pinned and SCHED_FIFO, emulator threads in a housekeeping
 * cpuset, a disk, a TAP, and a second QMP monitor the handlers use to look at QEMU themselves.
 * It is only ever started paused: FIFO on an idle vCPU is harmless, on a busy one it is not.
 */
function privilegedGuest(name: string): DomainDefinitionInput {
  const disk = join(root, 'lib', `${name}.img`);
  writeFileSync(disk, Buffer.alloc(1024 * 1024));
  return pausedOnly(name, {
    vcpu: { count: 2 },
    memtune: { hardLimitKiB: 4096 },
    cputune: {
      vcpupin: [
        { vcpu: 0, cpuset: '0' },
        { vcpu: 1, cpuset: '1' },
      ],
      emulatorpin: { cpuset: '0-1' },
      vcpusched: [{ ids: '0-1', scheduler: 'fifo', priority: 1 }],
    },
    disks: [{ type: 'file', source: disk, target: { dev: 'vda', bus: 'virtio' } }],
    interfaces: [{ type: 'ethernet', target: { dev: `vkt${process.pid % 10000}` } }],
    qemuCommandline: { args: ['-qmp', `unix:${join(root, 'lib', 'probe.qmp')},server=on,wait=off`] },
  });
}

/** Lowers this process's soft limit so the stub inherits one below the domain's 4 MiB need. */
function lowerOwnMemLock(): void {
  prlimitSet(process.pid, RLIMIT.MEMLOCK, { soft: MiB, hard: ownLimit.hard });
}

async function probeStatus(): Promise<string> {
  const qmp = await QmpClient.connect(join(root, 'lib', 'probe.qmp'), { timeoutMs: 5000 });
  try {
    return (await qmp.execute<{ status: string }>('query-status')).status;
  } finally {
    qmp.close();
  }
}

interface Call {
  op: string;
  phase: string;
  pid: number | undefined;
  domain: { uuid: string; name: string; id: number | null };
  note?: unknown;
}

/** The n-th recorded call, failing the test when there is none. */
function nth(calls: Call[], n: number): Call {
  const call = calls[n];
  if (!call) throw new Error(`only ${calls.length} calls recorded, wanted #${n}`);
  return call;
}

/** Handlers that record every invocation and do the real work, as a privileged agent would. */
function registerWorkingHandlers(api: InternalApi, calls: Call[], cgroupParent: string): void {
  const rec = (
    op: string,
    ctx: { phase: string; pid: number | undefined; domain: Call['domain'] },
    note?: unknown,
  ) => calls.push({ op, phase: ctx.phase, pid: ctx.pid, domain: { ...ctx.domain }, note });
  api.setHandler('storage.openFile', (ctx, args) => {
    rec('storage.openFile', ctx, args.path);
    return { fd: Number(require('node:fs').openSync(args.path, args.mode === 'r' ? 'r' : 'r+')) };
  });
  api.setHandler('net.openTap', (ctx, args) => {
    rec('net.openTap', ctx, args.ifname);
    return openTap(args.ifname, { queues: args.queues, vnetHdr: args.vnetHdr });
  });
  api.setHandler('process.setMaxMemLock', (ctx, args) => {
    // Which program is the process right now? The stub (a shell), not yet QEMU.
    rec('process.setMaxMemLock', ctx, {
      exe: readProcExe(args.pid),
      bytes: args.bytes,
      rule: args.breakdown.rule,
    });
    prlimitSet(args.pid, RLIMIT.MEMLOCK, { soft: args.bytes, hard: args.bytes });
  });
  api.setHandler('cgroup.placeThreads', async (ctx, args) => {
    rec('cgroup.placeThreads', ctx, {
      status: await probeStatus(),
      threads: args.threads,
      cpusets: args.cpusets,
    });
    const { placements } = placeThreads({
      parent: cgroupParent,
      name: `vk-${ctx.domain.uuid}`,
      pid: args.pid,
      groups: threadGroups(args, 'housekeeping'),
    });
    return { placements };
  });
  api.setHandler('thread.setScheduler', async (ctx, args) => {
    rec('thread.setScheduler', ctx, { status: await probeStatus(), threads: args.threads });
    for (const t of args.threads) schedSet(t.tid, t.policy, t.priority);
  });
  api.setHandler('cgroup.release', (ctx, args) => {
    rec('cgroup.release', ctx, { alive: alive(args.pid), placements: args.placements.length });
    releaseCgroups({ parent: cgroupParent, name: `vk-${ctx.domain.uuid}` });
  });
}

/** The effects, read from outside: limits, scheduler per vCPU, cgroup per thread, inherited fds. */
function verifyEffects(
  pid: number,
  vcpuTids: number[],
  expectCgroup: (tid: number) => string,
  disk: string,
): void {
  const limit = readProcLimits(pid).get('Max locked memory');
  expect(limit).toMatchObject({ soft: 4n * MiB, hard: 4n * MiB });
  for (const tid of vcpuTids) expect(schedGet(tid)).toEqual({ policy: 'fifo', priority: 1 });
  for (const tid of readdirSync(`/proc/${pid}/task`).map(Number)) {
    expect(threadCgroup(pid, tid, 'v1-cpuset')).toBe(expectCgroup(tid));
  }
  const fds = readdirSync(`/proc/${pid}/fd`).map((fd) => readlinkSync(`/proc/${pid}/fd/${fd}`));
  expect(fds).toContain(disk);
  expect(fds).toContain('/dev/net/tun');
}

/** The vCPU threads as QEMU names them (debug-threads=on), to compare with what QMP reported. */
function vcpuThreadsByName(pid: number): Map<number, number> {
  const byIndex = new Map<number, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`).map(Number)) {
    const m = /^CPU (\d+)\//.exec(readThreadComm(pid, tid) ?? '');
    if (m) byIndex.set(Number(m[1]), tid);
  }
  return byIndex;
}

describe('ordering, identity and effects of privileged operations', () => {
  it('with handlers that do the work: each at its phase, with the right identity, checked from outside', async () => {
    expect(detectCgroupMode()).toBe('v1-cpuset');
    const calls: Call[] = [];
    const parent = `virtkit-test-${process.pid}`;
    registerWorkingHandlers(internal, calls, parent);
    const dom = await conn.defineDomain(privilegedGuest('ordered'));
    lowerOwnMemLock();
    await dom.start({ paused: true });
    const info = await dom.getInfo();
    const pid = info.pid as number;

    expect(calls.map((c) => `${c.phase}:${c.op}`)).toEqual([
      'pre-exec:storage.openFile',
      'pre-exec:net.openTap',
      'pre-exec:process.setMaxMemLock',
      'startup:cgroup.placeThreads',
      'startup:thread.setScheduler',
    ]);
    for (const c of calls) expect(c.domain).toMatchObject({ uuid: dom.uuid, name: 'ordered' });
    // First pre-exec moment: no process yet. Second: the final pid, still the stub, not QEMU.
    expect(calls[0]?.pid).toBeUndefined();
    expect(calls[0]?.domain.id).toBeNull();
    const memlock = nth(calls, 2);
    expect(memlock.pid).toBe(pid);
    expect(memlock.domain.id).toBe(info.id);
    expect(memlock.note).toMatchObject({ bytes: 4n * MiB, rule: 'hard_limit' });
    expect((memlock.note as { exe: string }).exe).not.toMatch(/qemu/);
    expect(readProcExe(pid)).toBe('/usr/bin/qemu-system-x86_64');

    // Startup: no vCPU had run, and the vCPU thread ids are those QEMU itself names CPU n/…
    const place = nth(calls, 3).note as {
      status: string;
      threads: Array<{ tid: number; role: string; index: number }>;
    };
    expect(place.status).toBe('prelaunch');
    expect((nth(calls, 4).note as { status: string }).status).toBe('prelaunch');
    const byName = vcpuThreadsByName(pid);
    const vcpus = place.threads.filter((t) => t.role === 'vcpu');
    expect(vcpus.map((t) => [t.index, t.tid])).toEqual([...byName.entries()].sort((a, b) => a[0] - b[0]));
    expect(place.threads.filter((t) => t.role === 'emulator').map((t) => t.tid)).toContain(pid);
    expect(new Set(place.threads.map((t) => t.tid))).toEqual(
      new Set(readdirSync(`/proc/${pid}/task`).map(Number)),
    );

    const vcpuTids = vcpus.map((t) => t.tid);
    verifyEffects(
      pid,
      vcpuTids,
      (tid) =>
        `/${parent}/vk-${dom.uuid}/${vcpuTids.includes(tid) ? `vcpu${vcpus.find((v) => v.tid === tid)?.index}` : 'housekeeping'}`,
      join(root, 'lib', 'ordered.img'),
    );
    expect(
      readFileSync(join(cpusetRoot, parent, `vk-${dom.uuid}`, 'vcpu1', 'cpuset.cpus'), 'utf8').trim(),
    ).toBe('1');

    expect(info.taints).toEqual(expect.arrayContaining(['custom-argv', 'internal-handler']));
    const log = readFileSync(join(root, 'log', 'ordered.log'), 'utf8');
    expect(log).toMatch(/internal: process\.setMaxMemLock phase=pre-exec via=setHandler [\d.]+ms ok/);
    expect(log).toMatch(/internal: thread\.setScheduler phase=startup via=setHandler [\d.]+ms ok/);

    // Taint survives a reconnect.
    await conn.close();
    conn = await openRoot(root);
    const again = await conn.lookupDomain('ordered');
    expect((await again.getInfo()).taints).toContain('internal-handler');
    // Release runs after exit (placements came back through the status file).
    await again.destroy();
    // The new driver has no handlers, so its built-in release removes the driver's own groups only;
    // the handler's groups stay until its owner removes them — which the first driver would have done.
    expect(alive(pid)).toBe(false);
    // The zombie stays in its cgroup until its parent (this test process) has reaped it.
    while (existsSync(`/proc/${pid}`)) await new Promise((r) => setTimeout(r, 10));
    releaseCgroups({ parent, name: `vk-${dom.uuid}` });
  });

  it('release runs through the handler after QEMU exited', async () => {
    const calls: Call[] = [];
    const parent = `virtkit-test-${process.pid}`;
    registerWorkingHandlers(internal, calls, parent);
    const dom = await conn.defineDomain(privilegedGuest('released'));
    await dom.start({ paused: true });
    const { pid } = await dom.getInfo();
    await dom.destroy();
    const release = nth(
      calls.filter((c) => c.op === 'cgroup.release'),
      0,
    );
    expect(release).toMatchObject({ phase: 'release', pid, note: { alive: false } });
    expect((release.note as { placements: number }).placements).toBeGreaterThan(2);
    expect(existsSync(domainCgroupDir(parent, dom.uuid))).toBe(false);
    expect(runLeftovers(root)).toEqual([]);
  });

  it('with the built-in fallbacks: the same effects, no taint', async () => {
    const dom = await conn.defineDomain(privilegedGuest('builtin'));
    lowerOwnMemLock();
    await dom.start({ paused: true });
    const info = await dom.getInfo();
    const pid = info.pid as number;
    const byName = vcpuThreadsByName(pid);
    const vcpuTids = [...byName.values()];
    verifyEffects(
      pid,
      vcpuTids,
      (tid) =>
        `/virtkit/vk-${dom.uuid}/${vcpuTids.includes(tid) ? `vcpu${[...byName.entries()].find(([, t]) => t === tid)?.[0]}` : 'emulator'}`,
      join(root, 'lib', 'builtin.img'),
    );
    expect(info.taints).toEqual(['custom-argv']);
    expect(readFileSync(join(root, 'log', 'builtin.log'), 'utf8')).toMatch(
      /internal: cgroup\.placeThreads phase=startup via=built-in [\d.]+ms ok/,
    );
    await dom.destroy();
    expect(existsSync(domainCgroupDir('virtkit', dom.uuid))).toBe(false);
  });

  it('skips the memlock operation when the current limit already covers the need', async () => {
    const calls: Call[] = [];
    internal.setHandler('process.setMaxMemLock', (ctx) => {
      calls.push({ op: 'memlock', phase: ctx.phase, pid: ctx.pid, domain: ctx.domain });
    });
    const dom = await conn.defineDomain(pausedOnly('covered', { memtune: { hardLimitKiB: 4096 } }));
    await dom.start({ paused: true });
    expect(calls).toEqual([]);
    expect(readFileSync(join(root, 'log', 'covered.log'), 'utf8')).toMatch(/process\.setMaxMemLock skipped/);
    expect((await dom.getInfo()).taints).toEqual([]);
  });
});

describe('registration rules', () => {
  it('refuses a second handler, an unknown operation and, once a domain started, any handler', async () => {
    internal.setHandler('thread.setScheduler', () => undefined);
    expect(() => internal.setHandler('thread.setScheduler', () => undefined)).toThrow(
      expect.objectContaining({ code: 'HANDLER_ALREADY_REGISTERED' }),
    );
    // A second openInternal on the same driver sees the same table.
    const other = openInternal(conn, { apiVersion: '1.0' });
    expect(other.hasHandler('thread.setScheduler')).toBe(true);
    expect(() => other.setHandler('thread.setScheduler', () => undefined)).toThrow(
      expect.objectContaining({ code: 'HANDLER_ALREADY_REGISTERED' }),
    );
    expect(() => internal.setHandler('no.such' as 'cgroup.release', () => undefined)).toThrow(
      expect.objectContaining({ code: 'CONFIG_UNSUPPORTED' }),
    );
    const dom = await conn.defineDomain(pausedOnly('sealer'));
    await dom.start({ paused: true });
    expect(internal.sealed).toBe(true);
    expect(() => internal.setHandler('cgroup.release', () => undefined)).toThrow(
      expect.objectContaining({ code: 'HANDLERS_SEALED' }),
    );
  });

  it('fails the handshake at once for another version, and on a closed connection', async () => {
    for (const apiVersion of ['1.1', '2.0', '0.9', '1', '1.0.1', '', undefined]) {
      expect(() => openInternal(conn, { apiVersion } as never)).toThrow(
        expect.objectContaining({ code: 'INTERNAL_VERSION_MISMATCH' }),
      );
    }
    const err = (() => {
      try {
        openInternal(conn, { apiVersion: '1.1' as '1.0' });
      } catch (e) {
        return e as Error;
      }
    })();
    expect(err?.message).toMatch(/"1\.1".*internal API 1\.0.*CHANGELOG/);
    await conn.close();
    expect(() => openInternal(conn, { apiVersion: '1.0' })).toThrow(
      expect.objectContaining({ code: 'OPERATION_INVALID' }),
    );
    conn = await openRoot(root);
  });
});

describe('static plugins', () => {
  const plugin = (dir: string, apiVersion: string) => {
    const path = join(dir, `plugin-${apiVersion}.mjs`);
    writeFileSync(
      path,
      `export const virtkitPlugin = {
        apiVersion: '${apiVersion}',
        register(api) {
          api.setHandler('thread.setScheduler', async () => { globalThis.__vkPluginCalls = (globalThis.__vkPluginCalls ?? 0) + 1; });
        },
      };\n`,
    );
    return path;
  };

  it('supplies handlers from connect() options and from <root>/etc/virtkit.json', async () => {
    await conn.close();
    const path = plugin(join(root, 'lib'), '1.0');
    conn = await (await import('../../src/stable/index.js')).connect(`qemu:///embed?root=${root}`, {
      plugins: [path],
    });
    const api = openInternal(conn, { apiVersion: '1.0' });
    expect(api.hasHandler('thread.setScheduler')).toBe(true);
    expect(() => api.setHandler('thread.setScheduler', () => undefined)).toThrow(
      /already registered \(by plugin/,
    );
    await conn.close();

    writeFileSync(join(root, 'etc', 'virtkit.json'), JSON.stringify({ plugins: [path] }));
    conn = await openRoot(root);
    expect(openInternal(conn, { apiVersion: '1.0' }).hasHandler('thread.setScheduler')).toBe(true);
  });

  it('refuses a plugin written against another internal version, and a malformed config', async () => {
    await conn.close();
    const { connect } = await import('../../src/stable/index.js');
    await expect(
      connect(`qemu:///embed?root=${root}`, { plugins: [plugin(join(root, 'lib'), '1.1')] }),
    ).rejects.toMatchObject({ code: 'INTERNAL_VERSION_MISMATCH' });
    writeFileSync(join(root, 'etc', 'virtkit.json'), '{"plugins": [42]}');
    await expect(openRoot(root)).rejects.toMatchObject({ code: 'XML_ERROR' });
    writeFileSync(join(root, 'etc', 'virtkit.json'), '{}');
    // The failed opens released the root's lock.
    conn = await openRoot(root);
  });
});

describe('faulty handlers fail the start cleanly', () => {
  async function expectCleanFailure(name: string, code: string, extra: Partial<DomainDefinitionInput> = {}) {
    const dom = await conn.defineDomain(
      pausedOnly(name, {
        vcpu: { count: 2 },
        cputune: {
          vcpupin: [{ vcpu: 0, cpuset: '0' }],
          vcpusched: [{ ids: '0', scheduler: 'fifo', priority: 1 }],
        },
        ...extra,
      }),
    );
    const err = await dom.start({ paused: true }).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'VirtError', code });
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'failed', pid: null });
    expect(runLeftovers(root)).toEqual([]);
    expect(processesMentioning(dom.uuid)).toEqual([]);
    expect(existsSync(domainCgroupDir('virtkit', dom.uuid))).toBe(false);
    return err as Error & { details: Record<string, unknown>; cause?: unknown };
  }

  it('a handler that throws: HANDLER_FAILED with the cause, QEMU killed, cgroups released', async () => {
    internal.setHandler('thread.setScheduler', () => {
      throw new Error('agent exploded');
    });
    const err = await expectCleanFailure('throws', 'HANDLER_FAILED');
    expect(err.details).toMatchObject({ operation: 'thread.setScheduler', phase: 'startup' });
    expect((err.cause as Error).message).toBe('agent exploded');
  });

  it('a handler that rejects in pre-exec, before any process exists', async () => {
    internal.setHandler('storage.openFile', async () => Promise.reject(new Error('no disk for you')));
    const disk = join(root, 'lib', 'd.img');
    writeFileSync(disk, Buffer.alloc(4096));
    const err = await expectCleanFailure('rejects', 'HANDLER_FAILED', {
      disks: [{ type: 'file', source: disk, target: { dev: 'vda', bus: 'virtio' } }],
    });
    expect(err.details).toMatchObject({ operation: 'storage.openFile', phase: 'pre-exec' });
  });

  it('a handler that hangs: OPERATION_TIMEOUT at its deadline, its signal aborted', async () => {
    let signal: AbortSignal | undefined;
    internal.setHandler(
      'thread.setScheduler',
      (ctx) => {
        signal = ctx.signal;
        return new Promise<undefined>(() => {});
      },
      { timeoutMs: 300 },
    );
    const err = await expectCleanFailure('hangs', 'OPERATION_TIMEOUT');
    expect(err.details).toMatchObject({ operation: 'thread.setScheduler' });
    expect(signal?.aborted).toBe(true);
  });

  it('destroy ends a start stuck in a handler: the handler is aborted, the start fails, nothing is left', async () => {
    let entered!: () => void;
    const inHandler = new Promise<void>((r) => {
      entered = r;
    });
    let signal: AbortSignal | undefined;
    internal.setHandler(
      'thread.setScheduler',
      (ctx) => {
        signal = ctx.signal;
        entered();
        return new Promise<undefined>(() => {});
      },
      { timeoutMs: 60_000 },
    );
    const dom = await conn.defineDomain(
      pausedOnly('stuck', { cputune: { vcpusched: [{ ids: '0', scheduler: 'fifo', priority: 1 }] } }),
    );
    const starting = dom.start({ paused: true }).catch((e: unknown) => e);
    await inHandler;
    await dom.destroy();
    expect(signal?.aborted).toBe(true);
    expect(await starting).toMatchObject({ name: 'VirtError', code: 'OPERATION_FAILED' });
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', pid: null });
    expect(runLeftovers(root)).toEqual([]);
    expect(processesMentioning(dom.uuid)).toEqual([]);
  });

  it('a handler that lies (claims success, does nothing): POSTCONDITION_FAILED', async () => {
    internal.setHandler('thread.setScheduler', () => undefined);
    const err = await expectCleanFailure('lies', 'POSTCONDITION_FAILED');
    expect(err.message).toMatch(/runs other\/0, not fifo\/1/);
  });

  it('a placement whose effect is not what it reports: POSTCONDITION_FAILED, and its cgroups released', async () => {
    internal.setHandler('cgroup.placeThreads', (ctx, args) => {
      // Really creates the driver's groups, but puts every thread in one and claims otherwise.
      const { placements } = placeThreads({
        parent: 'virtkit',
        name: `vk-${ctx.domain.uuid}`,
        pid: args.pid,
        groups: [{ name: 'emulator', tids: args.threads.map((t) => t.tid) }],
      });
      return {
        placements: placements.map((p, i) => (i === 0 ? { ...p, cgroup: `${p.cgroup}-elsewhere` } : p)),
      };
    });
    const err = await expectCleanFailure('misplaced', 'POSTCONDITION_FAILED');
    expect(err.message).toMatch(/cgroup\.placeThreads/);
  });

  it('a handler that returns garbage: HANDLER_FAILED naming the malformed field', async () => {
    internal.setHandler('cgroup.placeThreads', () => ({ placements: 'everywhere' }) as never);
    const err = await expectCleanFailure('garbage', 'HANDLER_FAILED');
    expect(err.message).toMatch(/malformed result \(placements:/);
  });

  it('a storage handler that returns a descriptor of another file: POSTCONDITION_FAILED, fd closed', async () => {
    let given = -1;
    internal.setHandler('storage.openFile', () => {
      given = require('node:fs').openSync('/etc/hostname', 'r') as number;
      return { fd: given };
    });
    const disk = join(root, 'lib', 'd.img');
    writeFileSync(disk, Buffer.alloc(4096));
    await expectCleanFailure('wrongfile', 'POSTCONDITION_FAILED', {
      disks: [{ type: 'file', source: disk, target: { dev: 'vda', bus: 'virtio' }, readonly: true }],
    });
    expect(existsSync(`/proc/self/fd/${given}`)).toBe(false);
  });
});

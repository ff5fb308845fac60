import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { QmpClient } from '../../src/drivers/qemu/qmp/client.js';
import { type InternalApi, openInternal } from '../../src/internal/index.js';
import { threadGroups } from '../../src/privileged/builtins.js';
import {
  type Domain,
  type DomainDefinitionInput,
  type MigrationProgress,
  VirtError,
} from '../../src/stable/index.js';
import { placeThreads, releaseCgroups, threadCgroup } from '../../src/util/cgroup.js';
import { prlimitGet, prlimitSet, RLIMIT, schedGet, schedSet } from '../../src/util/libc.js';
import { readProcLimits, readThreadComm } from '../../src/util/proc.js';
import { killChild } from '../helpers/child.js';
import {
  acceptsConnection,
  alive,
  GUEST_MARKER,
  openRoot,
  pausedOnly,
  processesMentioning,
  runLeftovers,
  tinyGuest,
} from '../helpers/env.js';
import { useMigrationRoots } from '../helpers/migration-roots.js';
import { makeCredentials } from '../helpers/tls.js';

/*
 * Live migration between two embedded roots on this host, with a real TCG guest whose state lives
 * only in its RAM: /init counts on the serial console. Each side writes its own console file, so
 * the destination's console shows whether the count went on (state moved) or restarted (rebooted).
 */

const mig = useMigrationRoots('vk-mig');

function consoleOf(dom: Domain): string {
  const serial = dom.getDefinition().serials[0];
  if (serial?.type !== 'file' || !serial.path) throw new Error('the guest has no file console');
  return serial.path;
}

/** The counts printed on a console, in order. */
function counts(path: string): number[] {
  if (!existsSync(path)) return [];
  return [...readFileSync(path, 'utf8').matchAll(/VIRTKIT-COUNT (\d+)/g)].map((m) => Number(m[1]));
}

async function until<T>(
  what: string,
  probe: () => T | undefined | null | Promise<T | undefined | null>,
  timeoutMs = 120_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== null && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Starts a counting guest on the source and waits until it has counted to `n`. */
async function countingGuest(name: string, n = 3): Promise<Domain> {
  const dom = await mig.src.defineDomain(tinyGuest(name, 'count'));
  await dom.start();
  const path = consoleOf(dom);
  await until(`count ${n} on the source`, () => (counts(path).at(-1) ?? 0) >= n);
  return dom;
}

/**
 * What a failed or cancelled migration must leave: the guest running on in the source's own QEMU
 * (its count goes on), and nothing at the destination.
 */
async function expectSourceAlone(dom: Domain, srcPid: number): Promise<void> {
  expect(await dom.getInfo()).toMatchObject({ state: 'running', pid: srcPid });
  const now = counts(consoleOf(dom)).at(-1) as number;
  await until('the source to count on', () => (counts(consoleOf(dom)).at(-1) ?? 0) > now);
  expect(processesMentioning(dom.uuid)).toEqual([srcPid]);
  expect(await mig.dst.listDomains()).toEqual([]);
  expect(runLeftovers(mig.rootB)).toEqual([]);
}

/** The job recorded in the domain's status file under `root`, if any. */
function statusJob(root: string, dom: Domain): Record<string, unknown> | undefined {
  const file = join(root, 'run', `${dom.name}.json`);
  return (JSON.parse(readFileSync(file, 'utf8')) as { job?: Record<string, unknown> }).job;
}

/** The live XML with the console path, which is each root's own, blanked out. */
function abi(dom: Domain): string {
  return dom.toXML().replaceAll(consoleOf(dom), '(console)');
}

describe('live migration of a running TCG guest', { timeout: 240_000 }, () => {
  it('moves over TCP (migrateTo): the count goes on at the destination and the source QEMU is gone', async () => {
    const dom = await countingGuest('mig-tcp');
    const srcPid = (await dom.getInfo()).pid as number;
    const srcXmlAbi = abi(dom);
    const srcConsole = consoleOf(dom);
    const progress: MigrationProgress[] = [];
    const moved = await dom.migrateTo(mig.dst, {
      listen: 'tcp:127.0.0.1:0',
      onProgress: (p) => progress.push(p),
    });

    const before = counts(srcConsole).at(-1) as number;
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'migrated', pid: null });
    expect(alive(srcPid)).toBe(false);
    expect(runLeftovers(mig.rootA)).toEqual([]);

    const info = await moved.getInfo();
    expect(info).toMatchObject({ state: 'running', reason: 'migrated' });
    expect(processesMentioning(dom.uuid)).toEqual([info.pid]);
    expect(abi(moved)).toEqual(srcXmlAbi);

    const dstConsole = consoleOf(moved);
    expect(dstConsole.startsWith(mig.rootB)).toBe(true);
    await until('the destination to count on', () => (counts(dstConsole).at(-1) ?? 0) >= before + 3);
    const there = counts(dstConsole);
    // State moved, not rebooted: no fresh /init, and the first count continues the source's.
    expect(readFileSync(dstConsole, 'utf8')).not.toContain(GUEST_MARKER);
    expect(there[0]).toBeGreaterThan(1);
    expect(there[0]).toBeLessThanOrEqual(before + 1);
    expect(there.every((n, i) => i === 0 || n === (there[i - 1] as number) + 1)).toBe(true);

    const last = progress.at(-1);
    expect(last?.status).toBe('completed');
    expect(last?.dataTotal).toBeGreaterThan(100 * 1024 * 1024);
    expect(last?.dataProcessed).toBeGreaterThan(0);
  });
});

describe('UNIX sockets both QEMUs listen on (same host, same path)', { timeout: 240_000 }, () => {
  it("the source's end leaves the destination's serial and channel sockets in place, and they accept a connection", async () => {
    const serialPath = join(mig.rootA, 'shared-serial.sock');
    const channelPath = join(mig.rootA, 'shared-agent.sock');
    const dom = await mig.src.defineDomain(
      tinyGuest('mig-sockets', 'count', {
        serials: [{ type: 'file' }, { type: 'unix', mode: 'bind', path: serialPath }],
        channels: [{ type: 'unix', name: 'org.qemu.guest_agent.0', path: channelPath }],
      }),
    );
    await dom.start();
    await until('count 2 on the source', () => (counts(consoleOf(dom)).at(-1) ?? 0) >= 2);
    for (const path of [serialPath, channelPath]) expect(await acceptsConnection(path), path).toBe(true);
    const srcPid = (await dom.getInfo()).pid as number;

    const moved = await dom.migrateTo(mig.dst);
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'migrated', pid: null });
    expect(alive(srcPid)).toBe(false);
    const info = await moved.getInfo();
    expect(info).toMatchObject({ state: 'running', reason: 'migrated' });
    expect(processesMentioning(dom.uuid)).toEqual([info.pid]);
    // The paths are the destination QEMU's now: its listener, not a stale file.
    for (const path of [serialPath, channelPath]) expect(await acceptsConnection(path), path).toBe(true);
    expect(runLeftovers(mig.rootA)).toEqual([]);

    // The destination's own end removes them, as any end of a QEMU does.
    await moved.destroy({ graceMs: 0 });
    await until('the sockets to go with the destination', () =>
      [serialPath, channelPath].every((p) => !existsSync(p)),
    );
  });
});

describe('persist and undefineSource', { timeout: 240_000 }, () => {
  it('persist defines the domain at the destination, undefineSource removes it at the source; without persist it is transient there', async () => {
    const dom = await countingGuest('mig-persist', 2);
    const moved = await dom.migrateTo(mig.dst, { persist: true, undefineSource: true });
    await expect(mig.src.lookupDomain('mig-persist')).rejects.toMatchObject({ code: 'NO_DOMAIN' });
    expect(existsSync(join(mig.rootA, 'etc', 'domains', 'mig-persist.json'))).toBe(false);
    expect(existsSync(join(mig.rootB, 'etc', 'domains', 'mig-persist.json'))).toBe(true);
    expect(await moved.getInfo()).toMatchObject({ state: 'running', reason: 'migrated' });

    // Back to A, which no longer defines it, without persist: transient at A, still defined at B.
    const back = await moved.migrateTo(mig.src);
    expect(await back.getInfo()).toMatchObject({ state: 'running', reason: 'migrated' });
    expect(await moved.getInfo()).toMatchObject({ state: 'shutoff', reason: 'migrated' });
    await back.destroy({ graceMs: 1000 });
    await until('the transient domain to go at A', async () => (await mig.src.listDomains()).length === 0);
    expect(existsSync(join(mig.rootA, 'etc', 'domains', 'mig-persist.json'))).toBe(false);
    expect((await mig.dst.lookupDomain('mig-persist')).uuid).toBe(dom.uuid);
    expect(runLeftovers(mig.rootA)).toEqual([]);
  });
});

describe('TLS (tls-creds-x509 on both sides)', { timeout: 240_000 }, () => {
  it('migrates over TLS with certificates of one CA; with a foreign CA it fails typed and both sides are intact', async () => {
    makeCredentials(join(mig.rootA, 'lib', 'tls-a'), 'vk-test-ca');
    makeCredentials(join(mig.rootA, 'lib', 'tls-foreign'), 'vk-foreign-ca');
    const good = { dir: join(mig.rootA, 'lib', 'tls-a') };
    const dom = await countingGuest('mig-tls', 2);
    const srcPid = (await dom.getInfo()).pid as number;

    // The source's certificates come from another CA: the destination refuses the stream.
    const offer = await dom.migrateBegin();
    const incoming = await mig.dst.migratePrepare(offer, { listen: 'tcp:127.0.0.1:0', tls: good });
    const perform = dom.migratePerform(incoming.uri, {
      cookie: incoming.cookie,
      tls: { dir: join(mig.rootA, 'lib', 'tls-foreign') },
    });
    await expect(perform).rejects.toMatchObject({ code: 'OPERATION_FAILED' });
    // QEMU drops a connection that fails the handshake and keeps waiting: as in libvirt's
    // protocol, a failed perform is followed by a cancelled finish and a cancelled confirm.
    await incoming.finish({ cancelled: true });
    await dom.migrateConfirm({ cancelled: true });
    await expectSourceAlone(dom, srcPid);

    // A plain stream into a destination that expects TLS fails the same way.
    const plainOffer = await dom.migrateBegin();
    const tlsOnly = await mig.dst.migratePrepare(plainOffer, { listen: 'tcp:127.0.0.1:0', tls: good });
    await expect(dom.migratePerform(tlsOnly.uri, { cookie: tlsOnly.cookie })).rejects.toBeInstanceOf(
      VirtError,
    );
    await tlsOnly.finish({ cancelled: true });
    expect(await mig.dst.listDomains()).toEqual([]);
    await dom.migrateConfirm({ cancelled: true });
    expect(await dom.getInfo()).toMatchObject({ state: 'running', pid: srcPid });

    // One CA on both sides: the guest moves and counts on.
    const before = counts(consoleOf(dom)).at(-1) as number;
    const moved = await dom.migrateTo(mig.dst, { tls: good });
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'migrated' });
    const dstConsole = consoleOf(moved);
    await until('the destination to count on', () => (counts(dstConsole).at(-1) ?? 0) >= before + 2);
    expect(counts(dstConsole)[0]).toBeGreaterThan(1);

    // Credentials without their files are refused before any QEMU starts at the other side.
    const movedPid = (await moved.getInfo()).pid;
    await expect(
      moved.migrateTo(mig.src, { tls: { dir: join(mig.rootA, 'lib', 'nothing-here') } }),
    ).rejects.toMatchObject({ code: 'CONFIG_UNSUPPORTED' });
    expect(await moved.getInfo()).toMatchObject({ state: 'running', pid: movedPid });
    expect(processesMentioning(dom.uuid)).toEqual([movedPid]);
  });
});

const MiB = 1024n * 1024n;
const cpusetRoot = '/sys/fs/cgroup/cpuset';
const handlerParent = `virtkit-test-mig-${process.pid}`;

afterAll(() => {
  const dir = join(cpusetRoot, handlerParent);
  if (existsSync(dir)) rmdirSync(dir);
});

const ownLimit = prlimitGet(process.pid, RLIMIT.MEMLOCK);

/** Lowers this process's soft limit, which QEMU inherits, below the guest's 4 MiB need. */
function lowerOwnMemLock(): void {
  prlimitSet(process.pid, RLIMIT.MEMLOCK, { soft: MiB, hard: ownLimit.hard });
}

afterEach(() => prlimitSet(process.pid, RLIMIT.MEMLOCK, ownLimit));

/**
 * The guest of the hand-over tests: a locked-memory need above the inherited limit (memtune),
 * its one vCPU pinned and SCHED_FIFO (an idle counting guest: harmless), emulator threads in a
 * housekeeping cpuset, and a second QMP monitor through which the handlers look at QEMU themselves.
 */
function handOverGuest(name: string, probe: string): DomainDefinitionInput {
  return tinyGuest(name, 'count', {
    memtune: { hardLimitKiB: 4 * 1024 },
    cputune: {
      vcpupin: [{ vcpu: 0, cpuset: '0' }],
      emulatorpin: { cpuset: '0-1' },
      vcpusched: [{ ids: '0', scheduler: 'fifo', priority: 1 }],
    },
    qemuCommandline: { args: ['-qmp', `unix:${probe},server=on,wait=off`] },
  });
}

async function probeStatus(probe: string): Promise<string> {
  const qmp = await QmpClient.connect(probe, { timeoutMs: 5000 });
  try {
    return (await qmp.execute<{ status: string }>('query-status')).status;
  } finally {
    qmp.close();
  }
}

/** vCPU threads as QEMU names them (`CPU n/TCG`), to compare with the ids the handlers were given. */
function vcpuThreadsByName(pid: number): Map<number, number> {
  const byIndex = new Map<number, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`).map(Number)) {
    const m = /^CPU (\d+)\//.exec(readThreadComm(pid, tid) ?? '');
    if (m) byIndex.set(Number(m[1]), tid);
  }
  return byIndex;
}

interface Call {
  op: string;
  phase: string;
  pid: number | undefined;
  status?: string;
  vcpus?: Array<{ tid: number; index: number }>;
}

/** Handlers that record each call and do the real work, as a privileged node agent would. */
function registerHandlers(api: InternalApi, calls: Call[], probe: string, failScheduler = false): void {
  api.setHandler('process.setMaxMemLock', (ctx, args) => {
    calls.push({ op: 'process.setMaxMemLock', phase: ctx.phase, pid: ctx.pid });
    prlimitSet(args.pid, RLIMIT.MEMLOCK, { soft: args.bytes as bigint, hard: args.bytes as bigint });
  });
  api.setHandler('cgroup.placeThreads', async (ctx, args) => {
    calls.push({
      op: 'cgroup.placeThreads',
      phase: ctx.phase,
      pid: ctx.pid,
      status: await probeStatus(probe),
      vcpus: args.threads.filter((t) => t.role === 'vcpu').map((t) => ({ tid: t.tid, index: t.index })),
    });
    const { placements } = placeThreads({
      parent: handlerParent,
      name: `vk-${ctx.domain.uuid}`,
      pid: args.pid,
      groups: threadGroups(args, 'housekeeping'),
    });
    return { placements };
  });
  api.setHandler('thread.setScheduler', async (ctx, args) => {
    calls.push({
      op: 'thread.setScheduler',
      phase: ctx.phase,
      pid: ctx.pid,
      status: await probeStatus(probe),
      vcpus: args.threads.map((t) => ({ tid: t.tid, index: t.index })),
    });
    if (failScheduler) throw new Error('the node agent refuses');
    for (const t of args.threads) schedSet(t.tid, t.policy, t.priority);
  });
  api.setHandler('cgroup.release', (ctx, _args) => {
    calls.push({ op: 'cgroup.release', phase: ctx.phase, pid: ctx.pid });
    releaseCgroups({ parent: handlerParent, name: `vk-${ctx.domain.uuid}` });
  });
}

describe('the privileged hand-over on the destination (phase migration-in)', { timeout: 240_000 }, () => {
  it('five steps over a UNIX socket: handlers run with the incoming QEMU in inmigrate, its real vCPU ids; effects hold after the move', async () => {
    const probe = join(mig.rootB, 'lib', 'probe.qmp');
    const calls: Call[] = [];
    registerHandlers(openInternal(mig.dst, { apiVersion: '1.0' }), calls, probe);
    const dom = await mig.src.defineDomain(handOverGuest('mig-handover', probe));
    lowerOwnMemLock();
    await dom.start();
    const srcConsole = consoleOf(dom);
    await until('count 3 on the source', () => (counts(srcConsole).at(-1) ?? 0) >= 3);

    const offer = JSON.parse(JSON.stringify(await dom.migrateBegin()));
    // One migration-out job holds the source from begin to confirm: a suspend asked for now
    // waits its turn, which comes only after the confirm (the domain is then shut off).
    expect(await dom.getJobInfo()).toMatchObject({ operation: 'migration-out', phase: 'begin' });
    expect(statusJob(mig.rootA, dom)).toMatchObject({
      operation: 'migration-out',
      phase: 'begin',
      data: { sourceRan: true },
    });
    const suspended = dom.suspend().then(
      () => 'suspended',
      (e: unknown) => e,
    );
    const incoming = await mig.dst.migratePrepare(offer, {
      listen: `unix:${join(mig.rootB, 'run', 'mig.sock')}`,
    });
    expect(await incoming.domain.getJobInfo()).toMatchObject({ operation: 'migration-in', phase: 'prepare' });
    expect(statusJob(mig.rootB, incoming.domain)).toMatchObject({
      operation: 'migration-in',
      phase: 'prepare',
    });
    expect(incoming.uri).toBe(`unix:${join(mig.rootB, 'run', 'mig.sock')}`);
    const dstPid = (await incoming.domain.getInfo()).pid as number;
    expect(await incoming.domain.getInfo()).toMatchObject({ state: 'paused', reason: 'migration' });
    // Before the stream: the handlers ran, in order, in phase migration-in, on this very QEMU.
    expect(calls.map((c) => `${c.phase}:${c.op}`)).toEqual([
      'migration-in:process.setMaxMemLock',
      'migration-in:cgroup.placeThreads',
      'migration-in:thread.setScheduler',
    ]);
    for (const c of calls) expect(c.pid).toBe(dstPid);
    expect(calls[1]?.status).toBe('inmigrate');
    expect(calls[2]?.status).toBe('inmigrate');
    const named = vcpuThreadsByName(dstPid);
    expect(named.size).toBe(1);
    for (const c of calls.slice(1)) expect(c.vcpus).toEqual([{ tid: named.get(0), index: 0 }]);

    await dom.migratePerform(incoming.uri, { cookie: JSON.parse(JSON.stringify(incoming.cookie)) });
    expect(await dom.getInfo()).toMatchObject({ state: 'paused', reason: 'migration' });
    const done = await dom.getJobInfo();
    expect(done).toMatchObject({ operation: 'migration-out', phase: 'perform-done' });
    expect(done.migration).toMatchObject({ status: 'completed', dataRemaining: 0 });
    expect(done.migration?.dataProcessed).toBeGreaterThan(0);
    expect(done.migration?.downtimeMs).toBeGreaterThanOrEqual(0);
    expect(statusJob(mig.rootA, dom)).toMatchObject({ operation: 'migration-out', phase: 'perform-done' });
    const moved = await incoming.finish();
    expect((await moved.getJobInfo()).operation).toBe('none');
    expect(statusJob(mig.rootB, moved)).toBeUndefined();
    await dom.migrateConfirm();
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'migrated' });
    const late = await suspended;
    expect(late).toBeInstanceOf(VirtError);
    expect((late as VirtError).code).toBe('OPERATION_INVALID');
    expect((await dom.getJobInfo()).operation).toBe('none');
    expect(await moved.getInfo()).toMatchObject({ state: 'running', reason: 'migrated', pid: dstPid });
    expect((await moved.getInfo()).taints).toContain('internal-handler');

    // From outside: the limit, the vCPU's policy and every thread's cgroup are what the handlers set.
    const before = counts(srcConsole).at(-1) as number;
    const dstConsole = consoleOf(moved);
    await until('the destination to count on', () => (counts(dstConsole).at(-1) ?? 0) >= before + 2);
    expect(counts(dstConsole)[0]).toBeGreaterThan(1);
    expect(readProcLimits(dstPid).get('Max locked memory')).toMatchObject({ soft: 4n * MiB, hard: 4n * MiB });
    const vcpu = named.get(0) as number;
    expect(schedGet(vcpu)).toEqual({ policy: 'fifo', priority: 1 });
    const group = `/${handlerParent}/vk-${dom.uuid}`;
    expect(threadCgroup(dstPid, vcpu, 'v1-cpuset')).toBe(`${group}/vcpu0`);
    for (const tid of readdirSync(`/proc/${dstPid}/task`).map(Number)) {
      if (tid !== vcpu) expect(threadCgroup(dstPid, tid, 'v1-cpuset')).toBe(`${group}/housekeeping`);
    }

    await moved.destroy({ graceMs: 1000 });
    expect(calls.at(-1)).toMatchObject({ op: 'cgroup.release', phase: 'release' });
    expect(existsSync(join(cpusetRoot, handlerParent, `vk-${dom.uuid}`))).toBe(false);
  });

  it('a destination handler that fails: prepare fails typed, the source counts on, nothing is left at the destination', async () => {
    const probe = join(mig.rootB, 'lib', 'probe.qmp');
    const calls: Call[] = [];
    registerHandlers(openInternal(mig.dst, { apiVersion: '1.0' }), calls, probe, true);
    const dom = await mig.src.defineDomain(handOverGuest('mig-refused', probe));
    lowerOwnMemLock();
    await dom.start();
    const srcPid = (await dom.getInfo()).pid as number;
    const srcConsole = consoleOf(dom);
    await until('count 2 on the source', () => (counts(srcConsole).at(-1) ?? 0) >= 2);

    const err = await dom.migrateTo(mig.dst, { listen: 'tcp:127.0.0.1:0' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VirtError);
    expect((err as VirtError).code).toBe('HANDLER_FAILED');
    expect(calls.map((c) => `${c.phase}:${c.op}`)).toEqual([
      'migration-in:process.setMaxMemLock',
      'migration-in:cgroup.placeThreads',
      'migration-in:thread.setScheduler',
      'release:cgroup.release',
    ]);
    await expectSourceAlone(dom, srcPid);
    expect(existsSync(join(cpusetRoot, handlerParent, `vk-${dom.uuid}`))).toBe(false);
    // The source can migrate again: nothing of the failed attempt holds it.
    expect(await dom.migrateBegin()).toMatchObject({ cookie: { running: true } });
    await dom.migrateConfirm({ cancelled: true });
  });
});

describe('faults during the stream leave the VM running on exactly one side', { timeout: 240_000 }, () => {
  /** Starts a migration slowed to 1 MiB/s; `moving` resolves once the stream moves. */
  function slowMigration(dom: Domain, signal?: AbortSignal) {
    let streaming!: () => void;
    const moving = new Promise<void>((r) => (streaming = r));
    const result: Promise<unknown> = dom
      .migrateTo(mig.dst, {
        bandwidthMiBps: 1,
        onProgress: (p) => {
          if (p.dataProcessed > 0) streaming();
        },
        ...(signal ? { signal } : {}),
      })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    return { moving: Promise.race([moving, result]), result };
  }

  it('aborted by its signal mid-stream: perform fails typed, the source keeps running, the destination is gone', async () => {
    const dom = await countingGuest('mig-abort', 2);
    const srcPid = (await dom.getInfo()).pid as number;
    const abort = new AbortController();
    const migration = slowMigration(dom, abort.signal);
    await migration.moving;
    abort.abort();
    const err = await migration.result;
    expect(err).toBeInstanceOf(VirtError);
    expect((err as VirtError).code).toBe('ABORTED');
    await expectSourceAlone(dom, srcPid);
  });

  it('getJobInfo reports the stream in bytes; abortJob cancels it and the source keeps running', async () => {
    const dom = await countingGuest('mig-abortjob', 2);
    const srcPid = (await dom.getInfo()).pid as number;
    const migration = slowMigration(dom);
    await migration.moving;
    let info = await dom.getJobInfo();
    for (let i = 0; i < 50 && !(info.progress && info.progress.completed > 0); i++) {
      await new Promise((r) => setTimeout(r, 100));
      info = await dom.getJobInfo();
    }
    expect(info).toMatchObject({ operation: 'migration-out', phase: 'perform', aborting: false });
    expect(info.migration?.status).toBe('active');
    expect(info.migration?.dataRemaining).toBeGreaterThan(0);
    expect(statusJob(mig.rootA, dom)).toMatchObject({ operation: 'migration-out', phase: 'perform' });
    expect(info.progress?.unit).toBe('bytes');
    expect(info.progress?.completed).toBeGreaterThan(0);
    expect(info.progress?.total).toBeGreaterThan(100 * 1024 * 1024);
    await dom.abortJob();
    const err = await migration.result;
    expect(err).toBeInstanceOf(VirtError);
    expect((err as VirtError).code).toBe('ABORTED');
    expect(await dom.getInfo()).toMatchObject({ state: 'running', pid: srcPid });
    expect((await dom.getJobInfo()).operation).toBe('none');
    expect(statusJob(mig.rootA, dom)).toBeUndefined();
    expect(processesMentioning(dom.uuid)).toEqual([srcPid]);
    expect(await mig.dst.listDomains()).toEqual([]);
    expect(runLeftovers(mig.rootB)).toEqual([]);
  });

  it('the destination QEMU killed mid-stream: the source keeps running, the destination is cleaned up', async () => {
    const dom = await countingGuest('mig-dstkill', 2);
    const srcPid = (await dom.getInfo()).pid as number;
    const migration = slowMigration(dom);
    await migration.moving;
    const [dstPid] = await until('a destination QEMU', () => {
      const pids = processesMentioning(dom.uuid).filter((p) => p !== srcPid);
      return pids.length === 1 ? pids : undefined;
    });
    process.kill(dstPid as number, 'SIGKILL');
    const err = await migration.result;
    expect(err).toBeInstanceOf(VirtError);
    expect((err as VirtError).code).toBe('OPERATION_FAILED');
    await expectSourceAlone(dom, srcPid);
  });

  it('the source QEMU killed mid-stream: the migration fails, the destination is rolled back', async () => {
    const dom = await countingGuest('mig-srckill', 2);
    const srcPid = (await dom.getInfo()).pid as number;
    const migration = slowMigration(dom);
    await migration.moving;
    process.kill(srcPid, 'SIGKILL');
    const err = await migration.result;
    expect(err).toBeInstanceOf(VirtError);
    // The exit is recorded by the exit watcher, which may finish just after the failed migration.
    for (let i = 0; i < 100 && (await dom.getInfo()).state !== 'shutoff'; i++)
      await new Promise((r) => setTimeout(r, 100));
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'crashed' });
    await until('no QEMU of the domain', () => processesMentioning(dom.uuid).length === 0);
    expect(await mig.dst.listDomains()).toEqual([]);
    expect(runLeftovers(mig.rootA)).toEqual([]);
    expect(runLeftovers(mig.rootB)).toEqual([]);
  });
});

describe('what is refused before anything starts', () => {
  async function pausedSource(name: string, extra: Partial<DomainDefinitionInput> = {}): Promise<Domain> {
    const dom = await mig.src.defineDomain(pausedOnly(name, extra));
    await dom.start({ paused: true });
    return dom;
  }

  /** Nothing of the domain at the destination: no definition, process, socket or status file. */
  async function destinationUntouched(uuid: string, srcPid: number): Promise<void> {
    expect(processesMentioning(uuid)).toEqual([srcPid]);
    expect(runLeftovers(mig.rootB)).toEqual([]);
  }

  it('a shut-off domain cannot begin a migration', async () => {
    const dom = await mig.src.defineDomain(pausedOnly('mig-off'));
    await expect(dom.migrateBegin()).rejects.toMatchObject({ code: 'OPERATION_INVALID' });
    await expect(dom.migratePerform('tcp:127.0.0.1:1')).rejects.toMatchObject({ code: 'OPERATION_INVALID' });
  });

  it('an unknown scheme, at prepare or perform, is INVALID_URI and changes nothing', async () => {
    const dom = await pausedSource('mig-uri');
    const pid = (await dom.getInfo()).pid as number;
    const offer = await dom.migrateBegin();
    for (const listen of ['rdma:127.0.0.1:4444', 'tcp:127.0.0.1:99999', 'unix:relative.sock', 'exec:cat']) {
      await expect(mig.dst.migratePrepare(offer, { listen })).rejects.toMatchObject({
        code: 'INVALID_URI',
        details: { field: 'listen' },
      });
    }
    await expect(dom.migratePerform('fd:3')).rejects.toMatchObject({ code: 'INVALID_URI' });
    expect(await mig.dst.listDomains()).toEqual([]);
    await destinationUntouched(dom.uuid, pid);
    await dom.migrateConfirm({ cancelled: true });
    expect(await dom.getInfo()).toMatchObject({ state: 'paused', pid });
  });

  it('a destination whose definition of the domain differs is CONFIG_UNSUPPORTED and keeps its own', async () => {
    const dom = await pausedSource('mig-differs');
    const pid = (await dom.getInfo()).pid as number;
    const theirs = await mig.dst.defineDomain({
      ...pausedOnly('mig-differs', { memoryKiB: 96 * 1024 }),
      uuid: dom.uuid,
    });
    const offer = await dom.migrateBegin();
    await expect(mig.dst.migratePrepare(offer, { listen: 'tcp:127.0.0.1:0' })).rejects.toMatchObject({
      code: 'CONFIG_UNSUPPORTED',
      details: { field: 'memoryKiB' },
    });
    expect(theirs.getDefinition().memoryKiB).toBe(96 * 1024);
    await destinationUntouched(dom.uuid, pid);
    await dom.migrateConfirm({ cancelled: true });
  });

  it('a disk missing at the destination is refused before QEMU starts', async () => {
    const disk = join(mig.rootA, 'lib', 'vanishing.img');
    writeFileSync(disk, Buffer.alloc(1024 * 1024));
    const dom = await pausedSource('mig-nodisk', {
      disks: [{ type: 'file', source: disk, target: { dev: 'vda', bus: 'virtio' } }],
    });
    const pid = (await dom.getInfo()).pid as number;
    const offer = await dom.migrateBegin();
    rmSync(disk);
    await expect(mig.dst.migratePrepare(offer, { listen: 'tcp:127.0.0.1:0' })).rejects.toMatchObject({
      code: 'OPERATION_INVALID',
      details: { field: 'disks.0.source' },
    });
    expect(await mig.dst.listDomains()).toEqual([]);
    await destinationUntouched(dom.uuid, pid);
    await dom.migrateConfirm({ cancelled: true });
  });

  it('a malformed offer is XML_ERROR naming the field', async () => {
    const dom = await pausedSource('mig-malformed');
    const offer = await dom.migrateBegin();
    const bad = { ...offer, cookie: { ...offer.cookie, running: 'yes' } } as unknown as typeof offer;
    await expect(mig.dst.migratePrepare(bad, { listen: 'tcp:127.0.0.1:0' })).rejects.toMatchObject({
      code: 'XML_ERROR',
      details: { field: 'cookie.running' },
    });
    await dom.migrateConfirm({ cancelled: true });
  });
});

describe('a paused domain', { timeout: 240_000 }, () => {
  it('migrates paused, stays paused at the destination, and migrates back', async () => {
    const dom = await mig.src.defineDomain(pausedOnly('mig-paused'));
    await dom.start({ paused: true });
    const moved = await dom.migrateTo(mig.dst, { listen: `unix:${join(mig.rootB, 'lib', 'in.sock')}` });
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'migrated' });
    const info = await moved.getInfo();
    expect(info).toMatchObject({ state: 'paused', reason: 'migrated' });
    expect(processesMentioning(dom.uuid)).toEqual([info.pid]);
    expect(existsSync(join(mig.rootB, 'lib', 'in.sock'))).toBe(false);
    // And back to where its (typed) definition is still defined: the offer's XML spelling of the
    // same definition is the same guest.
    const back = await moved.migrateTo(mig.src);
    expect(back.uuid).toBe(dom.uuid);
    expect(await back.getInfo()).toMatchObject({ state: 'paused', reason: 'migrated' });
    expect(await mig.dst.listDomains({ state: 'active' })).toEqual([]);
  });
});

describe('source and destination in two processes', { timeout: 240_000 }, () => {
  it("the source's manager killed after the stream: on reconnect the source stays paused (migration) until confirmed", async () => {
    // The source runs in its own process, so this process opens root A only after killing it.
    await mig.src.close();
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        join(import.meta.dirname, '../fixtures/migration-source.ts'),
        mig.rootA,
        'mig-proc',
      ],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    try {
      const offerLine = await until(
        `the child's offer (stderr: ${err})`,
        () => /^OFFER (.*)$/m.exec(out)?.[1],
      );
      const incoming = await mig.dst.migratePrepare(JSON.parse(offerLine), { listen: 'tcp:127.0.0.1:0' });
      child.stdin?.write(`PERFORM ${incoming.uri} ${JSON.stringify(incoming.cookie)}\n`);
      await until(`the child's perform (stderr: ${err})`, () => out.includes('PERFORMED'));
      await killChild(child);

      mig.src = await openRoot(mig.rootA);
      const dom = await mig.src.lookupDomain('mig-proc');
      const info = await dom.getInfo();
      expect(info).toMatchObject({ state: 'paused', reason: 'migration' });
      const srcConsole = consoleOf(dom);
      const frozen = counts(srcConsole).at(-1) as number;

      const moved = await incoming.finish();
      const dstConsole = consoleOf(moved);
      await until('the destination to count on', () => (counts(dstConsole).at(-1) ?? 0) >= frozen + 3);
      // Meanwhile the source was never resumed: its console stopped where the stream completed.
      expect(counts(srcConsole).at(-1)).toBe(frozen);
      expect(await dom.getInfo()).toMatchObject({ state: 'paused', reason: 'migration', pid: info.pid });

      await dom.migrateConfirm();
      expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'migrated' });
      expect(processesMentioning(dom.uuid)).toEqual([(await moved.getInfo()).pid]);
      expect(runLeftovers(mig.rootA)).toEqual([]);
    } finally {
      await killChild(child);
      // So that afterEach destroys what the child left running, whatever failed.
      if (mig.src.closed) mig.src = await openRoot(mig.rootA);
    }
  });
});

describe("the source's manager killed mid-stream (job phase perform)", { timeout: 240_000 }, () => {
  it('a new manager cancels the stream and the source runs on; the destination fails typed and is rolled back', async () => {
    await mig.src.close();
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        join(import.meta.dirname, '../fixtures/migration-source.ts'),
        mig.rootA,
        'mig-perform',
        'slow',
      ],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    try {
      const offerLine = await until(
        `the child's offer (stderr: ${err})`,
        () => /^OFFER (.*)$/m.exec(out)?.[1],
      );
      const incoming = await mig.dst.migratePrepare(JSON.parse(offerLine), { listen: 'tcp:127.0.0.1:0' });
      const finished = incoming.finish().then(
        () => 'finished',
        (e: unknown) => e,
      );
      child.stdin?.write(`PERFORM ${incoming.uri} ${JSON.stringify(incoming.cookie)}\n`);
      await until(`the child's stream (stderr: ${err})`, () => out.includes('STREAMING'));
      await killChild(child);
      const recorded = JSON.parse(readFileSync(join(mig.rootA, 'run', 'mig-perform.json'), 'utf8'));
      expect(recorded.job).toMatchObject({ operation: 'migration-out', phase: 'perform' });

      mig.src = await openRoot(mig.rootA);
      const dom = await mig.src.lookupDomain('mig-perform');
      const info = await dom.getInfo();
      expect(info).toMatchObject({ state: 'running', reason: 'migration-cancelled' });
      expect((await dom.getJobInfo()).operation).toBe('none');
      expect(
        JSON.parse(readFileSync(join(mig.rootA, 'run', 'mig-perform.json'), 'utf8')).job,
      ).toBeUndefined();
      const now = counts(consoleOf(dom)).at(-1) as number;
      await until('the source to count on', () => (counts(consoleOf(dom)).at(-1) ?? 0) > now);

      const outcome = await finished;
      expect(outcome).toBeInstanceOf(VirtError);
      expect((outcome as VirtError).code).toBe('OPERATION_FAILED');
      expect(await mig.dst.listDomains()).toEqual([]);
      expect(processesMentioning(dom.uuid)).toEqual([info.pid]);
      expect(runLeftovers(mig.rootB)).toEqual([]);
    } finally {
      await killChild(child);
      if (mig.src.closed) mig.src = await openRoot(mig.rootA);
    }
  });
});

describe('the destination in a process of its own', { timeout: 240_000 }, () => {
  it('its manager SIGKILLed mid-stream (job phase prepare): a new manager kills the destination QEMU and forgets the transient domain, the source runs on, nothing is orphaned', async () => {
    await mig.dst.close();
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', join(import.meta.dirname, '../fixtures/migration-destination.ts'), mig.rootB],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    try {
      const dom = await countingGuest('mig-dstproc', 2);
      const srcPid = (await dom.getInfo()).pid as number;
      child.stdin?.write(`OFFER ${JSON.stringify(await dom.migrateBegin())}\n`);
      const line = await until(`the child's prepare (stderr: ${err})`, () =>
        /^INCOMING (\S+) (.*)$/m.exec(out),
      );
      let streaming!: () => void;
      const moving = new Promise<void>((r) => (streaming = r));
      const perform = dom
        .migratePerform(line[1] as string, {
          cookie: JSON.parse(line[2] as string),
          bandwidthMiBps: 1,
          onProgress: (p) => p.dataProcessed > 0 && streaming(),
        })
        .then(
          () => 'completed',
          (e: unknown) => e,
        );
      await Promise.race([moving, perform]);
      const [dstPid] = processesMentioning(dom.uuid).filter((p) => p !== srcPid);
      await killChild(child);

      // A new manager of the destination's root settles the prepare phase as libvirt does: the
      // vCPUs never ran here, so the destination QEMU is killed (the source decides).
      // Prepared without `persist`, the domain was transient there: it goes with its QEMU.
      const stopped: string[] = [];
      mig.dst = await openRoot(mig.rootB);
      mig.dst.on('domain-event', (e) => stopped.push(`${e.type}:${e.reason}`));
      expect(alive(dstPid as number)).toBe(false);
      await until('the transient domain to go', async () => (await mig.dst.listDomains()).length === 0);
      await until('the events', () => stopped.includes('undefined:removed'));
      expect(stopped).toContain('stopped:failed');
      expect(existsSync(join(mig.rootB, 'etc', 'domains', 'mig-dstproc.json'))).toBe(false);
      const outcome = await perform;
      expect(outcome === 'completed' || outcome instanceof VirtError).toBe(true);
      await dom.migrateConfirm({ cancelled: true });
      await expectSourceAlone(dom, srcPid);
    } finally {
      await killChild(child);
      if (mig.dst.closed) mig.dst = await openRoot(mig.rootB);
    }
  });
});

/*
 * End to end: a driver running as the unprivileged user virtkit-test (no capabilities, RLIMIT_RTPRIO
 * 0, RLIMIT_MEMLOCK soft 1 MiB) delegates its privileged operations to virtkit-privd running as root,
 * with real limits, real SCHED_FIFO, real cgroups, a real TAP and a disk image only root can read.
 * Domains are only ever started paused: SCHED_FIFO on an idle vCPU is harmless, on a busy one not.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  createPrivilegedHelper,
  type DomainIdentity,
  delegate,
  type InvocationContext,
  type PrivilegedHelper,
  type PrivilegedHelperPolicy,
} from '../../src/internal/index.js';
import { VirtError } from '../../src/stable/index.js';
import { placeThreads, releaseCgroups, threadCgroup } from '../../src/util/cgroup.js';
import { schedGet } from '../../src/util/libc.js';
import { readProcLimits, readThreadComm } from '../../src/util/proc.js';
import type { FixtureConfig } from '../fixtures/delegating-driver.js';
import { killChild } from '../helpers/child.js';
import { alive, processesMentioning, removeRoot, runLeftovers, tempRoot } from '../helpers/env.js';
import { eventually } from '../helpers/hostile.js';
import { TEST_USER } from '../setup/global.js';

const FIXTURE = join(__dirname, '..', 'fixtures', 'delegating-driver.ts');
const CLI = join(__dirname, '..', '..', 'src', 'privd-cli.ts');
const REPO = join(__dirname, '..', '..');
const MiB = 1024 * 1024;
const uid = Number(execFileSync('id', ['-u', TEST_USER]).toString().trim());
const gid = Number(execFileSync('id', ['-g', TEST_USER]).toString().trim());
const CPUSET = '/sys/fs/cgroup/cpuset';
const PARENT = `virtkit-privd-test-${process.pid}`;
const IFNAME = `vkp${process.pid % 100000}`;

let work: string;
let images: string;
let disk: string;
let outsideImage: string;
let escapeLink: string;
let socket: string;
let helper: PrivilegedHelper | undefined;
let audit: Array<Record<string, unknown>> = [];
const roots: string[] = [];
const children: ChildProcess[] = [];
/** The uuids of the domains this test's drivers were asked to start. */
const domains: string[] = [];
let seq = 0;

beforeAll(() => {
  // Root-owned and world-searchable: the driver can stat the images (its post-check does) but
  // only root can read them.
  work = join(tmpdir(), `vk-privd-${process.pid}`);
  rmSync(work, { recursive: true, force: true });
  images = join(work, 'images');
  mkdirSync(images, { recursive: true, mode: 0o755 });
  mkdirSync(join(work, 'outside'), { mode: 0o755 });
  chmodSync(work, 0o755);
  disk = join(images, 'disk.img');
  writeFileSync(disk, Buffer.alloc(MiB), { mode: 0o600 });
  outsideImage = join(work, 'outside', 'outside.img');
  writeFileSync(outsideImage, Buffer.alloc(MiB), { mode: 0o600 });
  escapeLink = join(images, 'escape.img');
  symlinkSync('../outside/outside.img', escapeLink);
  socket = join(work, 'privd.sock');
});

afterEach(async () => {
  try {
    for (const c of children.splice(0)) await killChild(c);
    // A test that failed midway killed its driver above, not the QEMU that driver started, nor the
    // domain cgroups: end those too, so nothing runs on into the next test or past the file.
    for (const uuid of domains.splice(0)) await endDomain(uuid);
  } finally {
    await helper?.close();
    helper = undefined;
    audit = [];
    for (const r of roots.splice(0)) removeRoot(r);
  }
});

afterAll(() => {
  try {
    execFileSync('ip', ['link', 'del', IFNAME], { stdio: 'ignore' });
  } catch {
    // gone with the last descriptor, as it should be
  }
  const parent = join(CPUSET, PARENT);
  if (existsSync(parent)) {
    for (const d of readdirSync(parent, { withFileTypes: true })) {
      if (d.isDirectory()) rmSync(join(parent, d.name), { recursive: true, force: true });
    }
    rmdirSync(parent);
  }
  rmSync(work, { recursive: true, force: true });
});

/** SIGKILLs every process of the domain still running, then removes its cgroups. */
async function endDomain(uuid: string): Promise<void> {
  const killed = processesMentioning(uuid);
  for (const pid of killed) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // exited since it was listed
    }
  }
  // Its driver gone, a killed QEMU is reaped by init, and holds its cgroups until then.
  if (!(await eventually(() => killed.every((pid) => !existsSync(`/proc/${pid}`)), 60_000))) {
    throw new Error(`the processes of domain ${uuid} were not reaped after SIGKILL: ${killed}`);
  }
  releaseCgroups({ parent: PARENT, name: `vk-${uuid}` });
}

function policy(overrides: Partial<PrivilegedHelperPolicy> = {}): PrivilegedHelperPolicy {
  return {
    version: 1,
    peers: { uids: [uid] },
    targets: { qualify: ['sameUid'], emulators: ['/usr/bin/qemu-system-x86_64'] },
    memlock: { maxBytes: 8 * MiB },
    scheduler: { policies: ['other', 'fifo'], priority: { min: 1, max: 10 } },
    cgroup: { parent: PARENT },
    tap: { prefix: 'vkp' },
    storage: { prefixes: [images] },
    ...overrides,
  };
}

async function startHelper(overrides: Partial<PrivilegedHelperPolicy> = {}): Promise<PrivilegedHelper> {
  helper = createPrivilegedHelper({
    socketPath: socket,
    policy: policy(overrides),
    audit: (line) => audit.push(JSON.parse(line) as Record<string, unknown>),
  });
  await helper.listen();
  return helper;
}

function uuidFor(n: number): string {
  return `5eed0000-0000-4000-8000-${String(process.pid % 1_000_000).padStart(6, '0')}${String(n).padStart(6, '0')}`;
}

function guest(opts: { source?: string; priority?: number } = {}) {
  const n = ++seq;
  return {
    name: `privd${n}`,
    uuid: uuidFor(n),
    type: 'qemu' as const,
    memoryKiB: 64 * 1024,
    vcpu: { count: 2 },
    memtune: { hardLimitKiB: 4096 },
    cputune: {
      vcpupin: [
        { vcpu: 0, cpuset: '0' },
        { vcpu: 1, cpuset: '1' },
      ],
      emulatorpin: { cpuset: '0-1' },
      vcpusched: [{ ids: '0-1', scheduler: 'fifo' as const, priority: opts.priority ?? 1 }],
    },
    disks: [
      { type: 'file' as const, source: opts.source ?? disk, target: { dev: 'vda', bus: 'virtio' as const } },
    ],
    interfaces: [{ type: 'ethernet' as const, target: { dev: IFNAME } }],
  };
}

type Line = Record<string, unknown> & { stage: string };

/** The fixture driver, running as virtkit-test. */
interface DriverRun {
  readonly root: string;
  next(stage: string): Promise<Line>;
  send(line: string): void;
  readonly exited: Promise<number | null>;
}

function runDriver(config: Omit<FixtureConfig, 'root'>): DriverRun {
  const root = tempRoot();
  roots.push(root);
  chownSync(root, uid, gid);
  const child = spawn(process.execPath, ['--import', 'tsx', FIXTURE, JSON.stringify({ root, ...config })], {
    uid,
    gid,
    cwd: REPO,
    env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: root },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  children.push(child);
  if (config.domain?.uuid) domains.push(config.domain.uuid);
  const lines: Line[] = [];
  const waiters: Array<() => void> = [];
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
    for (let nl = out.indexOf('\n'); nl >= 0; nl = out.indexOf('\n')) {
      const text = out.slice(0, nl);
      out = out.slice(nl + 1);
      if (text.startsWith('{')) lines.push(JSON.parse(text) as Line);
    }
    for (const w of waiters.splice(0)) w();
  });
  child.stderr?.on('data', (d: Buffer) => {
    err += d.toString();
  });
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      for (const w of waiters.splice(0)) w();
      resolve(code);
    }),
  );
  return {
    root,
    exited,
    send: (line) => child.stdin?.write(`${line}\n`),
    next(stage) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = lines.find((l) => l.stage === stage);
          if (found) return resolve(found);
          if (child.exitCode !== null || child.signalCode !== null) {
            return reject(new Error(`driver exited (${child.exitCode}) without stage ${stage}: ${err}`));
          }
          waiters.push(check);
        };
        check();
      });
    },
  };
}

/** Nothing of a failed or destroyed domain remains: no process, run file, cgroup or TAP. */
function expectNothingLeft(root: string, uuid: string): void {
  expect(processesMentioning(uuid)).toEqual([]);
  expect(runLeftovers(root)).toEqual([]);
  expect(existsSync(join(CPUSET, PARENT, `vk-${uuid}`))).toBe(false);
  expect(existsSync(`/sys/class/net/${IFNAME}`)).toBe(false);
}

/** The vCPU threads of a QEMU process, by the names QEMU gives them (`CPU 1/TCG`). */
function vcpuThreads(pid: number): Map<number, number> {
  const byIndex = new Map<number, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`).map(Number)) {
    const m = /^CPU (\d+)\//.exec(readThreadComm(pid, tid) ?? '');
    if (m) byIndex.set(Number(m[1]), tid);
  }
  return byIndex;
}

async function startFails(config: Omit<FixtureConfig, 'root'>): Promise<{ run: DriverRun; failed: Line }> {
  const run = runDriver(config);
  const failed = await run.next('failed');
  await run.exited;
  return { run, failed };
}

describe('an unprivileged driver', () => {
  it('runs as virtkit-test without capabilities, with RLIMIT_RTPRIO 0 and RLIMIT_MEMLOCK soft 1 MiB', async () => {
    const run = runDriver({});
    const env = await run.next('env');
    expect(env).toMatchObject({
      uid,
      capEff: '0000000000000000',
      memlock: { soft: String(MiB) },
      rtprio: { soft: '0', hard: '0' },
    });
  });

  it('without a helper: start fails naming storage.openFile and the missing privilege, and leaves nothing', async () => {
    const dom = guest();
    const { run, failed } = await startFails({ domain: dom });
    expect(failed).toMatchObject({
      code: 'ACCESS_DENIED',
      details: { operation: 'storage.openFile', capability: `read-write access to ${disk}`, errno: 'EACCES' },
    });
    expect(String(failed['message'])).toMatch(/register a handler for storage\.openFile/);
    expectNothingLeft(run.root, dom.uuid);
  });
});

describe('an unprivileged driver delegating to virtkit-privd', () => {
  it('starts the VM; limits, scheduling, cgroups and descriptors are right from outside; destroy cleans up', async () => {
    await startHelper();
    const dom = guest();
    const run = runDriver({ socket, domain: dom, hold: true });
    const started = await run.next('started');
    const pid = started['pid'] as number;
    expect(started['taints']).toContain('internal-handler');

    expect(readProcLimits(pid).get('Max locked memory')).toMatchObject({
      soft: BigInt(4 * MiB),
      hard: BigInt(4 * MiB),
    });
    const vcpus = vcpuThreads(pid);
    expect([...vcpus.keys()].sort()).toEqual([0, 1]);
    for (const tid of vcpus.values()) expect(schedGet(tid)).toEqual({ policy: 'fifo', priority: 1 });
    const domainCgroup = `/${PARENT}/vk-${dom.uuid}`;
    for (const tid of readdirSync(`/proc/${pid}/task`).map(Number)) {
      const index = [...vcpus.entries()].find(([, t]) => t === tid)?.[0];
      expect(threadCgroup(pid, tid, 'v1-cpuset')).toBe(
        `${domainCgroup}/${index === undefined ? 'emulator' : `vcpu${index}`}`,
      );
    }
    expect(readFileSync(join(CPUSET, domainCgroup, 'vcpu1', 'cpuset.cpus'), 'utf8').trim()).toBe('1');
    const fds = readdirSync(`/proc/${pid}/fd`).map((fd) => readlinkSync(`/proc/${pid}/fd/${fd}`));
    expect(fds).toContain('/dev/net/tun');
    expect(fds).toContain(disk);

    // One audit line per request, each allowed, each from the driver's uid.
    const ops = audit.filter((a) => a['op'] !== undefined);
    expect(ops.map((a) => `${a['op']}:${a['decision']}`)).toEqual([
      'storage.openFile:allow',
      'net.openTap:allow',
      'process.setMaxMemLock:allow',
      'cgroup.placeThreads:allow',
      'thread.setScheduler:allow',
    ]);
    for (const a of ops) expect(a['peer']).toMatchObject({ uid });
    expect(ops[2]?.['target']).toMatchObject({ pid, exe: '/usr/bin/dash', bytes: String(4 * MiB) });
    expect(ops[4]?.['target']).toMatchObject({ pid, exe: '/usr/bin/qemu-system-x86_64' });

    run.send('destroy');
    await run.next('destroyed');
    await run.exited;
    expect(audit.filter((a) => a['op'] === 'cgroup.release').map((a) => a['decision'])).toEqual(['allow']);
    expectNothingLeft(run.root, dom.uuid);
  });
});

describe('hotplug through delegate(): the hand-over of phase hotplug goes through the helper', () => {
  it('an unprivileged driver hot-plugs a root-only disk and a TAP, places and schedules a new vCPU, raises memlock for a DIMM', async () => {
    await startHelper();
    const hotDisk = join(images, 'hot.img');
    writeFileSync(hotDisk, Buffer.alloc(MiB), { mode: 0o600 });
    const hotTap = `${IFNAME}h`;
    const base = guest();
    const dom = {
      ...base,
      vcpu: { count: 3, current: 2 },
      maxMemory: { kib: 1024 * 1024, slots: 2 },
      cputune: {
        ...base.cputune,
        vcpupin: [...base.cputune.vcpupin, { vcpu: 2, cpuset: '0' }],
        vcpusched: [{ ids: '0-2', scheduler: 'fifo' as const, priority: 1 }],
      },
    };
    const run = runDriver({
      socket,
      domain: dom,
      hold: true,
      // A loaded machine must not fail a start on a handler's deadline: this test is about hotplug.
      timeoutMs: 60_000,
      hotplug: { disk: hotDisk, tap: hotTap, vcpus: 3, dimmMiB: 128 },
    });
    const started = await Promise.race([
      run.next('started'),
      run.next('failed').then((f) => {
        throw new Error(`the start failed: ${JSON.stringify(f)}`);
      }),
    ]);
    const pid = started['pid'] as number;
    const before = audit.length;
    const hotplugged = await run.next('hotplugged');
    expect(hotplugged['steps']).toEqual([
      { what: 'disk', ok: true },
      { what: 'tap', ok: true },
      { what: 'vcpus', ok: true },
      { what: 'memory', ok: true },
    ]);
    expect(hotplugged['live']).toEqual({
      aliases: ['virtio-disk0', 'virtio-disk1', 'net0', 'net1', 'dimm0'],
      vcpus: 3,
    });

    // Every privileged step of the hotplug went to the helper, in phase hotplug, and was allowed.
    const ops = audit.slice(before).filter((a) => a['op'] !== undefined);
    expect(ops.map((a) => `${a['op']}:${a['phase']}:${a['decision']}`)).toEqual([
      'storage.openFile:hotplug:allow',
      'net.openTap:hotplug:allow',
      'cgroup.placeThreads:hotplug:allow',
      'thread.setScheduler:hotplug:allow',
      'process.setMaxMemLock:hotplug:allow',
    ]);
    for (const a of ops) expect(a['peer']).toMatchObject({ uid });

    // From outside, in /proc and the cgroup files: QEMU holds the image only root can open and a
    // second TAP, the new vCPU thread sits in its own cgroup with FIFO, the soft limit is back up.
    const fds = readdirSync(`/proc/${pid}/fd`).map((fd) => readlinkSync(`/proc/${pid}/fd/${fd}`));
    expect(fds).toContain(hotDisk);
    expect(fds.filter((f) => f === '/dev/net/tun')).toHaveLength(2);
    expect(existsSync(`/sys/class/net/${hotTap}`)).toBe(true);
    const vcpus = vcpuThreads(pid);
    const tid = vcpus.get(2) as number;
    expect(tid).toBeGreaterThan(0);
    expect(threadCgroup(pid, tid, 'v1-cpuset')).toBe(`/${PARENT}/vk-${dom.uuid}/vcpu2`);
    expect(readFileSync(join(CPUSET, PARENT, `vk-${dom.uuid}`, 'vcpu2', 'cpuset.cpus'), 'utf8').trim()).toBe(
      '0',
    );
    expect(schedGet(tid)).toEqual({ policy: 'fifo', priority: 1 });
    expect(readProcLimits(pid).get('Max locked memory')).toMatchObject({
      soft: BigInt(4 * MiB),
      hard: BigInt(4 * MiB),
    });

    run.send('destroy');
    await run.next('destroyed');
    await run.exited;
    expectNothingLeft(run.root, dom.uuid);
    expect(existsSync(`/sys/class/net/${hotTap}`)).toBe(false);
  });
});

describe('migration through delegate(): the destination hands over in phase migration-in', () => {
  it("the incoming QEMU's memlock is raised by the helper while it is still the stub; the guest moves", async () => {
    await startHelper();
    // No TAP (one host cannot give a second QEMU the same one) and no pinning (both sides would
    // name the same domain cgroups): the memlock raise is what this test is about.
    const { cputune: _tune, interfaces: _nics, ...dom } = guest();
    const run = runDriver({ socket, domain: dom, hold: true, timeoutMs: 60_000, migrate: true });
    const migrated = await Promise.race([
      run.next('migrated'),
      run.next('migrate-failed').then((f) => {
        throw new Error(`the migration failed: ${JSON.stringify(f)}`);
      }),
      run.next('failed').then((f) => {
        throw new Error(`the start failed: ${JSON.stringify(f)}`);
      }),
    ]);
    const started = await run.next('started');
    const pid = migrated['pid'] as number;
    expect(pid).not.toBe(started['pid']);
    expect(migrated).toMatchObject({ state: 'paused', reason: 'migrated' });

    // The destination's own hand-over went to the helper: its disk in pre-exec, its limit in
    // migration-in, aimed at the stub that became this QEMU.
    const ops = audit.filter((a) => a['op'] !== undefined);
    expect(ops.map((a) => `${a['op']}:${a['phase']}:${a['decision']}`)).toEqual([
      'storage.openFile:pre-exec:allow',
      'process.setMaxMemLock:pre-exec:allow',
      'storage.openFile:pre-exec:allow',
      'process.setMaxMemLock:migration-in:allow',
    ]);
    for (const a of ops) expect(a['peer']).toMatchObject({ uid });
    expect(ops[3]?.['target']).toMatchObject({ pid, exe: '/usr/bin/dash', bytes: String(4 * MiB) });
    expect(readProcLimits(pid).get('Max locked memory')).toMatchObject({
      soft: BigInt(4 * MiB),
      hard: BigInt(4 * MiB),
    });
    const fds = readdirSync(`/proc/${pid}/fd`).map((fd) => readlinkSync(`/proc/${pid}/fd/${fd}`));
    expect(fds).toContain(disk);
    expect(alive(started['pid'] as number)).toBe(false);

    run.send('destroy');
    await run.next('destroyed');
    await run.exited;
    expectNothingLeft(run.root, dom.uuid);
    expectNothingLeft(join(run.root, 'dest'), dom.uuid);
  });
});

describe('virtkit-privd refuses, and the start fails with ACCESS_DENIED leaving nothing behind', () => {
  const cases: Array<{
    name: string;
    rule: string;
    operation: string;
    policy?: Partial<PrivilegedHelperPolicy>;
    guest?: () => Parameters<typeof guest>[0];
    tamper?: FixtureConfig['tamper'];
  }> = [
    {
      name: 'a peer uid the policy does not list',
      rule: 'peer.uid',
      operation: 'storage.openFile',
      policy: { peers: { uids: [0] } },
    },
    {
      name: 'a path outside the prefixes',
      rule: 'storage.prefixes',
      operation: 'storage.openFile',
      guest: () => ({ source: outsideImage }),
    },
    {
      name: 'memlock over the cap',
      rule: 'memlock.maxBytes',
      operation: 'process.setMaxMemLock',
      policy: { memlock: { maxBytes: 2 * MiB } },
    },
    {
      name: 'a priority out of range',
      rule: 'scheduler.priority',
      operation: 'thread.setScheduler',
      guest: () => ({ priority: 20 }),
    },
    {
      name: 'a tid that is not the pid’s',
      rule: 'tid-of-pid',
      operation: 'thread.setScheduler',
      tamper: 'foreign-tid',
    },
    {
      name: 'a cgroup outside the parent',
      rule: 'cgroup.parent',
      operation: 'cgroup.placeThreads',
      tamper: 'cgroup-escape',
    },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      await startHelper(c.policy);
      const dom = guest(c.guest?.());
      const { run, failed } = await startFails({
        socket,
        domain: dom,
        ...(c.tamper ? { tamper: c.tamper } : {}),
      });
      expect(failed, String(failed['message'])).toMatchObject({
        code: 'ACCESS_DENIED',
        details: { operation: c.operation, rule: c.rule },
      });
      expect(String(failed['message'])).toContain(`denied by policy rule ${c.rule}`);
      const denial = audit.find((a) => a['decision'] === 'deny');
      expect(denial).toMatchObject({ rule: c.rule, peer: { uid } });
      expectNothingLeft(run.root, dom.uuid);
    });
  }

  it('a symlink inside the prefix that points out of it', async () => {
    await startHelper();
    const dom = guest({ source: escapeLink });
    const { run, failed } = await startFails({ socket, domain: dom });
    expect(failed).toMatchObject({
      code: 'ACCESS_DENIED',
      details: { operation: 'storage.openFile', rule: 'storage.prefixes' },
    });
    expect(String(failed['message'])).toMatch(/symlink .* points to \.\.\/outside\/outside\.img/);
    expectNothingLeft(run.root, dom.uuid);
  });

  it("an existing TAP that is not the peer's (another tenant's traffic): tap.owner", async () => {
    await startHelper();
    const name = 'vkpforeign0';
    execFileSync('ip', ['tuntap', 'add', 'dev', name, 'mode', 'tap', 'vnet_hdr']);
    try {
      const dom = {
        ...guest(),
        interfaces: [{ type: 'ethernet' as const, target: { dev: name, managed: false } }],
      };
      const { run, failed } = await startFails({ socket, domain: dom });
      expect(failed).toMatchObject({
        code: 'ACCESS_DENIED',
        details: { operation: 'net.openTap', rule: 'tap.owner' },
      });
      expectNothingLeft(run.root, dom.uuid);
    } finally {
      execFileSync('ip', ['link', 'del', name]);
    }
  });

  it("a domain uuid whose cgroups already hold another process (another tenant's VM): cgroup.owner", async () => {
    await startHelper();
    const dom = guest();
    // A root process squatting in the groups that the peer's chosen uuid names.
    const squatter = spawn('sleep', ['60'], { stdio: 'ignore' });
    await new Promise((r) => squatter.once('spawn', r));
    const spid = squatter.pid as number;
    placeThreads({
      parent: PARENT,
      name: `vk-${dom.uuid}`,
      pid: spid,
      groups: [{ name: 'emulator', tids: [spid] }],
    });
    try {
      const { run, failed } = await startFails({ socket, domain: dom });
      expect(failed).toMatchObject({
        code: 'ACCESS_DENIED',
        details: { operation: 'cgroup.placeThreads', rule: 'cgroup.owner' },
      });
      // Untouched: still where it was, and the peer's rollback could not remove its groups.
      expect(threadCgroup(spid, spid, 'v1-cpuset')).toBe(`/${PARENT}/vk-${dom.uuid}/emulator`);
      expect(runLeftovers(run.root)).toEqual([]);
      expect(processesMentioning(dom.uuid)).toEqual([]);
    } finally {
      const gone = new Promise((r) => squatter.once('exit', r));
      squatter.kill('SIGKILL');
      await gone;
      releaseCgroups({ parent: PARENT, name: `vk-${dom.uuid}` });
    }
  });

  it('a target pid of another uid, a process that is no emulator, a cgroup release outside the parent (direct calls)', async () => {
    await startHelper();
    const uuid = uuidFor(++seq);
    const big = (n: number) => ({ $bigint: String(n) });
    const memlockArgs = (pid: number | 'self') => ({
      pid,
      bytes: big(4 * MiB),
      current: { soft: big(MiB), hard: big(8 * MiB) },
      breakdown: {
        rule: 'hard_limit',
        guestMemoryBytes: big(64 * MiB),
        passthroughDevices: 0,
        explanation: 'test',
      },
    });
    const run = runDriver({
      socket,
      direct: [
        { op: 'process.setMaxMemLock', phase: 'pre-exec', uuid, args: memlockArgs(process.pid) },
        { op: 'process.setMaxMemLock', phase: 'pre-exec', uuid, args: memlockArgs('self') },
        {
          op: 'thread.setScheduler',
          phase: 'startup',
          uuid,
          args: {
            pid: process.pid,
            threads: [{ tid: process.pid, role: 'vcpu', index: 0, policy: 'fifo', priority: 1 }],
          },
        },
        {
          op: 'cgroup.release',
          phase: 'release',
          uuid,
          args: { pid: process.pid, placements: [{ tid: 1, cgroup: '/elsewhere/x' }] },
        },
      ],
    });
    const { results } = (await run.next('direct')) as unknown as { results: Array<Record<string, unknown>> };
    expect(results).toMatchObject([
      {
        op: 'process.setMaxMemLock',
        ok: false,
        code: 'ACCESS_DENIED',
        details: { rule: 'targets.sameUid', pid: process.pid },
      },
      {
        op: 'process.setMaxMemLock',
        ok: false,
        code: 'ACCESS_DENIED',
        details: { rule: 'targets.emulators' },
      },
      { op: 'thread.setScheduler', ok: false, code: 'ACCESS_DENIED', details: { rule: 'targets.sameUid' } },
      { op: 'cgroup.release', ok: false, code: 'ACCESS_DENIED', details: { rule: 'cgroup.parent' } },
    ]);
    await run.exited;
    expect(audit.filter((a) => a['op']).map((a) => a['decision'])).toEqual(['deny', 'deny', 'deny', 'deny']);
  });
});

/** Runs the virtkit-privd bin as root; resolves once it listens, with its audit lines as they come. */
async function runCli(
  policyFile: string,
  onAudit: (line: Record<string, unknown>, child: ChildProcess) => void,
) {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', CLI, '--socket', socket, '--policy', policyFile],
    {
      cwd: REPO,
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  children.push(child);
  let buf = '';
  let log = '';
  await new Promise<void>((resolve, reject) => {
    child.stderr?.on('data', (d: Buffer) => {
      buf += d.toString();
      log += d.toString();
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const text = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (text.includes('listening on')) resolve();
        if (text.startsWith('{')) onAudit(JSON.parse(text) as Record<string, unknown>, child);
      }
    });
    child.once('exit', (code) => reject(new Error(`virtkit-privd exited (${code}): ${log}`)));
  });
  return child;
}

describe('the helper dying or hanging in the middle of a start', () => {
  const TIMEOUT_MS = 3000;
  let policyFile: string;
  beforeAll(() => {
    policyFile = join(work, 'policy.json');
    writeFileSync(policyFile, JSON.stringify(policy()));
  });

  it('killed at its first request: the start fails before its deadline and is rolled back', async () => {
    const cli = await runCli(policyFile, (line, child) => {
      if (line['op']) child.kill('SIGKILL');
    });
    const dom = guest();
    const { run, failed } = await startFails({ socket, domain: dom, timeoutMs: TIMEOUT_MS });
    expect(cli.signalCode).toBe('SIGKILL');
    expect(['HANDLER_FAILED', 'OPERATION_TIMEOUT']).toContain(failed['code']);
    expect(failed['ms'] as number).toBeLessThan(TIMEOUT_MS + 1000);
    expectNothingLeft(run.root, dom.uuid);
  });

  it('stopped at its first request: the start fails at its deadline with OPERATION_TIMEOUT and is rolled back', async () => {
    let stopped = false;
    const cli = await runCli(policyFile, (line, child) => {
      if (line['op'] && !stopped) {
        stopped = true;
        child.kill('SIGSTOP');
      }
    });
    const dom = guest();
    const { run, failed } = await startFails({ socket, domain: dom, timeoutMs: TIMEOUT_MS });
    expect(failed['code']).toBe('OPERATION_TIMEOUT');
    expect(failed['ms'] as number).toBeGreaterThanOrEqual(TIMEOUT_MS - 100);
    expect(failed['ms'] as number).toBeLessThan(TIMEOUT_MS + 2000);
    expect(processesMentioning(dom.uuid)).toEqual([]);
    expect(runLeftovers(run.root)).toEqual([]);
    expect(existsSync(join(CPUSET, PARENT, `vk-${dom.uuid}`))).toBe(false);
    // The helper's audit lines reach this test up to 5 ms after their requests, so the stop may land
    // a request later, in the middle of making the TAP: the helper holds it until it runs again.
    // Resumed, it finds its peer gone and lets go of it; nothing may outlive that.
    cli.kill('SIGCONT');
    await eventually(() => !existsSync(`/sys/class/net/${IFNAME}`), 60_000);
    expectNothingLeft(run.root, dom.uuid);
  });
});

/** A context for calling delegate handlers directly from the test (peer uid 0). */
function ctxFor(phase: InvocationContext['phase'], deadlineMs = 5000, signal = new AbortController().signal) {
  const domain: DomainIdentity = { uuid: uuidFor(++seq), name: 'direct', id: null };
  return { domain, phase, pid: process.pid, signal, deadline: Date.now() + deadlineMs };
}

function rawClient(): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = netConnect(socket, () => {
      // Writing on after the helper hung up fails with EPIPE: expected here, not a test failure.
      s.removeListener('error', reject);
      s.on('error', () => {});
      resolve(s);
    });
    s.once('error', reject);
  });
}

/** Resolves once the helper has closed the raw connection. */
function closedByHelper(s: Socket): Promise<void> {
  return new Promise((resolve) => {
    s.on('data', () => {});
    s.once('close', () => resolve());
  });
}

function frame(payload: Buffer | string): Buffer {
  const body = Buffer.from(payload);
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length);
  return Buffer.concat([head, body]);
}

describe('the protocol', () => {
  it('closes connections that send garbage or oversized frames and keeps serving the others', async () => {
    await startHelper({ peers: { uids: [uid, 0] } });
    const good = delegate(socket);
    const release = () =>
      good.handlers['cgroup.release'](ctxFor('release'), { pid: process.pid, placements: [] });
    try {
      await expect(release()).resolves.toBeUndefined();
      const hello = JSON.stringify({ type: 'hello', protocol: 1, apiVersion: '1.0' });
      const abuses: Buffer[] = [
        Buffer.from('GET / HTTP/1.1\r\n\r\n'),
        frame('{not json'),
        frame('[1,2,3]'),
        Buffer.concat([Buffer.from([0xff, 0xff, 0xff, 0xff]), Buffer.alloc(1024)]),
        frame(Buffer.alloc(64 * 1024 + 1, 0x20)),
        frame(JSON.stringify({ type: 'request', id: 1, op: 'cgroup.release', ctx: {}, args: {} })),
        Buffer.concat([frame(hello), frame(JSON.stringify({ type: 'mystery' }))]),
        Buffer.concat([frame(hello), frame(hello)]),
      ];
      const clients = await Promise.all(abuses.map(() => rawClient()));
      const closed = clients.map(closedByHelper);
      // An honest client that stays connected throughout, and is still answered at the end.
      const idle = await rawClient();
      let idleClosed = false;
      idle.once('close', () => {
        idleClosed = true;
      });
      clients.forEach((c, i) => {
        c.write(abuses[i] as Buffer);
      });
      await Promise.all(closed);
      await expect(release()).resolves.toBeUndefined();
      expect(idleClosed).toBe(false);
      idle.destroy();
      expect(audit.filter((a) => a['event'] === 'connection-closed').length).toBe(abuses.length);
    } finally {
      good.close();
    }
  });

  it('reconnects after a helper restart between calls', async () => {
    await startHelper({ peers: { uids: [uid, 0] } });
    const d = delegate(socket);
    const call = () => d.handlers['cgroup.release'](ctxFor('release'), { pid: process.pid, placements: [] });
    try {
      await expect(call()).resolves.toBeUndefined();
      await helper?.close();
      await expect(call()).rejects.toMatchObject({ code: 'SYSTEM_ERROR', details: { errno: 'ENOENT' } });
      await startHelper({ peers: { uids: [uid, 0] } });
      await expect(call()).resolves.toBeUndefined();
    } finally {
      d.close();
    }
  });

  it('honours the deadline and the AbortSignal of a call the helper does not answer', async () => {
    // A helper that greets and then never answers.
    const { createServer } = await import('node:net');
    const server = createServer((s) => {
      s.on('data', () => {
        const reply = {
          type: 'hello',
          protocol: 1,
          apiVersion: '1.0',
          server: 'mute',
          peer: { pid: 1, uid: 0, gid: 0 },
        };
        s.write(frame(JSON.stringify(reply)));
        s.removeAllListeners('data');
        s.on('data', () => {});
      });
    });
    await new Promise<void>((r) => server.listen(socket, r));
    const d = delegate(socket);
    try {
      const started = Date.now();
      await expect(
        d.handlers['cgroup.release'](ctxFor('release', 300), { pid: process.pid, placements: [] }),
      ).rejects.toMatchObject({ code: 'OPERATION_TIMEOUT' });
      expect(Date.now() - started).toBeLessThan(2000);
      const abort = new AbortController();
      const reason = new VirtError('OPERATION_TIMEOUT', 'the driver gave up');
      setTimeout(() => abort.abort(reason), 100);
      await expect(
        d.handlers['cgroup.release'](ctxFor('release', 30_000, abort.signal), {
          pid: process.pid,
          placements: [],
        }),
      ).rejects.toBe(reason);
    } finally {
      d.close();
      await new Promise((r) => server.close(r));
    }
  });

  it('reports a wrong internal API or protocol version at hello', async () => {
    await startHelper({ peers: { uids: [uid, 0] } });
    const s = await rawClient();
    const reply = new Promise<Buffer>((resolve) => s.once('data', resolve));
    s.write(frame(JSON.stringify({ type: 'hello', protocol: 1, apiVersion: '0.9' })));
    const answer = JSON.parse((await reply).subarray(4).toString()) as {
      type: string;
      error: { code: string };
    };
    expect(answer).toMatchObject({ type: 'error', error: { code: 'INTERNAL_VERSION_MISMATCH' } });
    await closedByHelper(s);
  });
});

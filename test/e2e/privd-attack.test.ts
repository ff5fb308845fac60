/*
 * The attack suite of virtkit-privd: a hostile peer (test/e2e/fixtures/hostile-peer.ts, running as
 * the unprivileged user virtkit-test) attacks the helper — swaps and races on storage prefixes,
 * other users' pids and tids, connection floods, stalled and oversized frames, memlock floods, TAPs
 * made persistent — while a well-behaved client (this process, uid 0, another tenant) keeps calling
 * and must keep being served. Each defect of issue 11 that concerns the helper has a test here.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  createPrivilegedHelper,
  type Delegate,
  delegate,
  type InvocationContext,
  type PrivilegedHelper,
  type PrivilegedHelperPolicy,
} from '../../src/internal/index.js';
import { TEST_USER } from '../setup/global.js';

const PEER = join(__dirname, 'fixtures', 'hostile-peer.ts');
const CLI = join(__dirname, '..', '..', 'src', 'privd-cli.ts');
const REPO = join(__dirname, '..', '..');
const MiB = 1024 * 1024;
const uid = Number(execFileSync('id', ['-u', TEST_USER]).toString().trim());
const gid = Number(execFileSync('id', ['-g', TEST_USER]).toString().trim());
const TAG = `${process.pid % 100000}`;
const PARENT = `virtkit-attack-${process.pid}`;

let work: string;
let tenant: string;
let images: string;
let disk: string;
let secretDir: string;
let socket: string;
let helper: PrivilegedHelper | undefined;
const audit: Array<Record<string, unknown>> = [];
const children: ChildProcess[] = [];
const taps: string[] = [];
let seq = 0;

beforeAll(() => {
  work = join(tmpdir(), `vk-privd-attack-${process.pid}`);
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { mode: 0o755 });
  chmodSync(work, 0o755);
  // The prefix's parent belongs to the peer: it may rename the prefix and put a symlink there.
  tenant = join(work, 'tenant');
  mkdirSync(tenant, { mode: 0o755 });
  chownSync(tenant, uid, gid);
  images = join(tenant, 'images');
  mkdirSync(images, { mode: 0o755 });
  disk = join(images, 'disk.img');
  writeFileSync(disk, Buffer.alloc(MiB), { mode: 0o600 });
  // A directory outside every prefix, holding a file only root may read.
  secretDir = join(work, 'secret');
  mkdirSync(secretDir, { mode: 0o755 });
  writeFileSync(join(secretDir, 'disk.img'), 'SECRET', { mode: 0o600 });
  socket = join(work, 'privd.sock');
});

afterEach(async () => {
  for (const c of children.splice(0)) {
    if (c.exitCode === null && c.signalCode === null) {
      const gone = new Promise((r) => c.once('exit', r));
      c.kill('SIGKILL');
      await gone;
    }
  }
  await helper?.close();
  helper = undefined;
  audit.length = 0;
  for (const t of taps.splice(0)) {
    if (existsSync(`/sys/class/net/${t}`)) execFileSync('ip', ['link', 'del', t], { stdio: 'ignore' });
  }
});

afterAll(() => {
  rmSync(join('/sys/fs/cgroup/cpuset', PARENT), { recursive: true, force: true });
  rmSync(work, { recursive: true, force: true });
});

function policy(overrides: Partial<PrivilegedHelperPolicy> = {}): PrivilegedHelperPolicy {
  return {
    version: 1,
    // uid 0 is the well-behaved tenant (this process); uid is the attacker.
    peers: { uids: [uid, 0] },
    // The peer's own node process stands in for an emulator, so memlock requests reach the syscall.
    targets: { qualify: ['sameUid'], emulators: ['/usr/bin/qemu-system-x86_64', process.execPath] },
    memlock: { maxBytes: 8 * MiB },
    scheduler: { policies: ['other'] },
    cgroup: { parent: PARENT },
    tap: { prefix: 'vka' },
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

/**
 * The helper CLI in its own process (root), so its children can be counted; its audit lines go to
 * `audit` as they arrive. `withoutSysResource`: started without CAP_SYS_RESOURCE, so that memlock
 * requests go to its per-owner worker and each holds its slot until the worker answers.
 */
async function startCli(
  overrides: Partial<PrivilegedHelperPolicy> = {},
  withoutSysResource = false,
): Promise<ChildProcess> {
  const policyFile = join(work, `policy-${++seq}.json`);
  writeFileSync(policyFile, JSON.stringify(policy(overrides)));
  const argv = [process.execPath, '--import', 'tsx', CLI, '--socket', socket, '--policy', policyFile];
  const child = withoutSysResource
    ? spawn('setpriv', ['--bounding-set', '-sys_resource', '--inh-caps', '-sys_resource', ...argv], {
        cwd: REPO,
        stdio: ['ignore', 'ignore', 'pipe'],
      })
    : spawn(argv[0] as string, argv.slice(1), { cwd: REPO, stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(child);
  let log = '';
  let partial = '';
  await new Promise<void>((resolve, reject) => {
    child.stderr?.on('data', (d: Buffer) => {
      log += d.toString();
      partial += d.toString();
      for (let nl = partial.indexOf('\n'); nl >= 0; nl = partial.indexOf('\n')) {
        const line = partial.slice(0, nl);
        partial = partial.slice(nl + 1);
        if (line.startsWith('{')) audit.push(JSON.parse(line) as Record<string, unknown>);
      }
      if (log.includes('listening on')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`virtkit-privd exited (${code}): ${log}`)));
  });
  return child;
}

function uuidFor(n: number): string {
  return `a77ac000-0000-4000-8000-${String(process.pid % 1_000_000).padStart(6, '0')}${String(n).padStart(6, '0')}`;
}

type Answer = Record<string, unknown>;

/** The hostile peer, as virtkit-test; `send` runs one command and resolves with its answer. */
interface Peer {
  readonly pid: number;
  send(cmd: Record<string, unknown>): Promise<Answer>;
}

async function hostilePeer(): Promise<Peer> {
  const child = spawn(process.execPath, ['--import', 'tsx', PEER, socket], {
    uid,
    gid,
    cwd: REPO,
    env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: work },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  children.push(child);
  const waiting = new Map<number, (a: Answer) => void>();
  let out = '';
  let err = '';
  let ready: (a: Answer) => void = () => {};
  const first = new Promise<Answer>((r) => {
    ready = r;
  });
  child.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
    for (let nl = out.indexOf('\n'); nl >= 0; nl = out.indexOf('\n')) {
      const line = JSON.parse(out.slice(0, nl)) as Answer;
      out = out.slice(nl + 1);
      if (line['id'] === 0) ready(line);
      else waiting.get(line['id'] as number)?.(line);
    }
  });
  child.stderr?.on('data', (d: Buffer) => {
    err += d.toString();
  });
  const exited = new Promise<never>((_, reject) =>
    child.once('exit', (code) => reject(new Error(`hostile peer exited (${code}): ${err}`))),
  );
  exited.catch(() => undefined);
  const hello = await Promise.race([first, exited]);
  expect(hello['uid']).toBe(uid);
  let id = 0;
  return {
    pid: hello['pid'] as number,
    send(cmd) {
      const n = ++id;
      const answer = new Promise<Answer>((resolve) => waiting.set(n, resolve));
      child.stdin?.write(`${JSON.stringify({ ...cmd, id: n })}\n`);
      return Promise.race([answer, exited]);
    },
  };
}

/**
 * The well-behaved tenant: calls cgroup.release (nothing placed) in a loop and records every
 * outcome. `stop()` ends the loop and returns how many calls were served and what failed.
 */
function wellBehaved(): { stop(): Promise<{ served: number; failures: string[] }>; d: Delegate } {
  const d = delegate(socket);
  let running = true;
  let served = 0;
  const failures: string[] = [];
  const loop = (async () => {
    while (running) {
      const ctx: InvocationContext = {
        domain: { uuid: uuidFor(0), name: 'tenant', id: null },
        phase: 'release',
        pid: process.pid,
        signal: new AbortController().signal,
        deadline: Date.now() + 20_000,
      };
      try {
        await d.handlers['cgroup.release'](ctx, { pid: process.pid, placements: [] });
        served++;
      } catch (err) {
        failures.push(String((err as { code?: string }).code ?? err));
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  return {
    d,
    async stop() {
      running = false;
      await loop;
      d.close();
      return { served, failures };
    },
  };
}

/** A request as the peer sends it. */
function openFile(path: string) {
  return {
    cmd: 'call',
    op: 'storage.openFile',
    phase: 'pre-exec',
    uuid: uuidFor(++seq),
    args: { path, mode: 'r' },
  };
}

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('storage prefixes swapped by a peer that owns their parent (defect 2)', () => {
  it('a prefix renamed away and replaced by a symlink is refused (storage.prefixes), never opened', async () => {
    await startHelper();
    const peer = await hostilePeer();
    const tenantClient = wellBehaved();
    try {
      const before = await peer.send(openFile(disk));
      expect(before).toMatchObject({ ok: true });
      for (const target of [secretDir, '/']) {
        expect(await peer.send({ cmd: 'swap', path: images, target })).toMatchObject({ ok: true });
        const asked = target === '/' ? join(images, 'etc', 'shadow') : disk;
        const answer = await peer.send(openFile(asked));
        expect(answer, JSON.stringify(answer)).toMatchObject({
          ok: false,
          code: 'ACCESS_DENIED',
          details: { rule: 'storage.prefixes' },
        });
        expect(await peer.send({ cmd: 'unswap', path: images })).toMatchObject({ ok: true });
      }
      // Back in place, the prefix is the recorded directory again and serves as before.
      expect(await peer.send(openFile(disk))).toMatchObject({ ok: true });
    } finally {
      const t = await tenantClient.stop();
      expect(t.failures).toEqual([]);
      expect(t.served).toBeGreaterThan(0);
    }
  });

  it('while the peer races renames and symlinks on the prefix, no descriptor ever leaves it', async () => {
    await startHelper();
    const peer = await hostilePeer();
    const tenantClient = wellBehaved();
    const secretIno = Number(execFileSync('stat', ['-c', '%i', join(secretDir, 'disk.img')]).toString());
    const diskIno = Number(execFileSync('stat', ['-c', '%i', disk]).toString());
    let opened = 0;
    expect(await peer.send({ cmd: 'race', path: images, target: secretDir })).toMatchObject({ ok: true });
    try {
      // At least 150 attempts, and on until the race has hit both states (a loaded machine may
      // leave the racer little CPU): the assertions below need one refusal and one open.
      const swapped = () => audit.some((a) => a['rule'] === 'storage.prefixes');
      const end = Date.now() + 60_000;
      for (let i = 0; i < 150 || ((!swapped() || opened === 0) && Date.now() < end); i++) {
        const answer = await peer.send(openFile(disk));
        if (answer['ok'] === true) {
          opened++;
          const fds = answer['fds'] as Array<{ ino: number; link: string }>;
          expect(fds[0]?.ino, `opened ${fds[0]?.link}`).toBe(diskIno);
          expect(fds[0]?.ino).not.toBe(secretIno);
        } else {
          // Refused as a swapped prefix, or the path missing at that instant: both typed.
          expect(['ACCESS_DENIED', 'SYSTEM_ERROR']).toContain(answer['code']);
        }
      }
    } finally {
      await peer.send({ cmd: 'stopRace' });
      await peer.send({ cmd: 'closeFds' });
      // The race stopped in any of its four states: put the real directory back.
      if (lstatSync(images, { throwIfNoEntry: false })?.isSymbolicLink()) unlinkSync(images);
      if (!existsSync(images)) renameSync(`${images}.moved`, images);
      const t = await tenantClient.stop();
      expect(t.failures).toEqual([]);
    }
    // The race did hit the swapped state (refused), and the real one (served).
    expect(audit.some((a) => a['rule'] === 'storage.prefixes')).toBe(true);
    expect(opened).toBeGreaterThan(0);
  });
});

describe('other users’ pids and tids', () => {
  it('are refused by rule while the tenant is served', async () => {
    await startHelper();
    const peer = await hostilePeer();
    const tenantClient = wellBehaved();
    const big = (n: number) => ({ $bigint: String(n) });
    const root = process.pid;
    const answers = [
      await peer.send({
        cmd: 'call',
        op: 'process.setMaxMemLock',
        phase: 'pre-exec',
        uuid: uuidFor(++seq),
        args: {
          pid: root,
          bytes: big(4 * MiB),
          current: { soft: big(MiB), hard: big(8 * MiB) },
          breakdown: {
            rule: 'hard_limit',
            guestMemoryBytes: big(MiB),
            passthroughDevices: 0,
            explanation: 'x',
          },
        },
      }),
      // Its own process as the target, but a root thread as the tid.
      await peer.send({
        cmd: 'call',
        op: 'thread.setScheduler',
        phase: 'startup',
        uuid: uuidFor(++seq),
        args: { pid: 'self', threads: [{ tid: root, role: 'vcpu', index: 0, policy: 'other', priority: 0 }] },
      }),
      await peer.send({
        cmd: 'call',
        op: 'cgroup.placeThreads',
        phase: 'startup',
        uuid: uuidFor(++seq),
        args: {
          pid: root,
          threads: [{ tid: root, role: 'emulator', index: 0 }],
          cpusets: { vcpus: [], iothreads: [] },
        },
      }),
    ];
    const t = await tenantClient.stop();
    expect(answers.map((a) => `${a['code']}:${(a['details'] as Answer | undefined)?.['rule']}`)).toEqual([
      'ACCESS_DENIED:targets.sameUid',
      'ACCESS_DENIED:tid-of-pid',
      'ACCESS_DENIED:targets.sameUid',
    ]);
    expect(t.failures).toEqual([]);
    expect(t.served).toBeGreaterThan(0);
  });
});

describe('a non-TAP interface named like a TAP (defect 11)', () => {
  it('is refused as ACCESS_DENIED, rule tap.type', async () => {
    await startHelper();
    const name = `vkad${TAG}`;
    // A bridge: no tun_flags, no owner (the kernel here has no dummy driver).
    execFileSync('ip', ['link', 'add', name, 'type', 'bridge']);
    taps.push(name);
    const peer = await hostilePeer();
    const answer = await peer.send({
      cmd: 'call',
      op: 'net.openTap',
      phase: 'pre-exec',
      uuid: uuidFor(++seq),
      args: { ifname: name, queues: 1, vnetHdr: false },
    });
    expect(answer, JSON.stringify(answer)).toMatchObject({
      ok: false,
      code: 'ACCESS_DENIED',
      details: { rule: 'tap.type', ifname: name },
    });
  });
});

describe('managed TAPs (defect 10)', () => {
  it("a managed TAP is never an existing one, and managed='no' needs one that exists", async () => {
    await startHelper();
    const peer = await hostilePeer();
    const name = `vkam${TAG}`;
    execFileSync('ip', ['tuntap', 'add', 'dev', name, 'mode', 'tap', 'user', String(uid)]);
    taps.push(name);
    const call = (ifname: string, managed: boolean) =>
      peer.send({
        cmd: 'call',
        op: 'net.openTap',
        phase: 'pre-exec',
        uuid: uuidFor(++seq),
        args: { ifname, queues: 1, vnetHdr: false, managed },
      });
    expect(await call(name, true)).toMatchObject({ ok: false, code: 'OPERATION_FAILED' });
    expect(await call(name, false)).toMatchObject({ ok: true, ifname: name });
    expect(await call(`vkan${TAG}`, false)).toMatchObject({ ok: false, code: 'OPERATION_FAILED' });
    expect(existsSync(`/sys/class/net/vkan${TAG}`)).toBe(false);
    await peer.send({ cmd: 'closeFds' });
  });
});

describe('a TAP the helper created, made persistent and re-owned by the peer (defect 10)', () => {
  const openTap = (name: string, uuid: string) => ({
    cmd: 'call',
    op: 'net.openTap',
    phase: 'pre-exec',
    uuid,
    args: { ifname: name, queues: 1, vnetHdr: true },
  });

  it('is destroyed when the peer releases the domain', async () => {
    await startHelper();
    const peer = await hostilePeer();
    const name = `vkat${TAG}`;
    taps.push(name);
    const uuid = uuidFor(++seq);
    const opened = await peer.send(openTap(name, uuid));
    expect(opened, JSON.stringify(opened)).toMatchObject({ ok: true, ifname: name });
    // Any holder of an attached descriptor may do this: the kernel checks nothing.
    expect(await peer.send({ cmd: 'tapPersist', index: 0 })).toEqual(
      expect.objectContaining({ owner: 0, persist: 0 }),
    );
    await peer.send({
      cmd: 'call',
      op: 'cgroup.release',
      phase: 'release',
      uuid,
      args: { pid: peer.pid, placements: [] },
    });
    expect(existsSync(`/sys/class/net/${name}`)).toBe(false);
  });

  it('is made non-persistent and root-owned again without a release, and goes with its last descriptor', async () => {
    await startHelper();
    const peer = await hostilePeer();
    const name = `vkau${TAG}`;
    taps.push(name);
    expect(await peer.send(openTap(name, uuidFor(++seq)))).toMatchObject({ ok: true });
    await peer.send({ cmd: 'tapPersist', index: 0 });
    await until(`${name} to disappear`, () => !existsSync(`/sys/class/net/${name}`));
    // The peer cannot take it back by name either: it is gone, and a new one is the helper's.
    const again = await peer.send(openTap(name, uuidFor(++seq)));
    expect(again).toMatchObject({ ok: true, ifname: name });
    expect(readFileSync(`/sys/class/net/${name}/owner`, 'utf8').trim()).toBe('-1');
    await peer.send({ cmd: 'closeFds' });
  });
});

describe('connection floods from one uid (defect 4)', () => {
  it('a uid holding hundreds of idle, stalled and silent connections cannot lock out another tenant', async () => {
    await startHelper();
    const peer = await hostilePeer();
    const idle = await peer.send({ cmd: 'flood', mode: 'idle', n: 200 });
    const stalled = await peer.send({ cmd: 'flood', mode: 'stall', n: 50 });
    const silent = await peer.send({ cmd: 'flood', mode: 'silent', n: 50 });
    // Past its own cap (default 64) the peer's connections are closed, however many it opens.
    expect(idle).toMatchObject({ opened: 200, greeted: 64 });
    await until(
      `the peer to hold at most 64 connections (${JSON.stringify({ idle, stalled, silent })})`,
      async () => ((await peer.send({ cmd: 'floodStatus' }))['open'] as number) <= 64,
    );
    // A new tenant connection is accepted and served while the flood is held.
    const tenantClient = wellBehaved();
    await new Promise((r) => setTimeout(r, 200));
    const t = await tenantClient.stop();
    expect(t.failures).toEqual([]);
    expect(t.served).toBeGreaterThan(0);
    expect(
      audit.some((a) => a['event'] === 'connection-refused' && a['reason'] === 'limits.maxConnectionsPerUid'),
    ).toBe(true);
    await peer.send({ cmd: 'floodClose' });
  });

  it('stalled frames and silent connections are closed after the configured timeouts', async () => {
    await startHelper({ limits: { handshakeTimeoutMs: 300, frameTimeoutMs: 300 } });
    const peer = await hostilePeer();
    const stalled = await peer.send({ cmd: 'flood', mode: 'stall', n: 10 });
    const silent = await peer.send({ cmd: 'flood', mode: 'silent', n: 10 });
    expect(stalled).toMatchObject({ opened: 10, greeted: 10 });
    expect(silent).toMatchObject({ opened: 10 });
    await until(
      'the helper to close all 20',
      async () => (await peer.send({ cmd: 'floodStatus' }))['open'] === 0,
    );
    const reasons = audit.filter(
      (a) => a['event'] === 'protocol-error' || a['event'] === 'connection-closed',
    );
    expect(reasons.filter((a) => /hello within/.test(String(a['error']))).length).toBe(10);
    expect(reasons.filter((a) => /frame .*within/.test(String(a['error']))).length).toBe(10);
  });

  it('an oversized length closes that connection only', async () => {
    await startHelper();
    const peer = await hostilePeer();
    const tenantClient = wellBehaved();
    expect(await peer.send({ cmd: 'oversized' })).toEqual(expect.objectContaining({ closed: true }));
    const t = await tenantClient.stop();
    expect(t.failures).toEqual([]);
  });
});

/** The helper's child processes right now. */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(e));
    } catch {
      // gone
    }
  }
  return out;
}

describe('a request flood from one uid', () => {
  it("another uid's request is served in its turn, while the flood goes on", async () => {
    // One request at a time, each waiting for the memlock worker: the flood's requests queue up
    // behind each other, and the tenant's behind whichever of them runs.
    await startCli({ limits: { maxInFlight: 1, maxQueued: 1000, memlockWorkers: 1 } }, true);
    const peer = await hostilePeer();
    const tenantClient = delegate(socket);
    const release = (n: number) =>
      tenantClient.handlers['cgroup.release'](
        {
          domain: { uuid: uuidFor(n), name: 'tenant', id: null },
          phase: 'release',
          pid: process.pid,
          signal: new AbortController().signal,
          deadline: Date.now() + 60_000,
        },
        { pid: process.pid, placements: [] },
      );
    try {
      // Greeted before the flood, so the call below is one request.
      await release(++seq);
      const isFlood = (a: Record<string, unknown>) =>
        a['op'] === 'process.setMaxMemLock' && a['domain'] === '00000000-0000-4000-8000-00000000f100';
      const total = 8 * 60;
      const flood = peer.send({ cmd: 'memlockFlood', conns: 8, per: 60, bytes: String(4 * MiB) });
      await until('the flood to be under way', () => audit.filter(isFlood).length >= 5, 60_000);
      const before = audit.filter(isFlood).length;
      const mine = uuidFor(++seq);
      await release(seq);
      await until("the tenant's audit line", () => audit.some((a) => a['domain'] === mine), 60_000);
      const at = audit.findIndex((a) => a['domain'] === mine);
      const floodBefore = audit.slice(0, at).filter(isFlood).length;
      const outcomes = (await flood)['outcomes'] as Record<string, number>;
      expect(Object.values(outcomes).reduce((a, b) => a + b, 0)).toBe(total);
      expect(outcomes['ok']).toBe(total);
      // Served in its turn (uids take turns: after the flood's running request and at most one more
      // per turn), not after everything the flood had queued: most of the flood was still waiting.
      // The slack is the audit's: its lines reach this process up to 5 ms late, so `before`
      // undercounts what had been served when the request went out.
      const detail = JSON.stringify({ before, floodBefore, total });
      expect(floodBefore - before, detail).toBeLessThanOrEqual(50);
      expect(total - floodBefore, detail).toBeGreaterThan(total / 2);
    } finally {
      tenantClient.close();
    }
  });
});

describe('a memlock flood (defect 5)', () => {
  it('10 connections x 64 requests: bounded child processes, every answer typed, the tenant served', async () => {
    // Without CAP_SYS_RESOURCE: the limit can only be raised by a worker, the path that forked per
    // request before (with the capability the helper calls prlimit itself and no child is made).
    const cli = await startCli({ limits: { maxInFlight: 8, maxQueued: 200, memlockWorkers: 2 } }, true);
    const peer = await hostilePeer();
    const tenantClient = wellBehaved();
    let peak = 0;
    const sampler = setInterval(() => {
      peak = Math.max(peak, childrenOf(cli.pid as number).length);
    }, 2);
    let flood: Answer;
    try {
      flood = await peer.send({ cmd: 'memlockFlood', conns: 10, per: 64, bytes: String(4 * MiB) });
    } finally {
      clearInterval(sampler);
    }
    const t = await tenantClient.stop();
    const outcomes = flood['outcomes'] as Record<string, number>;
    // One worker per owner uid:gid at most (the peer is one owner), never a process per request.
    expect(peak, JSON.stringify(outcomes)).toBeLessThanOrEqual(2);
    // The worker path really ran (a helper that could raise the limit itself would make none).
    expect(peak, JSON.stringify(outcomes)).toBeGreaterThanOrEqual(1);
    expect(Object.values(outcomes).reduce((a, b) => a + b, 0)).toBe(640);
    // Served, or refused for the queue limit: nothing else.
    for (const key of Object.keys(outcomes))
      expect(['ok', 'OPERATION_CONFLICT:limits.maxQueued']).toContain(key);
    expect(outcomes['ok']).toBeGreaterThan(0);
    expect(t.failures).toEqual([]);
    expect(t.served).toBeGreaterThan(0);
    // The limit really is set, as the peer's own /proc shows.
    const limits = readFileSync(`/proc/${peer.pid}/limits`, 'utf8');
    expect(limits).toMatch(new RegExp(`Max locked memory\\s+${4 * MiB}\\s+${4 * MiB}`));
  });
});

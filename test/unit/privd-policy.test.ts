import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import {
  closeSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VirtError } from '../../src/errors.js';
import { type AuditTarget, authorise } from '../../src/internal/privd/authorise.js';
import {
  loadPolicy,
  type Policy,
  parsePolicy,
  type StoragePrefix,
  storagePrefix,
} from '../../src/internal/privd/policy.js';
import type { WireContext } from '../../src/internal/privd/protocol.js';
import { openBeneath } from '../../src/internal/privd/storage.js';
import { STUB_ARGV0, STUB_SCRIPT } from '../../src/privileged/stub.js';
import { readProcStartTime } from '../../src/util/proc.js';

const minimal = { version: 1, peers: { uids: [1000] } };

function rejects(value: unknown): VirtError {
  try {
    parsePolicy(value, 'test.json');
  } catch (err) {
    if (VirtError.is(err)) return err;
    throw err;
  }
  throw new Error('the policy was accepted');
}

describe('policy parsing', () => {
  it('fills defaults: same-uid targets running the distribution QEMU, no optional sections', () => {
    const p = parsePolicy(minimal);
    expect([...p.peerUids]).toEqual([1000]);
    expect(p.qualify).toEqual(['sameUid']);
    expect(p.emulators.has('/usr/bin/qemu-system-x86_64')).toBe(true);
    expect(p.stubs.has('/usr/bin/dash')).toBe(true);
    expect(p.memlock).toBeUndefined();
    expect(p.scheduler).toBeUndefined();
    expect(p.storage).toBeUndefined();
  });

  it('reads every section', () => {
    const p = parsePolicy({
      ...minimal,
      targets: {
        qualify: ['descendant', 'cgroupSubtree'],
        cgroupSubtree: '/kubepods/',
        emulators: ['/opt/qemu'],
      },
      memlock: { maxBytes: '17179869184' },
      scheduler: { policies: ['fifo'], priority: { min: 1, max: 5 } },
      cgroup: { parent: 'machine/virtkit' },
      tap: { prefix: 'vk' },
      storage: { prefixes: ['/var/lib/vms/'], allowWrite: false },
    });
    expect(p.cgroupSubtree).toBe('/kubepods');
    expect(p.memlock?.maxBytes).toBe(17179869184n);
    expect(p.scheduler?.priority).toEqual({ min: 1, max: 5 });
    expect(p.storage?.prefixes[0]?.given).toBe('/var/lib/vms');
    expect(p.storage?.allowWrite).toBe(false);
    expect(parsePolicy({ ...minimal, memlock: { maxBytes: 'unlimited' } }).memlock?.maxBytes).toBe(
      'unlimited',
    );
  });

  it.each([
    [{ ...minimal, version: 2 }, 'version'],
    [{ version: 1, peers: { uids: [] } }, 'peers.uids'],
    [{ ...minimal, memlock: { maxBytes: -1 } }, 'memlock.maxBytes'],
    [{ ...minimal, memlock: { maxBytes: '4 GiB' } }, 'memlock.maxBytes'],
    [{ ...minimal, scheduler: { policies: ['deadline'] } }, 'scheduler.policies.0'],
    [
      { ...minimal, scheduler: { policies: ['fifo'], priority: { min: 9, max: 2 } } },
      'scheduler.priority.min',
    ],
    [{ ...minimal, cgroup: { parent: '../escape' } }, 'cgroup.parent'],
    [{ ...minimal, cgroup: { parent: '/abs' } }, 'cgroup.parent'],
    [{ ...minimal, tap: { prefix: 'way-too-long-prefix' } }, 'tap.prefix'],
    [{ ...minimal, storage: { prefixes: ['relative/dir'] } }, 'storage.prefixes.0'],
    [{ ...minimal, targets: { qualify: ['cgroupSubtree'] } }, 'targets.cgroupSubtree'],
    [{ ...minimal, surprise: true }, '(root)'],
  ])('names the field of a bad policy: %j -> %s', (value, field) => {
    const err = rejects(value);
    expect(err.code).toBe('XML_ERROR');
    expect(err.details).toMatchObject({ path: field, file: 'test.json' });
    expect(err.message).toContain(`test.json: ${field}:`);
  });

  it('reports an unreadable or non-JSON file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vk-policy-'));
    try {
      expect(() => loadPolicy(join(dir, 'missing.json'))).toThrow(
        expect.objectContaining({
          code: 'SYSTEM_ERROR',
          details: expect.objectContaining({ errno: 'ENOENT' }),
        }),
      );
      writeFileSync(join(dir, 'bad.json'), '{ version: 1');
      expect(() => loadPolicy(join(dir, 'bad.json'))).toThrow(expect.objectContaining({ code: 'XML_ERROR' }));
      writeFileSync(join(dir, 'ok.json'), JSON.stringify(minimal));
      expect(loadPolicy(join(dir, 'ok.json')).source).toBe(join(dir, 'ok.json'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('authorisation rules', () => {
  const me = {
    pid: process.pid,
    uid: process.getuid?.() ?? 0,
    gid: 0,
    startTime: readProcStartTime(process.pid)?.toString(),
  };
  const ctx = (phase: WireContext['phase'], uuid = '11111111-2222-4333-8444-555555555555'): WireContext => ({
    domain: { uuid, name: 'd', id: 1 },
    phase,
    pid: null,
    deadline: Date.now() + 1000,
  });
  let child: ChildProcess;
  let policy: Policy;
  beforeAll(() => {
    child = spawn('sleep', ['60'], { stdio: 'ignore' });
    policy = parsePolicy({
      version: 1,
      peers: { uids: [me.uid] },
      targets: { qualify: ['descendant'], emulators: [readlinkSync(`/proc/${process.pid}/exe`)] },
      memlock: { maxBytes: 4096 },
      scheduler: { policies: ['other', 'fifo'], priority: { min: 1, max: 2 } },
      cgroup: { parent: 'virtkit' },
      tap: { prefix: 'vk' },
    });
  });
  afterAll(() => {
    child.kill('SIGKILL');
  });

  function rule(fn: () => void): string | undefined {
    try {
      fn();
    } catch (err) {
      if (VirtError.is(err) && err.code === 'ACCESS_DENIED') return String(err.details['rule']);
      throw err;
    }
    return undefined;
  }
  const check = (op: Parameters<typeof authorise>[2], args: unknown, c = ctx('startup'), peer = me) =>
    rule(() => authorise(policy, peer, op, c, args as never, {} as AuditTarget));

  it('refuses peers the policy does not list', () => {
    expect(check('net.openTap', { queues: 1, vnetHdr: false }, ctx('pre-exec'), { ...me, uid: 4242 })).toBe(
      'peer.uid',
    );
  });

  it('qualifies targets by descent from the peer and by their executable', () => {
    const sleepPid = child.pid as number;
    // This process is no descendant of itself; the sleep is, but runs no allowed emulator.
    expect(check('thread.setScheduler', { pid: process.pid, threads: [] })).toBe('targets.descendant');
    expect(check('thread.setScheduler', { pid: sleepPid, threads: [] })).toBe('targets.emulators');
    // The same peer pid with another start time: the peer is gone and its pid reused.
    const reused = { ...me, startTime: String(BigInt(me.startTime ?? '0') + 1n) };
    expect(check('thread.setScheduler', { pid: sleepPid, threads: [] }, ctx('startup'), reused)).toBe(
      'targets.descendant',
    );
  });

  it('checks tids, memlock, scheduler, cgroup and TAP rules', () => {
    // This process as the target: same uid, and its own executable counts as the emulator.
    const asSelf = parsePolicy({
      version: 1,
      peers: { uids: [me.uid] },
      targets: { qualify: ['sameUid'], emulators: [readlinkSync(`/proc/${process.pid}/exe`)] },
      memlock: { maxBytes: 4096 },
      scheduler: { policies: ['other', 'fifo'], priority: { min: 1, max: 2 } },
      cgroup: { parent: 'virtkit' },
      tap: { prefix: 'vk' },
    });
    const run = (op: Parameters<typeof authorise>[2], args: unknown, c = ctx('startup')) =>
      rule(() => authorise(asSelf, me, op, c, args as never, {} as AuditTarget));
    const t = (tid: number, policy = 'fifo', priority = 1) => ({
      tid,
      role: 'vcpu',
      index: 0,
      policy,
      priority,
    });
    expect(run('thread.setScheduler', { pid: process.pid, threads: [t(process.pid)] })).toBeUndefined();
    expect(run('thread.setScheduler', { pid: process.pid, threads: [t(child.pid as number)] })).toBe(
      'tid-of-pid',
    );
    expect(run('thread.setScheduler', { pid: process.pid, threads: [t(process.pid, 'rr')] })).toBe(
      'scheduler.policies',
    );
    expect(run('thread.setScheduler', { pid: process.pid, threads: [t(process.pid, 'fifo', 3)] })).toBe(
      'scheduler.priority',
    );
    const memlock = (bytes: bigint | 'unlimited') => ({
      pid: process.pid,
      bytes,
      current: { soft: 0n, hard: 0n },
      breakdown: { rule: 'hard_limit', guestMemoryBytes: 0n, passthroughDevices: 0, explanation: '' },
    });
    expect(run('process.setMaxMemLock', memlock(4096n), ctx('hotplug'))).toBeUndefined();
    expect(run('process.setMaxMemLock', memlock(4097n), ctx('hotplug'))).toBe('memlock.maxBytes');
    expect(run('process.setMaxMemLock', memlock('unlimited'), ctx('hotplug'))).toBe('memlock.maxBytes');
    const threads = { pid: process.pid, threads: [], cpusets: { vcpus: [], iothreads: [] } };
    expect(run('cgroup.placeThreads', threads)).toBeUndefined();
    expect(run('cgroup.placeThreads', threads, ctx('startup', '../x'))).toBe('cgroup.parent');
    const uuid = '11111111-2222-4333-8444-555555555555';
    const placement = (cgroup: string) => ({ pid: 1, placements: [{ tid: 1, cgroup }] });
    expect(run('cgroup.release', placement(`/virtkit/vk-${uuid}/vcpu0`), ctx('release'))).toBeUndefined();
    expect(run('cgroup.release', placement(`/virtkit/vk-${uuid}`), ctx('release'))).toBe('cgroup.parent');
    expect(run('cgroup.release', placement('/machine.slice/x'), ctx('release'))).toBe('cgroup.parent');
    // hotplug (vCPUs taken away while QEMU runs): the target must be the peer's emulator as well.
    const running = { pid: process.pid, placements: [{ tid: 1, cgroup: `/virtkit/vk-${uuid}/vcpu1` }] };
    expect(run('cgroup.release', running, ctx('hotplug'))).toBeUndefined();
    expect(run('cgroup.release', { ...running, pid: child.pid as number }, ctx('hotplug'))).toMatch(
      /^targets\./,
    );
    const foreign = { ...running, placements: [{ tid: 1, cgroup: '/machine.slice/x' }] };
    expect(run('cgroup.release', foreign, ctx('hotplug'))).toBe('cgroup.parent');
    expect(run('net.openTap', { ifname: 'vk7', queues: 1, vnetHdr: false }, ctx('pre-exec'))).toBeUndefined();
    expect(run('net.openTap', { queues: 1, vnetHdr: false }, ctx('pre-exec'))).toBeUndefined();
    expect(run('net.openTap', { ifname: 'eth0', queues: 1, vnetHdr: false }, ctx('pre-exec'))).toBe(
      'tap.prefix',
    );
    expect(run('storage.openFile', { path: '/x', mode: 'r' }, ctx('pre-exec'))).toBe('storage');
  });

  it("raises memlock of the driver's stub before QEMU exists (pre-exec, migration-in), and nothing else of it", async () => {
    // A real stub, as the driver spawns it: dash with the stub script, waiting on its control
    // descriptor for the word to exec the (allowed) emulator.
    const emulator = '/usr/bin/qemu-system-x86_64';
    const stub = spawn('/usr/bin/dash', ['-c', STUB_SCRIPT, STUB_ARGV0, emulator, '-version'], {
      stdio: ['ignore', 'ignore', 'ignore', 'pipe'],
    });
    try {
      const pid = stub.pid as number;
      const deadline = Date.now() + 60_000;
      while (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(STUB_ARGV0) && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 20));
      const stubPolicy = parsePolicy({
        version: 1,
        peers: { uids: [me.uid] },
        targets: { qualify: ['descendant'], emulators: [emulator] },
        memlock: { maxBytes: 4096 },
        scheduler: { policies: ['fifo'], priority: { min: 1, max: 2 } },
      });
      const memlock = {
        pid,
        bytes: 4096n,
        current: { soft: 0n, hard: 0n },
        breakdown: { rule: 'hard_limit', guestMemoryBytes: 0n, passthroughDevices: 0, explanation: '' },
      };
      const at = (op: Parameters<typeof authorise>[2], args: unknown, phase: WireContext['phase']) =>
        rule(() => authorise(stubPolicy, me, op, ctx(phase), args as never, {} as AuditTarget));
      // An incoming migration's QEMU is a stub too until its limits are raised (issue 13's order).
      expect(at('process.setMaxMemLock', memlock, 'pre-exec')).toBeUndefined();
      expect(at('process.setMaxMemLock', memlock, 'migration-in')).toBeUndefined();
      // Once QEMU should be running, a shell is no emulator: no phase but those two trusts it.
      expect(at('process.setMaxMemLock', memlock, 'hotplug')).toBe('targets.emulators');
      expect(at('thread.setScheduler', { pid, threads: [] }, 'migration-in')).toBe('targets.emulators');
    } finally {
      stub.kill('SIGKILL');
    }
  });
});

describe('storage paths', () => {
  let dir: string;
  let prefix: StoragePrefix;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'vk-storage-'));
    mkdirSync(join(dir, 'vms', 'sub'), { recursive: true });
    mkdirSync(join(dir, 'other'));
    writeFileSync(join(dir, 'vms', 'sub', 'a.img'), 'a');
    writeFileSync(join(dir, 'other', 'secret'), 's');
    symlinkSync('sub/a.img', join(dir, 'vms', 'inside-rel'));
    symlinkSync(join(dir, 'vms', 'sub', 'a.img'), join(dir, 'vms', 'inside-abs'));
    symlinkSync('../other/secret', join(dir, 'vms', 'out-rel'));
    symlinkSync(join(dir, 'other', 'secret'), join(dir, 'vms', 'out-abs'));
    symlinkSync(join(dir, 'other'), join(dir, 'vms', 'dirlink'));
    execFileSync('mkfifo', [join(dir, 'vms', 'fifo')]);
    prefix = storagePrefix(join(dir, 'vms'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const open = (path: string, mode: 'r' | 'rw' = 'r') => openBeneath([prefix], path, mode);
  const ruleOf = (path: string) => {
    try {
      closeSync(open(path));
    } catch (err) {
      return VirtError.is(err) ? `${err.code}:${err.details['rule'] ?? ''}` : String(err);
    }
    return 'opened';
  };

  it('opens files below the prefix, through symlinks that stay inside', () => {
    for (const p of ['sub/a.img', 'inside-rel', 'inside-abs', 'sub/../sub/a.img']) {
      const fd = open(join(dir, 'vms', p));
      expect(readlinkSync(`/proc/self/fd/${fd}`)).toBe(join(dir, 'vms', 'sub', 'a.img'));
      closeSync(fd);
    }
  });

  it('refuses paths and symlinks leading out, and what is not a file', () => {
    expect(ruleOf(join(dir, 'other', 'secret'))).toBe('ACCESS_DENIED:storage.prefixes');
    expect(ruleOf(join(dir, 'vms', '..', 'other', 'secret'))).toBe('ACCESS_DENIED:storage.prefixes');
    expect(ruleOf(join(dir, 'vms', 'out-rel'))).toBe('ACCESS_DENIED:storage.prefixes');
    expect(ruleOf(join(dir, 'vms', 'out-abs'))).toBe('ACCESS_DENIED:storage.prefixes');
    expect(ruleOf(join(dir, 'vms', 'dirlink', 'secret'))).toBe('ACCESS_DENIED:storage.prefixes');
    expect(ruleOf(join(dir, 'vms'))).toBe('ACCESS_DENIED:storage.prefixes');
    // A FIFO would block an open without O_NONBLOCK; it is refused instead.
    expect(ruleOf(join(dir, 'vms', 'fifo'))).toBe('ACCESS_DENIED:storage.fileType');
    expect(ruleOf(join(dir, 'vms', 'sub'))).toBe('ACCESS_DENIED:storage.fileType');
    expect(ruleOf(join(dir, 'vms', 'missing.img'))).toBe('SYSTEM_ERROR:');
  });

  it('refuses a prefix swapped for a symlink, or for another directory, after the policy was loaded', () => {
    const vms = join(dir, 'vms');
    renameSync(vms, `${vms}.moved`);
    try {
      symlinkSync(join(dir, 'other'), vms);
      expect(ruleOf(join(vms, 'secret'))).toBe('ACCESS_DENIED:storage.prefixes');
      rmSync(vms);
      // A real directory this time, holding the same name: still not the one recorded.
      mkdirSync(vms);
      writeFileSync(join(vms, 'secret'), 's');
      expect(ruleOf(join(vms, 'secret'))).toBe('ACCESS_DENIED:storage.prefixes');
      rmSync(vms, { recursive: true });
    } finally {
      renameSync(`${vms}.moved`, vms);
    }
    expect(ruleOf(join(vms, 'sub', 'a.img'))).toBe('opened');
    // A prefix missing when the policy was loaded is refused, not trusted when it appears.
    const late = storagePrefix(join(dir, 'late'));
    mkdirSync(join(dir, 'late'));
    writeFileSync(join(dir, 'late', 'x.img'), 'x');
    expect(() => openBeneath([late], join(dir, 'late', 'x.img'), 'r')).toThrow(/restart virtkit-privd/);
  });

  it('opens read-only or read-write as asked, blocking again', () => {
    const fd = open(join(dir, 'vms', 'sub', 'a.img'), 'rw');
    const flags = Number.parseInt(
      /flags:\s+([0-7]+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))?.[1] ?? '0',
      8,
    );
    expect(flags & 3).toBe(2);
    expect(flags & 0o4000).toBe(0);
    closeSync(fd);
  });
});

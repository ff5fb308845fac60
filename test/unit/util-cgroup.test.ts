import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { VirtError } from '../../src/errors.js';
import {
  type CgroupGroup,
  type CgroupMode,
  detectCgroupMode,
  placeThreads,
  releaseCgroups,
  releaseGroups,
  threadCgroup,
} from '../../src/util/cgroup.js';
import { listThreads } from '../../src/util/proc.js';

const V1_MOUNT = '/sys/fs/cgroup/cpuset';
const V2_MOUNT = '/sys/fs/cgroup/unified';
const MOUNTS: Record<CgroupMode, string> = { 'v1-cpuset': V1_MOUNT, 'v2-threaded': V2_MOUNT };
const OPTIONS = { v1Mount: V1_MOUNT, v2Mount: V2_MOUNT };
/** Above PID_MAX_LIMIT (2^22): no thread can have this id. */
const NO_TID = 4_194_305;

let seq = 0;
/** A parent unique to this run and test, so concurrent runs never share a directory. */
let parent = '';
const children: ChildProcess[] = [];

function newParent(): string {
  parent = `virtkit-test-${process.pid}-${++seq}`;
  return parent;
}

/** Removes every directory below `dir` (deepest first), then `dir`; ignores failures. */
function rmTree(dir: string): void {
  if (!existsSync(dir)) return;
  for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) rmTree(`${dir}/${e.name}`);
  try {
    rmdirSync(dir);
  } catch {
    // Still busy: nothing more to do.
  }
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

afterEach(async () => {
  for (const c of children.splice(0)) {
    c.kill('SIGKILL');
    await exited(c);
  }
  if (parent) {
    for (const mount of Object.values(MOUNTS)) rmTree(`${mount}/${parent}`);
    parent = '';
  }
});

/** A node process with 3 worker threads; resolves once they are all running. */
async function spawnThreaded(): Promise<ChildProcess & { pid: number }> {
  const script =
    "const {Worker}=require('worker_threads'); let n=0;" +
    "for(let i=0;i<3;i++) new Worker('setInterval(()=>{},1e9)',{eval:true}).on('online',()=>{if(++n===3)console.log('ready')});" +
    'setInterval(()=>{},1e9)';
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  await new Promise<void>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`child exited early (${code})`)));
    child.stdout?.on('data', (d: Buffer) => {
      if (d.toString().includes('ready')) resolve();
    });
  });
  if (child.pid === undefined) throw new Error('spawn failed');
  return child as ChildProcess & { pid: number };
}

function catchErr(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected a throw');
}

function expectVirtError(err: unknown, code: string): VirtError {
  expect(VirtError.is(err)).toBe(true);
  expect((err as VirtError).code).toBe(code);
  return err as VirtError;
}

const readTrim = (path: string): string => readFileSync(path, 'utf8').trim();

describe('detectCgroupMode', () => {
  it('finds the v1 cpuset hierarchy on this machine', () => {
    expect(detectCgroupMode()).toBe('v1-cpuset');
    expect(detectCgroupMode(OPTIONS)).toBe('v1-cpuset');
  });

  it('falls back to cgroup2 when the v1 mount is not a cpuset hierarchy', () => {
    expect(detectCgroupMode({ v1Mount: '/nonexistent', v2Mount: V2_MOUNT })).toBe('v2-threaded');
    expect(detectCgroupMode({ v1Mount: '/nonexistent', v2Mount: '/nonexistent' })).toBeUndefined();
  });
});

describe.each(['v1-cpuset', 'v2-threaded'] as const)('placeThreads (%s)', (mode) => {
  const mount = MOUNTS[mode];
  const options = { ...OPTIONS, mode };

  it('places each thread in its group and releases the groups once the process is gone', async () => {
    const child = await spawnThreaded();
    const pid = child.pid;
    const tids = listThreads(pid);
    expect(tids.length).toBeGreaterThanOrEqual(4);
    expect(tids[0]).toBe(pid);
    const groups: CgroupGroup[] = [
      { name: 'emulator', cpus: '0', tids: [tids[0]!] },
      { name: 'vcpu0', cpus: '1', tids: [tids[1]!] },
      { name: 'vcpu1', tids: tids.slice(2) },
    ];
    const p = newParent();
    const name = 'dom-0123';
    const result = placeThreads({ parent: p, name, pid, groups }, options);

    expect(result.mode).toBe(mode);
    expect(result.placements).toHaveLength(tids.length);
    for (const g of groups) {
      for (const tid of g.tids) {
        const expected = `/${p}/${name}/${g.name}`;
        expect(result.placements.find((pl) => pl.tid === tid)?.cgroup).toBe(expected);
        expect(threadCgroup(pid, tid, mode)).toBe(expected);
      }
    }
    const domainDir = `${mount}/${p}/${name}`;
    if (mode === 'v1-cpuset') {
      expect(readTrim(`${domainDir}/emulator/cpuset.cpus`)).toBe('0');
      expect(readTrim(`${domainDir}/vcpu0/cpuset.cpus`)).toBe('1');
      expect(readTrim(`${domainDir}/vcpu1/cpuset.cpus`)).toBe(readTrim(`${mount}/cpuset.cpus`));
      expect(readTrim(`${domainDir}/vcpu1/cpuset.mems`)).toBe(readTrim(`${mount}/cpuset.mems`));
      // The kernel applied the affinity to the thread itself.
      const status = readFileSync(`/proc/${pid}/task/${tids[0]}/status`, 'utf8');
      expect(/^Cpus_allowed_list:\s*(\S+)$/m.exec(status)?.[1]).toBe('0');
    } else {
      expect(readTrim(`${domainDir}/cgroup.type`)).toBe('domain threaded');
      expect(readTrim(`${domainDir}/vcpu0/cgroup.type`)).toBe('threaded');
      expect(readTrim(`${domainDir}/cgroup.procs`)).toBe(String(pid));
    }

    // Placing again is idempotent.
    expect(placeThreads({ parent: p, name, pid, groups }, options).placements).toEqual(result.placements);

    // Still running: nothing may be removed.
    const busy = expectVirtError(
      catchErr(() => releaseCgroups({ parent: p, name }, options)),
      'SYSTEM_ERROR',
    );
    expect(busy.details.errno).toBe('EBUSY');
    expect(busy.message).toMatch(/still holds/);
    for (const g of groups) expect(existsSync(`${domainDir}/${g.name}`)).toBe(true);
    // One group of a running process cannot go either, while it holds a thread.
    const busyGroup = expectVirtError(
      catchErr(() => releaseGroups({ parent: p, name, groups: ['vcpu0'] }, options)),
      'SYSTEM_ERROR',
    );
    expect(busyGroup.details.errno).toBe('EBUSY');
    expect(existsSync(`${domainDir}/vcpu0`)).toBe(true);
    // An empty one goes alone (a vCPU taken away); the domain directory and the others stay.
    mkdirSync(`${domainDir}/vcpu7`);
    if (mode === 'v2-threaded') writeFileSync(`${domainDir}/vcpu7/cgroup.type`, 'threaded');
    releaseGroups({ parent: p, name, groups: ['vcpu7'] }, options);
    expect(existsSync(`${domainDir}/vcpu7`)).toBe(false);
    for (const g of groups) expect(existsSync(`${domainDir}/${g.name}`)).toBe(true);
    releaseGroups({ parent: p, name, groups: ['vcpu7'] }, options);
    expectVirtError(
      catchErr(() => releaseGroups({ parent: p, name, groups: ['..'] }, options)),
      'XML_ERROR',
    );

    child.kill('SIGKILL');
    await exited(child);
    releaseCgroups({ parent: p, name }, options);
    expect(existsSync(domainDir)).toBe(false);
    // The shared parent stays.
    expect(existsSync(`${mount}/${p}`)).toBe(true);
    // Releasing again is fine.
    releaseCgroups({ parent: p, name }, options);
  });

  it('rolls back the groups it created when a thread cannot be placed', async () => {
    const child = await spawnThreaded();
    const p = newParent();
    const groups: CgroupGroup[] = [
      { name: 'vcpu0', tids: [NO_TID] },
      { name: 'vcpu1', tids: [child.pid] },
    ];
    const err = expectVirtError(
      catchErr(() => placeThreads({ parent: p, name: 'dom', pid: child.pid, groups }, options)),
      'SYSTEM_ERROR',
    );
    expect(err.details.errno).toBe('ESRCH');
    expect(err.details.path).toBe(
      `${mount}/${p}/dom/vcpu0/${mode === 'v1-cpuset' ? 'tasks' : 'cgroup.threads'}`,
    );
    expect(existsSync(`${mount}/${p}/dom/vcpu0`)).toBe(false);
    expect(existsSync(`${mount}/${p}/dom/vcpu1`)).toBe(false);
    if (mode === 'v1-cpuset') {
      // Nothing was moved, so every directory it created is gone, the parent included.
      expect(existsSync(`${mount}/${p}`)).toBe(false);
    } else {
      // The process was moved into the domain cgroup first, and is not moved back.
      expect(threadCgroup(child.pid, child.pid, mode)).toBe(`/${p}/dom`);
    }
  });

  it('rejects bad names before touching the file system', () => {
    const bad = { ...options, v1Mount: '/nonexistent', v2Mount: '/nonexistent' };
    const cases = [
      { parent: '..', name: 'dom' },
      { parent: 'virtkit/../x', name: 'dom' },
      { parent: '/virtkit', name: 'dom' },
      { parent: 'virtkit', name: '..' },
      { parent: 'virtkit', name: 'a/b' },
      { parent: 'virtkit', name: '/' },
      { parent: 'virtkit', name: '' },
    ];
    for (const c of cases) {
      expectVirtError(
        catchErr(() => placeThreads({ ...c, pid: process.pid, groups: [] }, bad)),
        'XML_ERROR',
      );
      expectVirtError(
        catchErr(() => releaseCgroups(c, bad)),
        'XML_ERROR',
      );
    }
    const group = (g: CgroupGroup) => () =>
      placeThreads({ parent: 'virtkit', name: 'dom', pid: process.pid, groups: [g] }, bad);
    expectVirtError(catchErr(group({ name: '..', tids: [] })), 'XML_ERROR');
    expectVirtError(catchErr(group({ name: 'vcpu/0', tids: [] })), 'XML_ERROR');
    expectVirtError(catchErr(group({ name: 'vcpu0', cpus: '0;1', tids: [] })), 'XML_ERROR');
    expectVirtError(catchErr(group({ name: 'vcpu0', tids: [-1] })), 'XML_ERROR');
    // A valid request reaches the file system: the bogus mount fails it.
    expectVirtError(catchErr(group({ name: 'vcpu0', tids: [] })), 'SYSTEM_ERROR');
  });
});

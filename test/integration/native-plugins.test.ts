import {
  chmodSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import koffi from 'koffi';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { openInternal } from '../../src/internal/index.js';
import { type Connection, connect, type DomainDefinitionInput } from '../../src/stable/index.js';
import { prlimitGet, prlimitSet, RLIMIT, schedGet } from '../../src/util/libc.js';
import { readProcLimits, readThreadComm } from '../../src/util/proc.js';
import { buildTestPlugins } from '../fixtures/native-build.js';
import {
  openRoot,
  pausedOnly,
  processesMentioning,
  removeRoot,
  runLeftovers,
  tempRoot,
} from '../helpers/env.js';

const MiB = 1024n * 1024n;
const ownLimit = prlimitGet(process.pid, RLIMIT.MEMLOCK);
let buildDir: string;
let plugins: ReturnType<typeof buildTestPlugins>;
let root: string;
let conn: Connection | undefined;

beforeAll(() => {
  buildDir = mkdtempSync(join(tmpdir(), 'vk-native-'));
  plugins = buildTestPlugins(buildDir);
});
afterAll(() => rmSync(buildDir, { recursive: true, force: true }));

beforeEach(() => {
  root = tempRoot();
});

afterEach(async () => {
  prlimitSet(process.pid, RLIMIT.MEMLOCK, ownLimit);
  if (conn) {
    for (const dom of await conn.listDomains({ state: 'active' })) await dom.destroy({ graceMs: 1000 });
    await conn.close();
    conn = undefined;
  }
  removeRoot(root);
});

const open = (list: string[]) => connect(`qemu:///embed?root=${root}`, { plugins: list });

/** A disk image only root may open. */
function rootOnlyDisk(name: string): string {
  const path = join(root, 'lib', `${name}.img`);
  writeFileSync(path, Buffer.alloc(1024 * 1024));
  chmodSync(path, 0o600);
  return path;
}

function withDisk(name: string, extra: Partial<DomainDefinitionInput> = {}): DomainDefinitionInput {
  return pausedOnly(name, {
    disks: [{ type: 'file', source: rootOnlyDisk(name), target: { dev: 'vda', bus: 'virtio' } }],
    ...extra,
  });
}

/** vCPU thread ids by index, from the names QEMU gives them (CPU n/TCG). */
function vcpuThreads(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`).map(Number)) {
    const m = /^CPU (\d+)\//.exec(readThreadComm(pid, tid) ?? '');
    if (m) out.set(Number(m[1]), tid);
  }
  return out;
}

describe('the example C plugin', () => {
  it('supplies memlock, SCHED_FIFO and a root-only disk, verified in /proc', async () => {
    conn = await open([plugins.example]);
    const api = openInternal(conn, { apiVersion: '1.0' });
    for (const op of ['process.setMaxMemLock', 'thread.setScheduler', 'storage.openFile'] as const)
      expect(api.hasHandler(op)).toBe(true);
    expect(api.hasHandler('cgroup.placeThreads')).toBe(false);
    const dom = await conn.defineDomain(
      withDisk('cplug', {
        memtune: { hardLimitKiB: 4096 },
        cputune: { vcpusched: [{ ids: '0', scheduler: 'fifo', priority: 1 }] },
      }),
    );
    // The stub inherits a soft limit below the domain's 4 MiB need, so the raise is really needed.
    prlimitSet(process.pid, RLIMIT.MEMLOCK, { soft: MiB, hard: ownLimit.hard });
    await dom.start({ paused: true });
    const info = await dom.getInfo();
    const pid = info.pid as number;
    expect(readProcLimits(pid).get('Max locked memory')).toMatchObject({ soft: 4n * MiB, hard: 4n * MiB });
    const vcpu0 = vcpuThreads(pid).get(0) as number;
    expect(schedGet(vcpu0)).toEqual({ policy: 'fifo', priority: 1 });
    const fds = readdirSync(`/proc/${pid}/fd`).map((fd) => readlinkSync(`/proc/${pid}/fd/${fd}`));
    expect(fds).toContain(join(root, 'lib', 'cplug.img'));
    expect(info.taints).toContain('internal-handler');
    const log = readFileSync(join(root, 'log', 'cplug.log'), 'utf8');
    for (const op of [
      'storage\\.openFile phase=pre-exec',
      'process\\.setMaxMemLock phase=pre-exec',
      'thread\\.setScheduler phase=startup',
    ]) {
      expect(log).toMatch(
        new RegExp(
          `internal: ${op} via=native plugin ${plugins.example.replace(/[.]/g, '\\.')} [\\d.]+ms ok`,
        ),
      );
    }
    await dom.destroy();
  });

  it('is loaded from <root>/etc/virtkit.json too', async () => {
    conn = await openRoot(root);
    await conn.close();
    writeFileSync(join(root, 'etc', 'virtkit.json'), JSON.stringify({ plugins: [plugins.example] }));
    conn = await openRoot(root);
    expect(openInternal(conn, { apiVersion: '1.0' }).hasHandler('storage.openFile')).toBe(true);
  });
});

describe('loading refuses what is not a plugin of this version', () => {
  it('a plugin compiled against internal API 2.0: INTERNAL_VERSION_MISMATCH naming both', async () => {
    const err = await open([plugins.otherVersion]).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'VirtError', code: 'INTERNAL_VERSION_MISMATCH' });
    expect((err as Error).message).toMatch(
      /native plugin .*example-plugin-2\.0\.so.*"2\.0".*internal API 1\.0/,
    );
    // The failed open released the root.
    conn = await openRoot(root);
  });

  it('a missing file, a library without virtkit_plugin_init, a file that is no library', async () => {
    await expect(open([plugins.missing])).rejects.toMatchObject({
      code: 'SYSTEM_ERROR',
      message: expect.stringMatching(/missing\.so does not exist/),
    });
    await expect(open([plugins.notPlugin])).rejects.toMatchObject({
      code: 'OPERATION_INVALID',
      message: expect.stringMatching(/not a virtkit native plugin: it exports no virtkit_plugin_init/),
    });
    await expect(open([plugins.garbage])).rejects.toMatchObject({
      code: 'SYSTEM_ERROR',
      message: expect.stringMatching(/cannot load native plugin .*garbage\.so/),
    });
    // One plugin per operation, native or not.
    await expect(open([plugins.example, plugins.example])).rejects.toMatchObject({
      code: 'HANDLER_ALREADY_REGISTERED',
    });
    conn = await openRoot(root);
  });
});

describe('a plugin that fails or hangs fails the start cleanly', () => {
  const state = () => {
    const lib = koffi.load(plugins.test);
    const fn = lib.func('test_plugin_state', 'int', ['int']) as (n: number) => number;
    return {
      calls: fn(0),
      cancelSeen: fn(1),
      returned: fn(2),
      remainingMsAtEntry: fn(3),
      phase: fn(4),
      pid: fn(5),
    };
  };

  async function expectCleanFailure(name: string, code: string) {
    const c = conn as Connection;
    const dom = await c.defineDomain(withDisk(name));
    const err = await dom.start({ paused: true }).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'VirtError', code });
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'failed', pid: null });
    expect(runLeftovers(root)).toEqual([]);
    expect(processesMentioning(dom.uuid)).toEqual([]);
    return err as Error & { details: Record<string, unknown> };
  }

  it('an error with a message: HANDLER_FAILED carrying it', async () => {
    conn = await open([plugins.test]);
    const err = await expectCleanFailure('fail-one', 'HANDLER_FAILED');
    expect(err.message).toMatch(/test plugin refuses .*fail-one\.img for domain fail-one \(EACCES\)/);
    expect(err.details).toMatchObject({ operation: 'storage.openFile', phase: 'pre-exec' });
    expect(state()).toMatchObject({ phase: 0, pid: 0 });
  });

  it('sleeping past its deadline: OPERATION_TIMEOUT, the event loop stays responsive, no call until it returned', async () => {
    conn = await open([plugins.test]);
    const before = state();
    const delay = monitorEventLoopDelay({ resolution: 10 });
    let ticks = 0;
    const interval = setInterval(() => ticks++, 20);
    delay.enable();
    const started = performance.now();
    const err = await expectCleanFailure('sleep-one', 'OPERATION_TIMEOUT');
    const elapsed = performance.now() - started;
    delay.disable();
    clearInterval(interval);
    expect(err.details).toMatchObject({ operation: 'storage.openFile', phase: 'pre-exec' });
    expect(err.message).toMatch(/within 300 ms/);
    // The plugin got a CLOCK_MONOTONIC deadline no later than its 300 ms timeout.
    const entry = state();
    expect(entry.remainingMsAtEntry).toBeGreaterThan(0);
    expect(entry.remainingMsAtEntry).toBeLessThanOrEqual(300);
    // Timers kept firing while the plugin slept on a worker thread.
    expect(ticks).toBeGreaterThan(3);
    expect(delay.max / 1e6).toBeLessThan(1000);
    console.log(
      `native plugin past deadline: start failed after ${elapsed.toFixed(0)} ms, ${ticks} timer ticks of 20 ms, event-loop delay max ${(delay.max / 1e6).toFixed(1)} ms, p99 ${(delay.percentile(99) / 1e6).toFixed(1)} ms`,
    );

    // The plugin is still running (it lingers 800 ms after seeing the cancellation): not called.
    expect(state().returned).toBe(before.returned);
    const blocked = await expectCleanFailure('ok-while-stuck', 'HANDLER_FAILED');
    expect(blocked.message).toMatch(/has not yet returned from a call the driver gave up on/);
    expect(state().calls).toBe(before.calls + 1);

    // Once it has returned, it is called again.
    while (state().returned === before.returned) await new Promise((r) => setTimeout(r, 20));
    expect(state().cancelSeen).toBe(before.cancelSeen + 1);
    const dom = await (conn as Connection).defineDomain(withDisk('ok-after'));
    await dom.start({ paused: true });
    expect(state().calls).toBe(before.calls + 2);
    await dom.destroy();
  });
});

import { type ChildProcess, spawn } from 'node:child_process';
import {
  accessSync,
  closeSync,
  constants,
  openSync,
  readdirSync,
  readlinkSync,
  readSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { QmpClient, type QmpEvent } from '../../src/drivers/qemu/qmp/client.js';
import { VirtError } from '../../src/errors.js';

const QEMU = 'qemu-system-x86_64';

function findQemu(): string {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const candidate = join(dir, QEMU);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {}
  }
  throw new Error(
    `${QEMU} was not found in PATH; install it (apt-get install qemu-system-x86) to run this test`,
  );
}

interface Qemu {
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  readonly stderr: () => string;
}

function startQemu(binary: string, socketPath: string): Qemu {
  const child = spawn(
    binary,
    [
      '-S',
      '-machine',
      'pc,accel=tcg',
      '-m',
      '64',
      '-nodefaults',
      '-no-user-config',
      '-display',
      'none',
      '-qmp',
      `unix:${socketPath},server=on,wait=off`,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, exited, stderr: () => stderr };
}

/** QEMU creates the socket some time after spawn; retrying here is the test's business only. */
async function connectWhenReady(qemu: Qemu, socketPath: string): Promise<QmpClient> {
  for (let attempt = 0; attempt < 200; attempt++) {
    if (qemu.child.exitCode !== null) throw new Error(`QEMU exited early: ${qemu.stderr()}`);
    try {
      return await QmpClient.connect(socketPath, { timeoutMs: 10_000 });
    } catch (err) {
      const errno = VirtError.is(err) ? err.details.errno : undefined;
      if (errno !== 'ENOENT' && errno !== 'ECONNREFUSED') throw err;
    }
    await sleep(25);
  }
  throw new Error(`QEMU did not open ${socketPath} in time: ${qemu.stderr()}`);
}

describe('QmpClient against a real QEMU', () => {
  let dir: string;
  let qemu: Qemu | undefined;
  let client: QmpClient | undefined;

  beforeEach(async () => {
    const binary = findQemu();
    dir = await mkdtemp(join(tmpdir(), 'virtkit-qmp-qemu-'));
    const socketPath = join(dir, 'qmp.sock');
    qemu = startQemu(binary, socketPath);
    client = await connectWhenReady(qemu, socketPath);
  });

  afterEach(async () => {
    client?.close();
    if (qemu && qemu.child.exitCode === null && qemu.child.signalCode === null) {
      qemu.child.kill('SIGKILL');
      await qemu.exited;
    }
    qemu = undefined;
    client = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  it('reads the QEMU 7 greeting', () => {
    expect(client!.greeting.qemu.major).toBe(7);
    expect(client!.greeting.package).toEqual(expect.any(String));
    expect(client!.commandCount).toBe(1);
  });

  it('query-status reports prelaunch', async () => {
    await expect(client!.execute('query-status')).resolves.toMatchObject({
      status: 'prelaunch',
      running: false,
    });
  });

  it('query-cpus-fast reports one cpu with a thread id', async () => {
    const cpus = await client!.command('query-cpus-fast');
    expect(cpus).toHaveLength(1);
    expect(cpus[0]).toMatchObject({ 'cpu-index': 0, 'thread-id': expect.any(Number) });
  });

  it('answers concurrent commands', async () => {
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        i % 2 ? client!.execute('query-status') : client!.execute('query-name'),
      ),
    );
    expect(results[0]).toEqual({});
    expect(results[1]).toMatchObject({ status: 'prelaunch' });
    expect(client!.commandCount).toBe(21);
  });

  it('rejects an unknown command with CommandNotFound', async () => {
    await expect(client!.execute('no-such-command')).rejects.toMatchObject({
      code: 'OPERATION_FAILED',
      details: { qmpClass: 'CommandNotFound' },
    });
    await expect(client!.execute('query-status')).resolves.toMatchObject({ status: 'prelaunch' });
  });

  it('cont emits RESUME to a subscriber registered before', async () => {
    const events: QmpEvent[] = [];
    client!.onEvent((ev) => events.push(ev));
    await client!.execute('cont');
    expect(events.map((ev) => ev.event)).toContain('RESUME');
    expect(events.find((ev) => ev.event === 'RESUME')?.timestamp.seconds).toBeGreaterThan(0);
    await expect(client!.execute('query-status')).resolves.toMatchObject({ status: 'running' });
  });

  it('quit ends the process and fires onDisconnect', async () => {
    const disconnected = new Promise<Error | undefined>((resolve) => client!.onDisconnect(resolve));
    await client!.execute('quit');
    await expect(qemu!.exited).resolves.toBe(0);
    await expect(disconnected).resolves.toMatchObject({ code: 'CONNECTION_CLOSED' });
    expect(client!.closed).toBe(true);
    await expect(client!.execute('query-status')).rejects.toMatchObject({ code: 'CONNECTION_CLOSED' });
  });

  it('validates typed replies', async () => {
    await expect(client!.command('query-status')).resolves.toMatchObject({
      status: 'prelaunch',
      running: false,
    });
    const version = await client!.command('query-version');
    expect(version.qemu.major).toBe(7);
    await expect(client!.command('query-kvm')).resolves.toMatchObject({ present: expect.any(Boolean) });
    const machines = await client!.command('query-machines');
    expect(machines.some((m) => m.alias === 'pc' && /^pc-i440fx-/.test(m.name))).toBe(true);
  });

  it('waitForEvent registered before stop resolves with the STOP event', async () => {
    const resumed = client!.waitForEvent('RESUME');
    await client!.command('cont');
    await expect(resumed).resolves.toMatchObject({ event: 'RESUME', data: {} });
    const stopped = client!.waitForEvent('STOP');
    await client!.command('stop');
    const ev = await stopped;
    expect(ev.event).toBe('STOP');
    expect(ev.timestamp.seconds).toBeGreaterThan(0);
    await expect(client!.command('query-status')).resolves.toMatchObject({ status: 'paused' });
  });

  it('waitForEvent filters with the predicate and sees the payload of SHUTDOWN on quit', async () => {
    const hostQuit = client!.waitForEvent('SHUTDOWN', (ev) => ev.data.guest === false);
    await client!.command('quit');
    const ev = await hostQuit;
    expect(ev.data).toMatchObject({ guest: false, reason: 'host-qmp-quit' });
    await expect(qemu!.exited).resolves.toBe(0);
  });

  it('waitForEvent times out, and rejects with CONNECTION_CLOSED when the connection ends', async () => {
    await expect(client!.waitForEvent('POWERDOWN', undefined, { timeoutMs: 50 })).rejects.toMatchObject({
      code: 'OPERATION_TIMEOUT',
    });
    const never = client!.waitForEvent('POWERDOWN', undefined, { timeoutMs: 60_000 });
    client!.close();
    await expect(never).rejects.toMatchObject({ code: 'CONNECTION_CLOSED' });
  });

  it('passes a descriptor with getfd that QEMU holds until closefd', async () => {
    const path = join(dir, 'getfd-target');
    writeFileSync(path, 'x');
    const fd = openSync(path, 'r');
    try {
      await client!.getfd('vk-test', fd);
    } finally {
      closeSync(fd);
    }
    const pid = qemu!.child.pid!;
    expect(openFilesOf(pid)).toContain(path);
    await client!.command('closefd', { fdname: 'vk-test' });
    expect(openFilesOf(pid)).not.toContain(path);
    await expect(client!.command('closefd', { fdname: 'vk-test' })).rejects.toMatchObject({
      code: 'OPERATION_FAILED',
    });
  });

  it('passes a descriptor with add-fd that QEMU opens as /dev/fdset/N for a block node', async () => {
    const path = join(dir, 'disk.raw');
    writeFileSync(path, Buffer.alloc(64 * 1024));
    const fd = openSync(path, 'r+');
    try {
      const added = await client!.addFd(fd, { opaque: 'vk-disk' });
      expect(added).toEqual({ 'fdset-id': expect.any(Number), fd: expect.any(Number) });
      // Only the descriptor reaches the file now: QEMU cannot open it by name.
      unlinkSync(path);
      const fdsets = await client!.command('query-fdsets');
      expect(fdsets).toContainEqual({
        'fdset-id': added['fdset-id'],
        fds: [{ fd: added.fd, opaque: 'vk-disk' }],
      });
      await client!.command('blockdev-add', {
        driver: 'raw',
        'node-name': 'vk-disk0',
        file: { driver: 'file', filename: `/dev/fdset/${added['fdset-id']}` },
      });
      const nodes = await client!.command('query-named-block-nodes', { flat: true });
      expect(nodes).toContainEqual(
        expect.objectContaining({ 'node-name': 'vk-disk0', drv: 'raw', ro: false }),
      );
      // QEMU writes through the descriptor; the bytes land in the (unlinked) file we still hold.
      await client!.execute('human-monitor-command', {
        'command-line': 'qemu-io vk-disk0 "write -P 0x5a 4096 512"',
      });
      const back = Buffer.alloc(512);
      readSync(fd, back, 0, 512, 4096);
      expect(back.every((b) => b === 0x5a)).toBe(true);
      await client!.command('blockdev-del', { 'node-name': 'vk-disk0' });
      await client!.command('remove-fd', { 'fdset-id': added['fdset-id'] });
    } finally {
      closeSync(fd);
    }
  });

  it('sends concurrent descriptor commands one at a time, each into its own fd set', async () => {
    const fds = [0, 1, 2].map((i) => {
      const path = join(dir, `set-${i}`);
      writeFileSync(path, String(i));
      return openSync(path, 'r');
    });
    try {
      const added = await Promise.all(fds.map((fd, i) => client!.addFd(fd, { opaque: `o${i}` })));
      const fdsets = await client!.command('query-fdsets');
      for (const [i, a] of added.entries()) {
        const set = fdsets.find((s) => s['fdset-id'] === a['fdset-id']);
        expect(set?.fds).toEqual([{ fd: a.fd, opaque: `o${i}` }]);
        expect(readlinkSync(`/proc/${qemu!.child.pid}/fd/${a.fd}`)).toBe(join(dir, `set-${i}`));
      }
    } finally {
      for (const fd of fds) closeSync(fd);
    }
  });
});

/** The files a process holds open, from /proc/<pid>/fd. */
function openFilesOf(pid: number): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(`/proc/${pid}/fd`)) {
    try {
      out.push(readlinkSync(`/proc/${pid}/fd/${entry}`));
    } catch {}
  }
  return out;
}

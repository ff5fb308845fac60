import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { QmpClient, type QmpEvent } from '../../src/drivers/qemu/qmp/client.js';
import { VirtError } from '../../src/stable/errors.js';

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
    const cpus = await client!.execute<{ 'cpu-index': number; 'thread-id': number }[]>('query-cpus-fast');
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
});

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { QmpClient } from '../../src/drivers/qemu/qmp/client.js';
import type { Connection, Domain, DomainStatus } from '../../src/stable/index.js';
import {
  alive,
  openRoot,
  pausedOnly,
  recordEvents,
  removeRoot,
  runLeftovers,
  tempRoot,
  tinyGuest,
} from '../helpers/env.js';

/*
 * States and their reasons come from one owner (src/drivers/domain-core.ts) and are typed per
 * state: these tests drive a real QEMU into each state and read it back with getState().
 */

let root: string;
let conn: Connection;

beforeEach(async () => {
  root = tempRoot();
  conn = await openRoot(root);
});

afterEach(async () => {
  for (const dom of await conn.listDomains({ state: 'active' })) await dom.destroy({ graceMs: 1000 });
  await conn.close();
  removeRoot(root);
});

const types = (rec: ReturnType<typeof recordEvents>) => rec.events.map((e) => `${e.type}:${e.reason}`);

describe('domain state with its reason, against a real QEMU', () => {
  it('start paused → paused/user; resume → running/unpaused; suspend → paused/user; destroy → shutoff/destroyed', async () => {
    const rec = recordEvents(conn);
    const dom = await conn.defineDomain(pausedOnly('s'));
    expect(await dom.getState()).toEqual({ state: 'shutoff', reason: 'unknown' });
    await dom.start({ paused: true });
    const paused: DomainStatus = await dom.getState();
    expect(paused).toEqual({ state: 'paused', reason: 'user' });
    // getInfo reports the same state, from the same owner.
    expect(await dom.getInfo()).toMatchObject(paused);
    await dom.resume();
    expect(await dom.getState()).toEqual({ state: 'running', reason: 'unpaused' });
    await dom.suspend();
    expect(await dom.getState()).toEqual({ state: 'paused', reason: 'user' });
    await dom.destroy();
    expect(await dom.getState()).toEqual({ state: 'shutoff', reason: 'destroyed' });
    // Every event carries the reason of the state it announces.
    expect(types(rec)).toEqual([
      'defined:added',
      'started:booted',
      'suspended:user',
      'resumed:unpaused',
      'suspended:user',
      'stopped:destroyed',
    ]);
  });

  it('a QEMU killed from outside (SIGKILL) → shutoff/crashed, with its event', async () => {
    const rec = recordEvents(conn);
    const dom = await conn.defineDomain(pausedOnly('k'));
    await dom.start({ paused: true });
    const { pid } = await dom.getInfo();
    process.kill(pid as number, 'SIGKILL');
    const stopped = await rec.next((e) => e.type === 'stopped');
    expect(stopped.reason).toBe('crashed');
    expect(await dom.getState()).toEqual({ state: 'shutoff', reason: 'crashed' });
    expect(alive(pid as number)).toBe(false);
    expect(runLeftovers(root)).toEqual([]);
  });

  it('a guest that powers off → shutoff/shutdown', async () => {
    const rec = recordEvents(conn);
    const dom = await conn.defineDomain(tinyGuest('off', 'hello'));
    await dom.start();
    expect(await dom.getState()).toMatchObject({ state: 'running', reason: 'booted' });
    await rec.next((e) => e.type === 'stopped');
    expect(await dom.getState()).toEqual({ state: 'shutoff', reason: 'shutdown' });
    expect(types(rec)).toEqual(['defined:added', 'started:booted', 'stopped:shutdown']);
  });
});

describe('a STOP mapped by its cause', () => {
  it('a disk read error with rerror=stop → paused/ioerror (BLOCK_IO_ERROR before STOP)', async () => {
    const rec = recordEvents(conn);
    // A real failing disk: blkdebug injects EIO into every read, and the guest's virtio_blk probe
    // reads the partition table; rerror=stop makes QEMU pause the VM as libvirt's error_policy='stop'.
    const failing = {
      driver: 'raw',
      'node-name': 'failing',
      file: {
        driver: 'blkdebug',
        'inject-error': [{ event: 'read_aio', errno: 5 }],
        image: { driver: 'null-co', size: 1048576, 'read-zeroes': true },
      },
    };
    const dom = await conn.defineDomain(
      tinyGuest('ioerr', 'devices', {
        qemuCommandline: {
          args: [
            '-blockdev',
            JSON.stringify(failing),
            '-device',
            'virtio-blk-pci,drive=failing,id=failing-disk,addr=0x1e,rerror=stop,werror=stop',
          ],
        },
      }),
    );
    await dom.start();
    const suspended = await rec.next((e) => e.type === 'suspended', 120_000);
    expect(suspended.reason).toBe('ioerror');
    expect(await dom.getState()).toEqual({ state: 'paused', reason: 'ioerror' });
  });
});

/** The state the domain's status file records. */
function recordedState(dir: string, dom: Domain): unknown {
  return (JSON.parse(readFileSync(join(dir, 'run', `${dom.name}.json`), 'utf8')) as { state?: unknown })
    .state;
}

/** Sends one QMP command to the domain's QEMU behind virtkit's back (no driver holds the root). */
async function behindTheBack(dir: string, dom: Domain, command: 'stop' | 'cont'): Promise<void> {
  const qmp = await QmpClient.connect(join(dir, 'run', `${dom.uuid}.qmp`), { timeoutMs: 30_000 });
  try {
    await qmp.execute(command);
  } finally {
    qmp.close();
  }
}

describe('the state across a reconnect (kept in the status file, as libvirt keeps it in its status XML)', () => {
  it('a reason QEMU cannot tell survives; QEMU decides whether the vCPUs run', async () => {
    const dom = await conn.defineDomain(tinyGuest('keep', 'wait'));
    await dom.start();
    expect(await dom.getState()).toEqual({ state: 'running', reason: 'booted' });
    expect(recordedState(root, dom)).toEqual({ state: 'running', reason: 'booted' });
    const { pid } = await dom.getInfo();
    await conn.close();
    conn = await openRoot(root);
    let again = await conn.lookupDomain('keep');
    // QEMU only says `running`: the recorded `booted` stays (it read `unpaused` before).
    expect(await again.getState()).toEqual({ state: 'running', reason: 'booted' });
    expect((await again.getInfo()).pid).toBe(pid);

    await again.suspend();
    expect(recordedState(root, again)).toEqual({ state: 'paused', reason: 'user' });
    await conn.close();
    // The vCPUs run again while no driver watches: QEMU decides, the reason is `unpaused`.
    await behindTheBack(root, again, 'cont');
    conn = await openRoot(root);
    again = await conn.lookupDomain('keep');
    expect(await again.getState()).toEqual({ state: 'running', reason: 'unpaused' });
    expect(recordedState(root, again)).toEqual({ state: 'running', reason: 'unpaused' });

    await conn.close();
    // Paused while no driver watches: recorded running, QEMU paused, so paused with QEMU's reason.
    await behindTheBack(root, again, 'stop');
    conn = await openRoot(root);
    again = await conn.lookupDomain('keep');
    expect(await again.getState()).toEqual({ state: 'paused', reason: 'user' });
    expect((await again.getInfo()).pid).toBe(pid);
  }, 180_000);

  it('a paused destination of a migration stays paused/migrated across a reconnect (QEMU says only paused)', async () => {
    const destRoot = tempRoot('vk-state-dst-');
    let dst = await openRoot(destRoot);
    try {
      const dom = await conn.defineDomain(pausedOnly('moved'));
      await dom.start({ paused: true });
      const moved = await dom.migrateTo(dst, { listen: `unix:${join(destRoot, 'lib', 'in.sock')}` });
      expect(await moved.getState()).toEqual({ state: 'paused', reason: 'migrated' });
      const { pid } = await moved.getInfo();
      await dst.close();
      dst = await openRoot(destRoot);
      const again = await dst.lookupDomain('moved');
      expect(await again.getInfo()).toMatchObject({ state: 'paused', reason: 'migrated', pid });
    } finally {
      for (const d of await dst.listDomains({ state: 'active' })) await d.destroy({ graceMs: 1000 });
      await dst.close();
      removeRoot(destRoot);
    }
  }, 180_000);
});

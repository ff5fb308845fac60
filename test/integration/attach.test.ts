import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { QmpClient } from '../../src/drivers/qemu/qmp/client.js';
import { openInternal } from '../../src/internal/index.js';
import { type Connection, connect, Domain, VirtError } from '../../src/stable/index.js';
import { closeFd, listenUnixSocket } from '../../src/util/libc.js';
import {
  acceptsConnection,
  alive,
  openRoot,
  recordEvents,
  removeRoot,
  runLeftovers,
  tempRoot,
} from '../helpers/env.js';

const QEMU = '/usr/bin/qemu-system-x86_64';
let root: string;
let conn: Connection;
const qemus: ChildProcess[] = [];

beforeEach(async () => {
  root = tempRoot('vk-attach-');
  conn = await openRoot(root);
});

afterEach(async () => {
  for (const dom of await conn.listDomains({ state: 'active' })) await dom.destroy({ graceMs: 1000 });
  await conn.close();
  for (const child of qemus.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
    }
  }
  removeRoot(root);
});

/**
 * Waits until the external QEMU accepts connections on its monitor (or another of its sockets). The socket file appears at bind(),
 * before listen(): a connect in between is refused, so existence alone is not readiness. The probe's
 * connection is closed at once; QEMU then takes the next client from its backlog.
 */
async function waitForMonitor(monitor: string, child: ChildProcess): Promise<void> {
  const end = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error('the external QEMU exited before listening on its monitor');
    const ok = await acceptsConnection(monitor);
    if (ok) return;
    if (Date.now() > end) throw new Error('the external QEMU did not listen on its monitor');
    await sleep(25);
  }
}

/** A QEMU launched by someone else: paused, TCG, two vCPUs, with its own QMP socket. */
async function launchExternal(
  name: string | undefined,
  uuid = randomUUID(),
  extra: readonly string[] = [],
): Promise<{ child: ChildProcess; pid: number; monitor: string; uuid: string }> {
  if (!existsSync(QEMU)) throw new Error(`${QEMU} is missing: install qemu-system-x86`);
  const monitor = join(root, `${name ?? 'anon'}-${qemus.length}.qmp`);
  const args = ['-S', '-machine', 'pc,accel=tcg', '-m', '64', '-smp', '2', '-nodefaults', '-display', 'none'];
  if (name) args.push('-name', name, '-uuid', uuid);
  args.push('-qmp', `unix:${monitor},server=on,wait=off`, ...extra);
  const child = spawn(QEMU, args, { stdio: 'ignore' });
  qemus.push(child);
  await waitForMonitor(monitor, child);
  return { child, pid: child.pid as number, monitor, uuid };
}

const errorOf = async (p: Promise<unknown>): Promise<VirtError> => {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!VirtError.is(err)) throw new Error(`expected a VirtError, got ${String(err)}`);
  return err;
};

/** QEMU's run state, asked on its own monitor (no driver holds it yet). */
async function runState(monitor: string): Promise<string> {
  const qmp = await QmpClient.connect(monitor, { timeoutMs: 30_000 });
  try {
    return (await qmp.command('query-status')).status;
  } finally {
    qmp.close();
  }
}

describe('attach: adopting a QEMU launched outside virtkit', () => {
  it("a QEMU its debugger stopped (run state `debug`, which libvirt's table does not name) reads paused/unknown", async () => {
    const gdbPath = join(root, 'gdb.sock');
    const ext = await launchExternal('debugged', randomUUID(), [
      '-gdb',
      `unix:${gdbPath},server=on,wait=off`,
    ]);
    // QEMU opens its gdb socket after the monitor's: the QMP socket being ready says nothing of it.
    await waitForMonitor(gdbPath, ext.child);
    // One single step over the GDB remote protocol ($s#73): QEMU runs one instruction and stops
    // the VM with run state `debug`.
    const gdb = createConnection(gdbPath);
    const replies: string[] = [];
    gdb.on('data', (chunk) => replies.push(chunk.toString('latin1')));
    try {
      await new Promise<void>((resolve, reject) => {
        gdb.once('connect', resolve);
        gdb.once('error', reject);
      });
      gdb.write('$s#73');
      const end = Date.now() + 60_000;
      while ((await runState(ext.monitor)) !== 'debug') {
        if (Date.now() > end)
          throw new Error(`QEMU never reached run state debug; gdb said ${replies.join('')}`);
        await sleep(100);
      }
      const internal = openInternal(conn, { apiVersion: '1.0' });
      const dom = (await internal.attach({ pid: ext.pid, monitor: ext.monitor })) as Domain;
      // No recorded state to keep and no reason QEMU can tell: libvirt's VIR_DOMAIN_PAUSED_UNKNOWN.
      expect(await dom.getState()).toEqual({ state: 'paused', reason: 'unknown' });
      expect(await dom.getInfo()).toMatchObject({ state: 'paused', reason: 'unknown', pid: ext.pid });
      await dom.destroy({ graceMs: 5000 });
      expect(alive(ext.pid)).toBe(false);
    } finally {
      gdb.destroy();
    }
  });

  it('builds the domain from QMP, taints it, manages it, and forgets it once its QEMU is destroyed', async () => {
    const rec = recordEvents(conn);
    const ext = await launchExternal('outsider');
    const internal = openInternal(conn, { apiVersion: '1.0' });
    const dom = (await internal.attach({ pid: ext.pid, monitor: ext.monitor })) as Domain;
    expect(dom).toBeInstanceOf(Domain);
    expect(dom).toMatchObject({ name: 'outsider', uuid: ext.uuid });
    expect(await dom.getInfo()).toMatchObject({
      state: 'paused',
      pid: ext.pid,
      vcpus: 2,
      memoryKiB: 64 * 1024,
      taints: ['external-launch'],
    });
    expect(dom.getDefinition()).toMatchObject({ type: 'qemu', emulator: QEMU, vcpu: { count: 2 } });
    await dom.resume();
    expect(await internal.monitorCommand(dom, 'query-status')).toMatchObject({ running: true });
    expect((await dom.getInfo()).taints).toEqual(['external-launch', 'custom-monitor']);
    const log = readFileSync(join(root, 'log', 'outsider.log'), 'utf8');
    expect(log).toMatch(new RegExp(`attach: QEMU pid ${ext.pid} `));
    expect(log).toMatch(/tainted: external-launch/);

    await dom.destroy({ graceMs: 5000 });
    expect(alive(ext.pid)).toBe(false);
    await rec.next((e) => e.type === 'undefined');
    expect(rec.events.map((e) => `${e.type}:${e.reason}`)).toEqual([
      'defined:added',
      'started:attached',
      'resumed:unpaused',
      'stopped:destroyed',
      'undefined:removed',
    ]);
    await expect(conn.lookupDomain('outsider')).rejects.toMatchObject({ code: 'NO_DOMAIN' });
    expect(runLeftovers(root)).toEqual([]);
  });

  it('builds disks, NICs, vCPUs and memory from QMP; what it cannot represent is logged, not invented', async () => {
    if (!existsSync(QEMU)) throw new Error(`${QEMU} is missing: install qemu-system-x86`);
    const raw = join(root, 'raw.img');
    const ro = join(root, 'ro.img');
    writeFileSync(raw, Buffer.alloc(1024 * 1024));
    writeFileSync(ro, Buffer.alloc(1024 * 1024));
    const monitor = join(root, 'devices.qmp');
    const child = spawn(
      QEMU,
      [
        ['-S', '-machine', 'pc,accel=tcg', '-m', '96', '-smp', '3', '-nodefaults', '-display', 'none'],
        ['-name', 'devices', '-qmp', `unix:${monitor},server=on,wait=off`],
        // A -drive with a relative name (QEMU resolves it in its cwd), and a read-only -blockdev.
        [
          '-drive',
          'file=raw.img,format=raw,if=none,id=drv0',
          '-device',
          'virtio-blk-pci,drive=drv0,id=disk0',
        ],
        ['-blockdev', `driver=file,filename=${ro},node-name=f1,read-only=on`],
        ['-blockdev', 'driver=raw,file=f1,node-name=r1,read-only=on'],
        ['-device', 'virtio-blk-pci,drive=r1,addr=0x9'],
        ['-netdev', 'user,id=n0', '-device', 'virtio-net-pci,netdev=n0,id=nic0,mac=52:54:00:aa:bb:cc'],
        ['-netdev', 'user,id=n1', '-device', 'e1000,netdev=n1,addr=0x7'],
        ['-netdev', 'user,id=n2', '-device', 'rtl8139,netdev=n2,id=rtl,addr=0x8,mac=52:54:00:00:00:08'],
        ['-device', 'virtio-rng-pci,id=rng0'],
      ].flat(),
      { stdio: 'ignore', cwd: root },
    );
    qemus.push(child);
    await waitForMonitor(monitor, child);
    const internal = openInternal(conn, { apiVersion: '1.0' });
    const dom = (await internal.attach({ pid: child.pid as number, monitor })) as Domain;
    expect(await dom.getInfo()).toMatchObject({ vcpus: 3, memoryKiB: 96 * 1024 });
    const def = dom.getDefinition();
    expect(def.vcpu.count).toBe(3);
    expect(def.disks).toEqual([
      {
        type: 'file',
        device: 'disk',
        driver: { type: 'raw' },
        source: raw,
        target: { dev: 'vda', bus: 'virtio' },
        readonly: false,
        alias: 'disk0',
        address: { type: 'pci', domain: 0, bus: 0, slot: expect.any(Number), function: 0 },
      },
      {
        type: 'file',
        device: 'disk',
        driver: { type: 'raw' },
        source: ro,
        target: { dev: 'vdb', bus: 'virtio' },
        readonly: true,
        address: { type: 'pci', domain: 0, bus: 0, slot: 9, function: 0 },
      },
    ]);
    expect(def.interfaces).toEqual([
      {
        type: 'user',
        model: 'virtio',
        mac: '52:54:00:aa:bb:cc',
        alias: 'nic0',
        address: { type: 'pci', domain: 0, bus: 0, slot: expect.any(Number), function: 0 },
      },
      {
        type: 'user',
        model: 'e1000',
        mac: expect.stringMatching(/^52:54:00:/),
        address: { type: 'pci', domain: 0, bus: 0, slot: 7, function: 0 },
      },
      {
        type: 'user',
        model: 'rtl8139',
        mac: '52:54:00:00:00:08',
        alias: 'rtl',
        address: { type: 'pci', domain: 0, bus: 0, slot: 8, function: 0 },
      },
    ]);
    const xml = dom.toXML();
    expect(xml).toContain(`<source file='${raw}'/>`);
    expect(xml).toContain("<mac address='52:54:00:aa:bb:cc'/>");
    expect(xml).toMatch(/<vcpu[^>]*>3<\/vcpu>/);
    expect(xml).toContain("<memory unit='KiB'>98304</memory>");
    const log = readFileSync(join(root, 'log', 'devices.log'), 'utf8');
    expect(log).toMatch(/attach: not in the definition: \/machine\/peripheral\/rng0 \(virtio-rng-pci\)/);
  });

  it('a later driver reconnects to an attached QEMU, and follows its death', async () => {
    const ext = await launchExternal(undefined);
    const internal = openInternal(conn, { apiVersion: '1.0' });
    const dom = (await internal.attach({ pid: ext.pid, monitor: ext.monitor, name: 'named-here' })) as Domain;
    const uuid = dom.uuid;
    expect(uuid).not.toBe('00000000-0000-0000-0000-000000000000');
    await conn.close();
    expect(alive(ext.pid)).toBe(true);

    conn = await openRoot(root);
    const again = await conn.lookupDomain('named-here');
    expect(again.uuid).toBe(uuid);
    expect(await again.getInfo()).toMatchObject({
      state: 'paused',
      pid: ext.pid,
      taints: ['external-launch'],
    });
    // A job rewrites the status file; a third driver still finds QEMU's own monitor through it.
    await again.resume();
    await conn.close();
    conn = await openRoot(root);
    const rec = recordEvents(conn);
    expect(await (await conn.lookupDomain(uuid)).getInfo()).toMatchObject({ state: 'running', pid: ext.pid });
    ext.child.kill('SIGKILL');
    expect((await rec.next((e) => e.type === 'stopped')).reason).toBe('crashed');
    await rec.next((e) => e.type === 'undefined');
    expect(await conn.listDomains()).toEqual([]);
    expect(runLeftovers(root)).toEqual([]);
  });

  it('accepts a monitor socket created by the launcher and passed to QEMU as a descriptor', async () => {
    // As libvirt and virtkit launch QEMU: the listener is made by the launcher, so the peer
    // credentials name the launcher; QEMU holding that very listening socket is what counts.
    const monitor = join(root, 'passed.qmp');
    const fd = listenUnixSocket(monitor);
    const child = spawn(
      QEMU,
      [
        '-S',
        '-machine',
        'pc,accel=tcg',
        '-m',
        '64',
        '-nodefaults',
        '-display',
        'none',
        '-name',
        'passed',
      ].concat(['-chardev', 'socket,id=mon,fd=3,server=on', '-mon', 'chardev=mon,mode=control']),
      { stdio: ['ignore', 'ignore', 'ignore', fd] },
    );
    qemus.push(child);
    closeFd(fd);
    const internal = openInternal(conn, { apiVersion: '1.0' });
    const dom = (await internal.attach({ pid: child.pid as number, monitor })) as Domain;
    expect(await dom.getInfo()).toMatchObject({ pid: child.pid, vcpus: 1, taints: ['external-launch'] });
  });

  it('refuses, typed, a pid that is not a QEMU, a socket that is not its monitor, a taken name, bad input', async () => {
    const a = await launchExternal('qa');
    const b = await launchExternal('qb');
    const internal = openInternal(conn, { apiVersion: '1.0' });
    const notQemu = await errorOf(internal.attach({ pid: process.pid, monitor: a.monitor }));
    expect(notQemu).toMatchObject({ code: 'OPERATION_INVALID', details: { pid: process.pid } });
    const wrongMonitor = await errorOf(internal.attach({ pid: a.pid, monitor: b.monitor }));
    expect(wrongMonitor).toMatchObject({
      code: 'OPERATION_INVALID',
      details: { pid: a.pid, path: b.monitor },
    });
    expect(wrongMonitor.message).toMatch(/not the monitor/);
    const noSocket = await errorOf(internal.attach({ pid: a.pid, monitor: join(root, 'nothing.qmp') }));
    expect(noSocket.code).toBe('SYSTEM_ERROR');
    for (const [options, field] of [
      [{ pid: -1, monitor: a.monitor }, 'pid'],
      [{ pid: a.pid, monitor: 'relative.qmp' }, 'monitor'],
      [{ pid: a.pid, monitor: a.monitor, name: 'a/b' }, 'name'],
      [{ pid: a.pid, monitor: a.monitor, extra: 1 }, ''],
    ] as const) {
      expect(await errorOf(internal.attach(options as never))).toMatchObject({
        code: 'XML_ERROR',
        details: { field },
      });
    }
    // None of that adopted or harmed anything.
    expect(await conn.listDomains()).toEqual([]);
    expect(alive(a.pid) && alive(b.pid)).toBe(true);

    await conn.defineDomain({ name: 'qa', type: 'qemu', memoryKiB: 65536 });
    expect((await errorOf(internal.attach({ pid: a.pid, monitor: a.monitor }))).code).toBe('DOMAIN_EXISTS');
    // The monitor was released: the same QEMU can still be attached under another name.
    const dom = (await internal.attach({ pid: a.pid, monitor: a.monitor, name: 'qa2' })) as Domain;
    expect((await dom.getInfo()).pid).toBe(a.pid);

    await using testConn = await connect('test:///default');
    const noSupport = await errorOf(
      openInternal(testConn, { apiVersion: '1.0' }).attach({ pid: b.pid, monitor: b.monitor }),
    );
    expect(noSupport.code).toBe('NO_SUPPORT');
  });
});

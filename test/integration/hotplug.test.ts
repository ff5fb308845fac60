import { existsSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { QmpClient } from '../../src/drivers/qemu/qmp/client.js';
import { openInternal } from '../../src/internal/index.js';
import type { Connection, Domain } from '../../src/stable/index.js';
import { openTap } from '../../src/util/tap.js';
import { openRoot, recordEvents, removeRoot, runLeftovers, tempRoot, tinyGuest } from '../helpers/env.js';

/*
 * Hotplug on a running TCG busybox guest that reports on its serial console the virtio disks and
 * NICs it sees (`VIRTKIT-DEVICES blk:vda:<sectors> net:eth0:<mac>;`), with the descriptors opened
 * by handlers in phase `hotplug`, and a second QMP monitor to see QEMU's side of a rollback.
 */

let root: string;
let conn: Connection;
const closers: Array<() => void> = [];
const calls: Array<{ op: string; phase: string; domain: unknown; what: unknown }> = [];
let failDisk = false;

beforeEach(async () => {
  root = tempRoot();
  conn = await openRoot(root);
  calls.length = 0;
  failDisk = false;
  const internal = openInternal(conn, { apiVersion: '1.0' });
  internal.setHandler('storage.openFile', (ctx, args) => {
    calls.push({ op: 'storage.openFile', phase: ctx.phase, domain: ctx.domain, what: args.path });
    if (failDisk && ctx.phase === 'hotplug') throw new Error('no disk for you');
    return { fd: openSync(args.path, args.mode === 'r' ? 'r' : 'r+') };
  });
  internal.setHandler('net.openTap', (ctx, args) => {
    calls.push({ op: 'net.openTap', phase: ctx.phase, domain: ctx.domain, what: args.ifname });
    return openTap(args.ifname, { queues: args.queues, vnetHdr: args.vnetHdr });
  });
});
afterEach(async () => {
  for (const close of closers.splice(0)) close();
  for (const dom of await conn.listDomains({ state: 'active' })) await dom.destroy({ graceMs: 1000 });
  await conn.close();
  expect(runLeftovers(root)).toEqual([]);
  removeRoot(root);
});

/** The console's latest device report, once `match` holds for it. */
async function guestSees(
  dom: Domain,
  match: (report: string) => boolean,
  timeoutMs = 90_000,
): Promise<string> {
  const console = join(root, 'log', `${dom.name}.console.log`);
  const until = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < until) {
    const text = existsSync(console) ? readFileSync(console, 'utf8') : '';
    const reports = [...text.matchAll(/VIRTKIT-DEVICES([^;]*);/g)].map((m) => (m[1] ?? '').trim());
    last = reports.at(-1) ?? '';
    if (reports.length > 0 && match(last)) return last;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`the guest never reported the expected devices; last report: '${last}'`);
}

async function startGuest(name: string): Promise<{ dom: Domain; qmp: QmpClient }> {
  const probe = join(root, `${name}.qmp`);
  const dom = await conn.defineDomain(
    tinyGuest(name, 'devices', {
      qemuCommandline: { args: ['-qmp', `unix:${probe},server=on,wait=off`], env: [] },
    }),
  );
  await dom.start();
  const qmp = await QmpClient.connect(probe, { timeoutMs: 10_000 });
  closers.push(() => qmp.close());
  await guestSees(dom, (r) => r === '');
  return { dom, qmp };
}

function image(name: string, mib: number): string {
  const path = join(root, 'lib', name);
  writeFileSync(path, Buffer.alloc(mib * 1024 * 1024));
  return path;
}

const diskXml = (path: string, dev: string) =>
  `<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='${path}'/><target dev='${dev}' bus='virtio'/></disk>`;

async function blockState(qmp: QmpClient) {
  const nodes = await qmp.execute<Array<{ 'node-name': string }>>('query-named-block-nodes', { flat: true });
  const sets = await qmp.execute<Array<{ 'fdset-id': number }>>('query-fdsets');
  const pci = await qmp.execute<Array<{ devices: Array<{ qdev_id: string }> }>>('query-pci');
  return {
    nodes: nodes.map((n) => n['node-name']).sort(),
    sets: sets.map((s) => s['fdset-id']).sort(),
    devices: pci.flatMap((b) => b.devices.map((d) => d.qdev_id)).sort(),
  };
}

describe('hotplug on a running guest', { timeout: 300_000 }, () => {
  it('a disk: opened in phase hotplug, seen by the guest with its size, gone after detach', async () => {
    const events = recordEvents(conn);
    const { dom, qmp } = await startGuest('hp-disk');
    const path = image('extra.img', 4);
    await dom.attachDevice(diskXml(path, 'vdb'), { live: true });
    expect(await guestSees(dom, (r) => r.includes('blk:vda:8192'))).toBe('blk:vda:8192');
    const hot = calls.filter((c) => c.phase === 'hotplug');
    expect(hot).toEqual([
      {
        op: 'storage.openFile',
        phase: 'hotplug',
        domain: expect.objectContaining({ uuid: dom.uuid, name: 'hp-disk' }),
        what: path,
      },
    ]);
    await events.next((e) => e.type === 'device-added' && e.reason === 'virtio-disk1');
    const live = dom.getDefinition().disks;
    expect(live.map((d) => d.alias)).toEqual(['virtio-disk1']);
    expect(live[0]?.address).toEqual({ type: 'pci', domain: 0, bus: 0, slot: 2, function: 0 });
    expect(dom.toXML()).toContain("<alias name='virtio-disk1'/>");
    expect((await blockState(qmp)).devices).toContain('virtio-disk1');

    await dom.detachDevice('virtio-disk1', { live: true });
    await guestSees(dom, (r) => r === '');
    await events.next((e) => e.type === 'device-removed' && e.reason === 'virtio-disk1');
    expect(dom.getDefinition().disks).toEqual([]);
    expect(await blockState(qmp)).toMatchObject({ nodes: [], sets: [] });
    // The persistent definition never had it.
    await dom.destroy();
    expect(dom.getDefinition().disks).toEqual([]);
  });

  it('a disk whose handler fails, or whose image QEMU refuses, leaves the VM exactly as it was', async () => {
    const { dom, qmp } = await startGuest('hp-rollback');
    const before = await blockState(qmp);
    failDisk = true;
    await expect(dom.attachDevice(diskXml(image('a.img', 1), 'vdb'), { live: true })).rejects.toMatchObject({
      code: 'HANDLER_FAILED',
      details: expect.objectContaining({ operation: 'storage.openFile', phase: 'hotplug' }),
    });
    failDisk = false;
    // A raw file declared qcow2: add-fd and the storage node succeed, the format node fails.
    const bad = `<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${image('b.img', 1)}'/><target dev='vdb' bus='virtio'/></disk>`;
    await expect(dom.attachDevice(bad, { live: true })).rejects.toMatchObject({ code: 'OPERATION_FAILED' });
    expect(await blockState(qmp)).toEqual(before);
    expect(dom.getDefinition().disks).toEqual([]);
    // And the next attach works.
    await dom.attachDevice(diskXml(image('c.img', 2), 'vdc'), { live: true });
    await guestSees(dom, (r) => r.includes('blk:vda:4096'));
  });

  it('an interface: a TAP from net.openTap in phase hotplug, the guest sees the MAC, gone after detach', async () => {
    const { dom } = await startGuest('hp-nic');
    const mac = '52:54:00:aa:00:01';
    await dom.attachDevice(
      `<interface type='ethernet'><mac address='${mac}'/><target dev='vkhp0'/><model type='virtio'/></interface>`,
      { live: true },
    );
    expect(calls.filter((c) => c.phase === 'hotplug').map((c) => [c.op, c.what])).toEqual([
      ['net.openTap', 'vkhp0'],
    ]);
    expect(existsSync('/sys/class/net/vkhp0')).toBe(true);
    await guestSees(dom, (r) => r.includes(`net:eth0:${mac}`));
    const alias = dom.getDefinition().interfaces[0]?.alias;
    expect(alias).toBe('net0');
    await dom.detachDevice(
      `<interface type='ethernet'><mac address='${mac}'/><model type='virtio'/></interface>`,
      { live: true },
    );
    await guestSees(dom, (r) => r === '');
    expect(existsSync('/sys/class/net/vkhp0')).toBe(false);
  });

  it('a detach the guest does not answer in time fails with OPERATION_TIMEOUT, and completes when it lets go', async () => {
    const events = recordEvents(conn);
    const { dom, qmp } = await startGuest('hp-timeout');
    await dom.attachDevice(diskXml(image('t.img', 1), 'vdb'), { live: true });
    await guestSees(dom, (r) => r.includes('blk:vda:2048'));
    await dom.suspend();
    await expect(dom.detachDevice('virtio-disk1', { live: true, timeoutMs: 1000 })).rejects.toMatchObject({
      code: 'OPERATION_TIMEOUT',
    });
    expect(dom.getDefinition().disks.map((d) => d.alias)).toEqual(['virtio-disk1']);
    expect((await blockState(qmp)).devices).toContain('virtio-disk1');
    await dom.resume();
    await events.next((e) => e.type === 'device-removed' && e.reason === 'virtio-disk1');
    await guestSees(dom, (r) => r === '');
    expect(dom.getDefinition().disks).toEqual([]);
    expect(await blockState(qmp)).toMatchObject({ nodes: [], sets: [] });
  });

  it('config only: the persistent definition changes, the running VM does not', async () => {
    const { dom } = await startGuest('hp-config');
    await dom.attachDevice(diskXml(image('p.img', 1), 'vdb'), { config: true });
    expect(dom.getDefinition().disks).toEqual([]);
    await dom.destroy();
    const persistent = dom.getDefinition().disks;
    expect(persistent.map((d) => [d.target.dev, d.alias])).toEqual([['vdb', 'virtio-disk1']]);
    await dom.detachDevice('virtio-disk1', { config: true });
    expect(dom.getDefinition().disks).toEqual([]);
    await expect(dom.attachDevice(diskXml(image('q.img', 1), 'vdb'), { live: true })).rejects.toMatchObject({
      code: 'OPERATION_INVALID',
    });
  });

  it('a device attached by one driver is detached by the next one after a reconnect', async () => {
    const { dom } = await startGuest('hp-reconnect');
    await dom.attachDevice(diskXml(image('r.img', 2), 'vdb'), { live: true });
    await guestSees(dom, (r) => r.includes('blk:vda:4096'));
    // The attach's one record after the change holds the disk and says that its job is over.
    const status = JSON.parse(readFileSync(join(root, 'run', 'hp-reconnect.json'), 'utf8')) as {
      job?: unknown;
      live: { disks: Array<{ alias?: string }> };
    };
    expect(status.job).toBeUndefined();
    expect(status.live.disks.map((d) => d.alias)).toEqual(['virtio-disk1']);
    await conn.close();
    conn = await openRoot(root);
    const again = await conn.lookupDomain('hp-reconnect');
    expect(again.getDefinition().disks.map((d) => d.alias)).toEqual(['virtio-disk1']);
    await again.detachDevice('virtio-disk1', { live: true });
    await guestSees(again, (r) => r === '');
  });
});

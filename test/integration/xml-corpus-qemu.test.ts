import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { fdsetIdOf } from '../../src/drivers/qemu/devices/fdset.js';
import { QmpClient } from '../../src/drivers/qemu/qmp/client.js';
import { resolveDomainXml } from '../../src/stable/definition/xml.js';
import type { Connection, DomainDefinition } from '../../src/stable/index.js';
import { schedGet } from '../../src/util/libc.js';
import { ensureGuestImage } from '../fixtures/guest-image.js';
import { forThisHost, openRoot, removeRoot, runLeftovers, tempRoot } from '../helpers/env.js';

/*
 * Each corpus document is defined from its XML, started (paused: no guest code needs to run) and
 * inspected through a second QMP monitor, to see that the running QEMU has the shape the XML asked
 * for; then toXML() of the live domain re-parses to the live definition.
 */

const CORPUS = join(__dirname, '..', 'fixtures', 'xml');
const HUGEPAGES = '/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages';
let root: string;
let conn: Connection;
let files: string;
const cleanups: Array<() => void> = [];
const savedHugepages = readFileSync(HUGEPAGES, 'utf8').trim();

beforeAll(() => {
  // The KubeVirt document asks for 1 GiB of hugepage-backed memory.
  writeFileSync(HUGEPAGES, '640');
});
afterAll(() => writeFileSync(HUGEPAGES, savedHugepages));

beforeEach(async () => {
  root = tempRoot();
  files = join(root, 'files');
  mkdirSync(files);
  conn = await openRoot(root);
});
afterEach(async () => {
  for (const dom of await conn.listDomains({ state: 'active' })) await dom.destroy({ graceMs: 1000 });
  await conn.close();
  for (const c of cleanups.splice(0).reverse()) c();
  removeRoot(root);
});

const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { stdio: 'pipe' }).toString().trim();

/** The corpus document with its host paths moved into this test's root, and those files made. */
function prepare(file: string): string {
  let xml = forThisHost(readFileSync(join(CORPUS, file), 'utf8'));
  const image = ensureGuestImage();
  xml = xml
    .replaceAll('/var/lib/virtkit-test/vmlinuz', image.kernel)
    .replaceAll('/var/lib/virtkit-test/initrd.img', image.initrd)
    .replaceAll(/\/var\/(lib|run)\/[a-z0-9/_.-]+?([a-z0-9_.-]+\.(qcow2|raw|img|iso|log))/gi, `${files}/$2`);
  for (const disk of resolveDomainXml(xml).disks) {
    if (disk.type !== 'file' || disk.source === undefined || existsSync(disk.source)) continue;
    if (disk.driver.type === 'qcow2') sh('qemu-img', ['create', '-q', '-f', 'qcow2', disk.source, '64M']);
    else writeFileSync(disk.source, Buffer.alloc(1024 * 1024));
  }
  for (const m of xml.matchAll(/dev=['"](\/dev\/[^'"]+)['"]/g)) {
    const backing = join(files, 'block.raw');
    writeFileSync(backing, Buffer.alloc(4 * 1024 * 1024));
    const loop = sh('losetup', ['--find', '--show', backing]);
    cleanups.push(() => sh('losetup', ['-d', loop]));
    xml = xml.replaceAll(m[1] as string, loop);
  }
  return xml;
}

/** A TAP someone else created, as `managed='no'` promises. */
function precreateTap(name: string, multiQueue: boolean): void {
  sh('ip', ['tuntap', 'add', 'dev', name, 'mode', 'tap', 'vnet_hdr', ...(multiQueue ? ['multi_queue'] : [])]);
  cleanups.push(() => sh('ip', ['link', 'del', name]));
}

/** Defines the document with a second QMP monitor for the test to look through, and starts it paused. */
async function startWithProbe(xml: string): Promise<{ qmp: QmpClient; live: DomainDefinition; pid: number }> {
  const probe = join(root, 'probe.qmp');
  const def = resolveDomainXml(xml);
  const args = [...(def.qemuCommandline?.args ?? []), '-qmp', `unix:${probe},server=on,wait=off`];
  const dom = await conn.defineDomain({
    ...def,
    qemuCommandline: { args, env: def.qemuCommandline?.env ?? [] },
  });
  await dom.start({ paused: true });
  const qmp = await QmpClient.connect(probe, { timeoutMs: 10_000 });
  cleanups.push(() => qmp.close());
  const live = dom.getDefinition();
  // toXML of the live domain re-parses to the live definition.
  // A pty's path is output only (the one QEMU allocated): it is formatted, not read back.
  const serials = live.serials?.map((s) => (s.type === 'pty' ? { ...s, path: undefined } : s));
  expect(resolveDomainXml(dom.toXML())).toEqual(JSON.parse(JSON.stringify({ ...live, serials })));
  return { qmp, live, pid: (await dom.getInfo()).pid as number };
}

interface CpuFast {
  'cpu-index': number;
  'thread-id': number;
  props: { 'socket-id': number; 'core-id': number; 'thread-id': number; 'die-id'?: number };
}

/** vCPU count and topology, memory size, block devices, netdevs and iothreads, as QEMU reports them. */
async function expectShape(qmp: QmpClient, def: DomainDefinition, pid: number): Promise<void> {
  const status = await qmp.execute<{ status: string }>('query-status');
  expect(status.status).toBe('prelaunch');

  const cpus = await qmp.execute<CpuFast[]>('query-cpus-fast');
  expect(cpus).toHaveLength(def.vcpu.current ?? def.vcpu.count);
  const slots = await qmp.execute<unknown[]>('query-hotpluggable-cpus');
  expect(slots).toHaveLength(def.vcpu.count);
  const topo = def.cpu?.topology ?? { sockets: def.vcpu.count, dies: 1, cores: 1, threads: 1 };
  for (const c of cpus) {
    expect(c.props['socket-id']).toBeLessThan(topo.sockets);
    expect(c.props['core-id']).toBeLessThan(topo.cores);
    expect(c.props['thread-id']).toBeLessThan(topo.threads);
  }

  const mem = await qmp.execute<{ 'base-memory': number }>('query-memory-size-summary');
  expect(mem['base-memory']).toBe(def.memoryKiB * 1024);

  // Disks: each image reached QEMU as a descriptor of that very file, with its format and ro flag.
  const fdsets =
    await qmp.execute<Array<{ 'fdset-id': number; fds: Array<{ fd: number; opaque?: string }> }>>(
      'query-fdsets',
    );
  const nodes = await qmp.execute<Array<{ 'node-name': string; drv: string; ro: boolean }>>(
    'query-named-block-nodes',
    {
      flat: true,
    },
  );
  const held = readdirSync(`/proc/${pid}/fd`).map((fd) => readlinkSync(`/proc/${pid}/fd/${fd}`));
  def.disks.forEach((disk) => {
    // The fdset and the node names derive from the disk's alias.
    const set = fdsets.find((s) => s['fdset-id'] === fdsetIdOf(disk.alias as string));
    expect(set?.fds[0]?.opaque).toBe(disk.source);
    expect(held).toContain(disk.source);
    const format = nodes.find((n) => n['node-name'] === `${disk.alias}-format`);
    expect(format).toMatchObject({ drv: disk.driver.type, ro: disk.readonly });
  });
  expect(nodes.filter((n) => n['node-name'].endsWith('-format'))).toHaveLength(def.disks.length);

  // Interfaces: a device per interface on its netdev, with its MAC; TAPs as QEMU-held fds.
  for (const nic of def.interfaces) {
    const path = `/machine/peripheral/${nic.alias}`;
    expect(await qmp.execute('qom-get', { path, property: 'netdev' })).toBe(`host${nic.alias}`);
    if (nic.mac) expect(await qmp.execute('qom-get', { path, property: 'mac' })).toBe(nic.mac);
  }
  const network = await qmp.execute<string>('human-monitor-command', { 'command-line': 'info network' });
  for (const nic of def.interfaces) {
    expect(network).toMatch(new RegExp(`host${nic.alias}: .*${nic.type === 'user' ? 'net=' : 'fd='}`));
  }
  if (def.interfaces.some((n) => n.type === 'ethernet')) expect(held).toContain('/dev/net/tun');

  const iothreads = await qmp.execute<Array<{ id: string }>>('query-iothreads');
  expect(iothreads.map((t) => t.id).sort()).toEqual(
    Array.from({ length: def.iothreads }, (_, i) => `iothread${i + 1}`).sort(),
  );
}

describe('the XML corpus on a real QEMU', () => {
  it('virt-install q35 KVM guest: qcow2 virtio disk, user networking, pty console', async () => {
    const { qmp, live, pid } = await startWithProbe(prepare('virt-install-q35-kvm.xml'));
    await expectShape(qmp, live, pid);
    expect(live.title).toBe('Fedora workstation');
    expect(live.serials).toEqual([{ type: 'pty', path: expect.stringMatching(/^\/dev\/pts\/\d+$/) }]);
  });

  it('TCG direct-kernel guest: sata disks and cdrom, currentMemory through the balloon, file serial', async () => {
    const { qmp, live, pid } = await startWithProbe(prepare('tcg-direct-kernel.xml'));
    await expectShape(qmp, live, pid);
    const balloon = await qmp.execute<{ actual: number }>('query-balloon');
    expect(balloon.actual).toBeLessThanOrEqual(256 * 1024 * 1024);
    expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')).toContain(ensureGuestImage().kernel);
  });

  it("TAP guest: a pre-created multiqueue TAP (managed='no'), a managed one, a block device, memory slots", async () => {
    precreateTap('vk-tap0', true);
    const xml = prepare('ethernet-tap.xml');
    const { qmp, live, pid } = await startWithProbe(xml);
    await expectShape(qmp, live, pid);
    // Four queues: four descriptors of vk-tap0; the managed TAP was created by the driver.
    const taps = readdirSync(`/proc/${pid}/fd`).filter(
      (fd) => readlinkSync(`/proc/${pid}/fd/${fd}`) === '/dev/net/tun',
    );
    expect(taps).toHaveLength(5);
    expect(existsSync('/sys/class/net/vk-tap1')).toBe(true);
    const mem = await qmp.execute<{ 'base-memory': number }>('query-memory-size-summary');
    expect(mem['base-memory']).toBe(1024 ** 3);
  });

  it('KubeVirt real-time guest: its locked-memory need is refused on this host, with the reason', async () => {
    precreateTap('tap0', true);
    const dom = await conn.defineDomain(prepare('kubevirt-realtime.xml'));
    // memtune hard_limit asks for 1.5 GiB of locked memory; this host caps RLIMIT_MEMLOCK at
    // 8 MiB and nothing here holds CAP_SYS_RESOURCE, so the built-in prlimit must be denied.
    await expect(dom.start({ paused: true })).rejects.toMatchObject({
      code: 'ACCESS_DENIED',
      details: { operation: 'process.setMaxMemLock', capability: 'CAP_SYS_RESOURCE' },
    });
    expect(runLeftovers(root)).toEqual([]);
    expect(readFileSync(join(root, 'log', 'default_vmi-realtime.log'), 'utf8')).toMatch(
      /process\.setMaxMemLock phase=pre-exec via=built-in .*failed/,
    );
  });

  it('KubeVirt real-time guest without the locked memory: hugepages, pins, FIFO vCPUs, iothread, TAP queues', async () => {
    precreateTap('tap0', true);
    const xml = prepare('kubevirt-realtime.xml')
      .replace(/<memtune>[\s\S]*?<\/memtune>/, '')
      .replace('<locked></locked>', '');
    const { qmp, live, pid } = await startWithProbe(xml);
    await expectShape(qmp, live, pid);
    expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8')).toContain('"mem-path":"/dev/hugepages"');
    expect(readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')).toContain('KUBEVIRT_EXAMPLE=realtime');
    const threads = await qmp.execute<CpuFast[]>('query-cpus-fast');
    const [iothread] = await qmp.execute<Array<{ 'thread-id': number }>>('query-iothreads');
    expect(schedGet(iothread?.['thread-id'] as number)).toEqual({ policy: 'fifo', priority: 5 });
    for (const t of threads) {
      expect(schedGet(t['thread-id'])).toEqual({ policy: 'fifo', priority: 10 });
    }
  });

  it('a minimal document with libvirt defaults', async () => {
    const { qmp, live, pid } = await startWithProbe(prepare('minimal-no-features.xml'));
    await expectShape(qmp, live, pid);
    expect(live.features).toEqual({ acpi: false, apic: false });
  });
});

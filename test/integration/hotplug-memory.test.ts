import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { QmpClient } from '../../src/drivers/qemu/qmp/client.js';
import { openInternal } from '../../src/internal/index.js';
import {
  type Connection,
  type Domain,
  type DomainDefinitionInput,
  parseDomainXml,
} from '../../src/stable/index.js';
import { prlimitGet, prlimitSet, RLIMIT } from '../../src/util/libc.js';
import { openRoot, recordEvents, removeRoot, runLeftovers, tempRoot, tinyGuest } from '../helpers/env.js';

/*
 * Memory hotplug (pc-dimm) on a running TCG busybox guest that onlines every memory block that
 * appears and reports MemTotal on its serial console (`VIRTKIT-RESOURCES cpus:0 mem:<KiB>;`). The
 * domain's memlock need is its memtune hard_limit (4 MiB, under this machine's 8 MiB ceiling);
 * the test lowers the QEMU process's limit after start, as a launcher with a lower limit would have
 * left it, so the attach must raise it through `process.setMaxMemLock` in phase `hotplug` before
 * the backend exists. A second QMP monitor shows QEMU's side of each step and rollback.
 */

let root: string;
let conn: Connection;
const closers: Array<() => void> = [];
const calls: Array<{ phase: string; domain: unknown; bytes: unknown; rule: string; dimmsThen: number }> = [];
let failMemLock = false;
let probeQmp: QmpClient | undefined;

beforeEach(async () => {
  root = tempRoot();
  conn = await openRoot(root);
  calls.length = 0;
  failMemLock = false;
  probeQmp = undefined;
  openInternal(conn, { apiVersion: '1.0' }).setHandler('process.setMaxMemLock', async (ctx, args) => {
    // What QEMU has at the moment of the call: no backend of the new DIMM yet.
    const dimmsThen = probeQmp ? (await probeQmp.execute<unknown[]>('query-memory-devices')).length : -1;
    calls.push({
      phase: ctx.phase,
      domain: ctx.domain,
      bytes: args.bytes,
      rule: args.breakdown.rule,
      dimmsThen,
    });
    if (failMemLock && ctx.phase === 'hotplug') throw new Error('no memory for you');
    prlimitSet(args.pid, RLIMIT.MEMLOCK, { soft: args.bytes, hard: args.bytes });
  });
});
afterEach(async () => {
  for (const close of closers.splice(0)) close();
  for (const dom of await conn.listDomains({ state: 'active' })) await dom.destroy({ graceMs: 1000 });
  await conn.close();
  expect(runLeftovers(root)).toEqual([]);
  removeRoot(root);
});

const MiB = 1024;

/** A launcher's lower limit (the hard one stays: raising it back would need CAP_SYS_RESOURCE). */
function lowerMemLock(pid: number): void {
  prlimitSet(pid, RLIMIT.MEMLOCK, { soft: 1024n * 1024n, hard: prlimitGet(pid, RLIMIT.MEMLOCK).hard });
}

function guest(name: string, extra: Partial<DomainDefinitionInput> = {}): DomainDefinitionInput {
  return tinyGuest(name, 'resources', {
    memoryKiB: 192 * MiB,
    maxMemory: { kib: 1024 * MiB, slots: 2 },
    memtune: { hardLimitKiB: 4096 },
    qemuCommandline: { args: ['-qmp', `unix:${join(root, `${name}.qmp`)},server=on,wait=off`], env: [] },
    ...extra,
  });
}

async function startGuest(name: string, extra: Partial<DomainDefinitionInput> = {}) {
  return boot(await conn.defineDomain(guest(name, extra)));
}

async function boot(dom: Domain) {
  await dom.start();
  const qmp = await QmpClient.connect(join(root, `${dom.name}.qmp`), { timeoutMs: 10_000 });
  closers.push(() => qmp.close());
  probeQmp = qmp;
  const first = memOf(await guestSees(dom, () => true));
  return { dom, qmp, boot: first, pid: (await dom.getInfo()).pid as number };
}

/** The console's latest resource report, once `match` holds for it. */
async function guestSees(
  dom: Domain,
  match: (report: string) => boolean,
  timeoutMs = 120_000,
): Promise<string> {
  const console = join(root, 'log', `${dom.name}.console.log`);
  const until = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < until) {
    const text = existsSync(console) ? readFileSync(console, 'utf8') : '';
    last = [...text.matchAll(/VIRTKIT-RESOURCES ([^;]*);/g)].at(-1)?.[1] ?? '';
    if (last !== '' && match(last)) return last;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`the guest never reported the expected resources; last report: '${last}'`);
}

const memOf = (report: string): number => Number(/mem:(\d+)/.exec(report)?.[1] ?? Number.NaN);

const dimmXml = (mib: number, node = '') =>
  `<memory model='dimm'><target><size unit='MiB'>${mib}</size>${node}</target></memory>`;

async function qemuMemory(qmp: QmpClient) {
  const devices = await qmp.execute<Array<{ data: { id?: string; size: number } }>>('query-memory-devices');
  const objects = await qmp.execute<Array<{ name: string }>>('qom-list', { path: '/objects' });
  return {
    dimms: devices.map((d) => [d.data.id, d.data.size]),
    backends: objects.map((o) => o.name).filter((n) => n.startsWith('mem')),
  };
}

describe('memory hotplug on a running guest', { timeout: 400_000 }, () => {
  it('a DIMM: memlock raised in phase hotplug before the backend exists, the guest onlines it, gone after detach', async () => {
    const events = recordEvents(conn);
    const { dom, qmp, boot, pid } = await startGuest('mem-hot');
    // The launcher's lower limit: the domain's need (memtune hard_limit, 4 MiB) is not covered.
    lowerMemLock(pid);
    calls.length = 0;

    await dom.attachDevice(dimmXml(128), { live: true });
    expect(calls).toEqual([
      {
        phase: 'hotplug',
        domain: expect.objectContaining({ uuid: dom.uuid, name: 'mem-hot' }),
        bytes: 4096n * 1024n,
        rule: 'hard_limit',
        dimmsThen: 0,
      },
    ]);
    expect(prlimitGet(pid, RLIMIT.MEMLOCK)).toEqual({ soft: 4096n * 1024n, hard: 4096n * 1024n });
    expect(await qemuMemory(qmp)).toEqual({ dimms: [['dimm0', 128 * 1024 * 1024]], backends: ['memdimm0'] });
    await events.next((e) => e.type === 'device-added' && e.reason === 'dimm0');
    // The guest onlined the 128 MiB.
    await guestSees(dom, (r) => memOf(r) >= boot + 120 * MiB);
    const def = dom.getDefinition();
    expect(def.memoryKiB).toBe(320 * MiB);
    expect(def.memoryDevices).toEqual([{ model: 'dimm', sizeKiB: 128 * MiB, slot: 0, alias: 'dimm0' }]);
    expect(dom.toXML()).toMatch(
      /<memory model='dimm'>\s*<target>\s*<size unit='KiB'>131072<\/size>\s*<\/target>\s*<alias name='dimm0'\/>\s*<address type='dimm' slot='0'\/>/,
    );
    expect(parseDomainXml(dom.toXML()).memoryDevices).toEqual(def.memoryDevices);
    expect(dom.getDefinition({ inactive: true }).memoryDevices).toBe(undefined);

    // The limit covers the need now: a second DIMM does not invoke the handler.
    calls.length = 0;
    await dom.attachDevice(dimmXml(128), { live: true });
    expect(calls).toEqual([]);
    await guestSees(dom, (r) => memOf(r) >= boot + 250 * MiB);
    // Both slots are taken.
    await expect(dom.attachDevice(dimmXml(128), { live: true })).rejects.toMatchObject({
      code: 'OPERATION_INVALID',
      details: expect.objectContaining({ path: 'maxMemory.slots' }),
    });

    await dom.detachDevice('dimm1', { live: true, timeoutMs: 60_000 });
    await events.next((e) => e.type === 'device-removed' && e.reason === 'dimm1');
    await guestSees(dom, (r) => memOf(r) < boot + 130 * MiB);
    expect(await qemuMemory(qmp)).toEqual({ dimms: [['dimm0', 128 * 1024 * 1024]], backends: ['memdimm0'] });
    expect(dom.getDefinition().memoryKiB).toBe(320 * MiB);
  });

  it('a failing memlock handler, or a DIMM QEMU refuses, leaves the VM exactly as it was', async () => {
    const { dom, qmp, pid } = await startGuest('mem-rollback');
    lowerMemLock(pid);
    const before = await qemuMemory(qmp);
    failMemLock = true;
    await expect(dom.attachDevice(dimmXml(128), { live: true })).rejects.toMatchObject({
      code: 'HANDLER_FAILED',
      details: expect.objectContaining({ operation: 'process.setMaxMemLock', phase: 'hotplug' }),
    });
    expect(await qemuMemory(qmp)).toEqual(before);
    failMemLock = false;
    // NUMA node 3 of a domain without NUMA cells: the backend is made, the device refused.
    await expect(dom.attachDevice(dimmXml(128, '<node>3</node>'), { live: true })).rejects.toMatchObject({
      code: 'OPERATION_FAILED',
    });
    expect(await qemuMemory(qmp)).toEqual(before);
    expect(dom.getDefinition().memoryKiB).toBe(192 * MiB);
    expect(dom.getDefinition().memoryDevices).toBe(undefined);
    // And the next attach works.
    await dom.attachDevice(dimmXml(128), { live: true });
    expect((await qemuMemory(qmp)).dimms).toEqual([['dimm0', 128 * 1024 * 1024]]);
  });

  it('config only reaches the next start; no maxMemory and bad sizes are typed errors', async () => {
    const plain = await conn.defineDomain(guest('mem-plain', { maxMemory: undefined }));
    await expect(plain.attachDevice(dimmXml(128), { config: true })).rejects.toMatchObject({
      code: 'CONFIG_UNSUPPORTED',
      details: { path: 'maxMemory' },
    });
    const dom = await conn.defineDomain(guest('mem-config'));
    await expect(dom.attachDevice(dimmXml(1024), { config: true })).rejects.toMatchObject({
      code: 'OPERATION_INVALID',
    });
    await dom.attachDevice(dimmXml(128), { config: true });
    expect(dom.getDefinition().memoryKiB).toBe(320 * MiB);
    expect(dom.getDefinition().memoryDevices).toEqual([
      { model: 'dimm', sizeKiB: 128 * MiB, slot: 0, alias: 'dimm0' },
    ]);
    const { qmp } = await boot(dom);
    // Started with 192 MiB of boot memory plus the DIMM: MemTotal of the boot memory alone is
    // below 192 MiB (the kernel keeps some), so more than that is the DIMM, onlined by the guest.
    expect(await qemuMemory(qmp)).toEqual({ dimms: [['dimm0', 128 * 1024 * 1024]], backends: ['memdimm0'] });
    await guestSees(dom, (r) => memOf(r) > 192 * MiB);
  });
});

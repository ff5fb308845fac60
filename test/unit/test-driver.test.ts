import { mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openInternal, SIMULATED_PID_BASE, simulatedHost } from '../../src/internal/index.js';
import type { Connection, DomainDefinitionInput, DomainEvent } from '../../src/stable/index.js';
import { connect } from '../../src/stable/index.js';
import { makeCredentials } from '../helpers/tls.js';

/*
 * The in-memory test driver (`test:///default`): the embedded driver's rules and events, no QEMU.
 */

const guest = (name: string, extra: Partial<DomainDefinitionInput> = {}) =>
  ({ name, type: 'qemu', memoryKiB: 64 * 1024, ...extra }) satisfies DomainDefinitionInput;

let conn: Connection;
let events: string[];

beforeEach(async () => {
  conn = await connect('test:///default');
  events = [];
  conn.on('domain-event', (e: DomainEvent) => events.push(`${e.type}:${e.reason}`));
});

afterEach(async () => {
  await conn.close();
});

describe('test:/// URIs', () => {
  it.each([
    'test:///',
    'test:///other',
    'test:///default/x',
    'test://host/default',
    'test:///default?root=/tmp/x',
    'test:///default?color=red',
  ])('rejects %s with INVALID_URI', async (uri) => {
    await expect(connect(uri)).rejects.toMatchObject({ code: 'INVALID_URI', name: 'VirtError' });
  });

  it('opens a fresh, empty driver per connection', async () => {
    await conn.defineDomain(guest('a'));
    const other = await connect('TEST:///default');
    expect(await other.listDomains()).toEqual([]);
    expect(other.uri).toBe('TEST:///default');
    await other.close();
    expect((await conn.listDomains()).map((d) => d.name)).toEqual(['a']);
  });

  it('refuses every call once closed', async () => {
    const dom = await conn.defineDomain(guest('a'));
    await conn.close();
    await expect(conn.listDomains()).rejects.toMatchObject({ code: 'CONNECTION_CLOSED' });
    await expect(dom.getInfo()).rejects.toMatchObject({ code: 'CONNECTION_CLOSED' });
  });
});

describe('definitions', () => {
  it('defines, lists and looks up by name and uuid, by state', async () => {
    const a = await conn.defineDomain(guest('a'));
    await conn.defineDomain(guest('b'));
    await a.start({ paused: true });
    expect((await conn.listDomains()).map((d) => d.name)).toEqual(['a', 'b']);
    expect((await conn.listDomains({ state: 'active' })).map((d) => d.name)).toEqual(['a']);
    expect((await conn.listDomains({ state: 'inactive' })).map((d) => d.name)).toEqual(['b']);
    expect((await conn.lookupDomain(a.uuid)).name).toBe('a');
    expect((await conn.lookupDomain(a.uuid.toUpperCase())).name).toBe('a');
    expect((await conn.lookupDomain('b')).name).toBe('b');
    await expect(conn.lookupDomain('c')).rejects.toMatchObject({ code: 'NO_DOMAIN' });
  });

  it('updates with the same uuid, refuses a name or uuid that belongs to another domain', async () => {
    const a = await conn.defineDomain(guest('a'));
    await conn.defineDomain(guest('a', { uuid: a.uuid, memoryKiB: 128 * 1024 }));
    expect((await a.getInfo()).memoryKiB).toBe(128 * 1024);
    await expect(conn.defineDomain(guest('a'))).rejects.toMatchObject({
      code: 'DOMAIN_EXISTS',
      details: { domain: { name: 'a', uuid: a.uuid } },
    });
    await expect(conn.defineDomain(guest('b', { uuid: a.uuid }))).rejects.toMatchObject({
      code: 'DOMAIN_EXISTS',
    });
    expect(events).toEqual(['defined:added', 'defined:updated']);
  });

  it('validates input as the embedded driver does, leaving nothing behind', async () => {
    await expect(conn.defineDomain({ name: 'x' } as never)).rejects.toMatchObject({ name: 'VirtError' });
    await expect(conn.defineDomain('<domain type="qemu"><name>x</name>')).rejects.toMatchObject({
      code: 'XML_ERROR',
    });
    await expect(
      conn.defineDomain(
        "<domain type='qemu'><name>x</name><memory>65536</memory><devices><hostdev/></devices></domain>",
      ),
    ).rejects.toMatchObject({ code: 'CONFIG_UNSUPPORTED' });
    expect(await conn.listDomains()).toEqual([]);
    expect(events).toEqual([]);
  });

  it('defines from libvirt XML and formats it back', async () => {
    const xml = readFileSync(join(__dirname, '..', 'fixtures', 'xml', 'minimal-no-features.xml'), 'utf8');
    const dom = await conn.defineDomain(xml);
    expect(dom.name).toBe('minimal');
    const out = dom.toXML();
    expect(out).toContain('<name>minimal</name>');
    expect(out).toContain(`<uuid>${dom.uuid}</uuid>`);
    // What toXML gives defines the same domain again.
    await conn.defineDomain(out);
    expect(events).toEqual(['defined:added', 'defined:updated']);
  });
});

describe('life cycle', () => {
  it('createDomain starts a transient domain that is gone once it stops', async () => {
    const dom = await conn.createDomain(guest('t'), { paused: true });
    expect(await dom.getInfo()).toMatchObject({ state: 'paused', persistent: false });
    await expect(conn.createDomain(guest('t'))).rejects.toMatchObject({ code: 'DOMAIN_EXISTS' });
    await dom.destroy();
    expect(await conn.listDomains()).toEqual([]);
    expect(events).toEqual([
      'defined:added',
      'started:booted',
      'suspended:user',
      'stopped:destroyed',
      'undefined:removed',
    ]);
    const kept = await conn.createDomain(guest('k'));
    await conn.defineDomain({ ...guest('k'), uuid: kept.uuid });
    expect(await kept.getInfo()).toMatchObject({ persistent: true });
    await kept.destroy();
    expect((await conn.listDomains()).map((d) => d.name)).toEqual(['k']);
  });

  it('getState() gives the state with its reason from the shared core, as the embedded driver does', async () => {
    const dom = await conn.defineDomain(guest('st'));
    expect(await dom.getState()).toEqual({ state: 'shutoff', reason: 'unknown' });
    await dom.start({ paused: true });
    expect(await dom.getState()).toEqual({ state: 'paused', reason: 'user' });
    await dom.resume();
    expect(await dom.getState()).toEqual({ state: 'running', reason: 'unpaused' });
    await dom.shutdown({});
    expect(await dom.getState()).toEqual({ state: 'shutoff', reason: 'shutdown' });
    await dom.start();
    expect(await dom.getState()).toEqual({ state: 'running', reason: 'booted' });
    await dom.destroy();
    expect(await dom.getState()).toEqual({ state: 'shutoff', reason: 'destroyed' });
  });

  it('an operation queued behind an undefine fails with NO_DOMAIN, as in the embedded driver', async () => {
    const dom = await conn.defineDomain(guest('gone'));
    const undefine = dom.undefine();
    const start = dom.start();
    await undefine;
    await expect(start).rejects.toMatchObject({ code: 'NO_DOMAIN' });
  });

  it('reboot and reset keep an active domain as it was (a rebooted event each), and refuse an inactive one', async () => {
    const dom = await conn.defineDomain(guest('r'));
    await expect(dom.reboot()).rejects.toMatchObject({ code: 'OPERATION_INVALID' });
    await expect(dom.reset()).rejects.toMatchObject({ code: 'OPERATION_INVALID' });
    await dom.start();
    const before = await dom.getInfo();
    events.length = 0;
    await dom.reboot();
    await dom.reset();
    expect(await dom.getInfo()).toEqual(before);
    expect(events).toEqual(['rebooted:host', 'rebooted:host']);
  });

  it('start paused -> resume -> suspend -> resume -> destroy, with the embedded driver events', async () => {
    const dom = await conn.defineDomain(guest('p', { vcpu: { count: 2 } }));
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', id: null, pid: null });
    await dom.start({ paused: true });
    const info = await dom.getInfo();
    expect(info).toEqual({
      state: 'paused',
      reason: 'user',
      id: 1,
      // The documented synthetic pid: SIMULATED_PID_BASE + id * 1000.
      pid: 5_001_000,
      vcpus: 2,
      memoryKiB: 65536,
      cpuTimeNs: 0n,
      taints: [],
      persistent: true,
    });
    await dom.resume();
    expect(await dom.getInfo()).toMatchObject({ state: 'running', reason: 'unpaused' });
    await dom.suspend();
    expect(await dom.getInfo()).toMatchObject({ state: 'paused', reason: 'user' });
    await expect(dom.suspend()).rejects.toMatchObject({ code: 'OPERATION_INVALID' });
    await dom.resume();
    await expect(dom.resume()).rejects.toMatchObject({ code: 'OPERATION_INVALID' });
    await expect(dom.start()).rejects.toMatchObject({ code: 'OPERATION_INVALID' });
    await expect(dom.undefine()).rejects.toMatchObject({ code: 'OPERATION_INVALID' });
    await dom.destroy();
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'destroyed', id: null, pid: null });
    expect(events).toEqual([
      'defined:added',
      'started:booted',
      'suspended:user',
      'resumed:unpaused',
      'suspended:user',
      'resumed:unpaused',
      'stopped:destroyed',
    ]);
    await expect(dom.destroy()).rejects.toMatchObject({ code: 'OPERATION_INVALID' });
    await expect(dom.suspend()).rejects.toMatchObject({ code: 'OPERATION_INVALID' });
    await expect(dom.shutdown()).rejects.toMatchObject({ code: 'OPERATION_INVALID' });
    await dom.undefine();
    expect(events.at(-1)).toBe('undefined:removed');
    await expect(conn.lookupDomain('p')).rejects.toMatchObject({ code: 'NO_DOMAIN' });
    await expect(dom.getInfo()).rejects.toMatchObject({ code: 'NO_DOMAIN' });
    await expect(dom.start()).rejects.toMatchObject({ code: 'NO_DOMAIN' });
  });

  it('start -> running (booted); shutdown -> stopped shutdown; ids count up per driver', async () => {
    const dom = await conn.defineDomain(guest('s'));
    await dom.start();
    expect(await dom.getInfo()).toMatchObject({ state: 'running', reason: 'booted', id: 1 });
    await dom.shutdown();
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'shutdown', id: null });
    await dom.start();
    expect((await dom.getInfo()).id).toBe(2);
    expect(events).toEqual(['defined:added', 'started:booted', 'stopped:shutdown', 'started:booted']);
  });

  it('a paused guest ignores shutdown: OPERATION_TIMEOUT, or destroy with fallbackToDestroy', async () => {
    const dom = await conn.defineDomain(guest('ignorer'));
    await dom.start({ paused: true });
    await expect(dom.shutdown({ timeoutMs: 20 })).rejects.toMatchObject({ code: 'OPERATION_TIMEOUT' });
    expect(await dom.getInfo()).toMatchObject({ state: 'paused', id: 1 });
    await dom.shutdown({ timeoutMs: 20, fallbackToDestroy: true });
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'destroyed' });
    // A destroy does not wait behind a pending shutdown, and ends it.
    await dom.start({ paused: true });
    const pending = dom.shutdown({ timeoutMs: 60_000 });
    await new Promise((resolve) => setImmediate(resolve)); // the shutdown is now waiting
    await dom.destroy();
    await pending;
    expect(events.at(-1)).toBe('stopped:destroyed');
  });

  it('destroy graceful: the simulated QEMU exits on SIGTERM; an inactive domain is refused', async () => {
    const dom = await conn.defineDomain(guest('gentle'));
    await expect(dom.destroy({ graceful: true })).rejects.toMatchObject({ code: 'OPERATION_INVALID' });
    await dom.start();
    await dom.destroy({ graceful: true });
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'destroyed', pid: null });
    expect(events).toEqual(['defined:added', 'started:booted', 'stopped:destroyed']);
  });

  it('keeps the live definition of a running domain until it stops', async () => {
    const dom = await conn.defineDomain(guest('l'));
    await dom.start();
    await conn.defineDomain(guest('l', { uuid: dom.uuid, memoryKiB: 128 * 1024 }));
    expect(dom.getDefinition().memoryKiB).toBe(64 * 1024);
    expect(dom.toXML()).toContain('65536');
    expect((await dom.getInfo()).memoryKiB).toBe(64 * 1024);
    await dom.destroy();
    expect(dom.getDefinition().memoryKiB).toBe(128 * 1024);
  });

  it('serialises concurrent operations on one domain instead of interleaving them', async () => {
    const dom = await conn.defineDomain(guest('c'));
    const order: string[] = [];
    const track = (name: string, p: Promise<unknown>) =>
      p.then(
        () => order.push(`${name}:ok`),
        (e: { code: string }) => order.push(`${name}:${e.code}`),
      );
    await Promise.all([
      track('start', dom.start({ paused: true })),
      track('start2', dom.start({ paused: true })),
      track('resume', dom.resume()),
      track('suspend', dom.suspend()),
    ]);
    expect(order).toEqual(['start:ok', 'start2:OPERATION_INVALID', 'resume:ok', 'suspend:ok']);
    expect((await dom.getInfo()).state).toBe('paused');
  });

  it('delivers events through the async iterator until aborted', async () => {
    const ac = new AbortController();
    const seen: string[] = [];
    const loop = (async () => {
      for await (const e of conn.events({ signal: ac.signal })) {
        seen.push(`${e.type}:${e.reason}`);
        if (e.type === 'stopped') ac.abort();
      }
    })();
    const dom = await conn.defineDomain(guest('it'));
    await dom.start({ paused: true });
    await dom.destroy();
    await loop;
    expect(seen).toEqual(['defined:added', 'started:booted', 'suspended:user', 'stopped:destroyed']);
  });
});

describe('virtkit/internal on the test driver', () => {
  it('accepts the handshake, refuses a second handler, and seals on the first start', async () => {
    const internal = openInternal(conn, { apiVersion: '1.0' });
    expect(internal.sealed).toBe(false);
    let calls = 0;
    internal.setHandler('process.setMaxMemLock', (_ctx, args) => {
      calls++;
      simulatedHost(conn).setMemLock(args.pid, { soft: args.bytes, hard: args.bytes });
    });
    expect(() => internal.setHandler('process.setMaxMemLock', () => undefined)).toThrow(
      expect.objectContaining({ code: 'HANDLER_ALREADY_REGISTERED' }),
    );
    expect(openInternal(conn, { apiVersion: '1.0' }).hasHandler('process.setMaxMemLock')).toBe(true);
    const dom = await conn.defineDomain(guest('sealer', { memoryBacking: { locked: true } }));
    expect(internal.sealed).toBe(false);
    await dom.start({ paused: true });
    expect(internal.sealed).toBe(true);
    expect(() => internal.setHandler('cgroup.release', () => undefined)).toThrow(
      expect.objectContaining({ code: 'HANDLERS_SEALED' }),
    );
    expect(calls).toBe(1);
    expect((await dom.getInfo()).taints).toEqual(['internal-handler']);
    // Each test driver has its own table.
    const other = await connect('test:///default');
    expect(openInternal(other, { apiVersion: '1.0' }).sealed).toBe(false);
    await other.close();
  });

  it('fails the handshake for another version, and on a closed connection', async () => {
    expect(() => openInternal(conn, { apiVersion: '1.1' } as never)).toThrow(
      expect.objectContaining({ code: 'INTERNAL_VERSION_MISMATCH' }),
    );
    await conn.close();
    expect(() => openInternal(conn, { apiVersion: '1.0' })).toThrow(
      expect.objectContaining({ code: 'OPERATION_INVALID' }),
    );
  });
});

describe('hotplug phase: attachDevice/detachDevice as the embedded driver does them', () => {
  const disk = (dev: string, extra = '') =>
    `<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/images/${dev}.img'/><target dev='${dev}' bus='virtio'/>${extra}</disk>`;
  const tap = (dev: string) =>
    `<interface type='ethernet'><target dev='${dev}'/><model type='virtio'/></interface>`;

  it('invokes storage.openFile and net.openTap in phase hotplug on the running process, then updates the live definition', async () => {
    const api = openInternal(conn, { apiVersion: '1.0' });
    const host = simulatedHost(conn);
    const calls: unknown[] = [];
    api.setHandler('storage.openFile', (ctx, args) => {
      calls.push({ op: 'storage.openFile', phase: ctx.phase, pid: ctx.pid, id: ctx.domain.id, args });
      // Any descriptor open in this process stands for the image, which does not exist here.
      return { fd: openSync('/dev/null', 'r+') };
    });
    api.setHandler('net.openTap', (ctx, args) => {
      calls.push({ op: 'net.openTap', phase: ctx.phase, pid: ctx.pid, id: ctx.domain.id, args });
      return { ifname: args.ifname ?? 'tap9', fds: [openSync('/dev/null', 'r')] };
    });
    const dom = await conn.defineDomain(guest('hot'));
    await dom.start();
    const { pid } = await dom.getInfo();
    expect(calls).toEqual([]);

    await dom.attachDevice(disk('vdb', '<readonly/>'), { live: true });
    await dom.attachDevice(tap('vnet-hot0'));
    expect(calls).toEqual([
      { op: 'storage.openFile', phase: 'hotplug', pid, id: 1, args: { path: '/images/vdb.img', mode: 'r' } },
      {
        op: 'net.openTap',
        phase: 'hotplug',
        pid,
        id: 1,
        args: { ifname: 'vnet-hot0', queues: 1, vnetHdr: true, managed: true },
      },
    ]);
    const live = dom.getDefinition();
    expect(live.disks.map((d) => [d.target.dev, d.alias])).toEqual([['vdb', 'virtio-disk1']]);
    expect(live.interfaces.map((n) => [n.type === 'ethernet' && n.target?.dev, n.alias])).toEqual([
      ['vnet-hot0', 'net0'],
    ]);
    // live only: the persistent definition did not change.
    expect(dom.getDefinition({ inactive: true })).toMatchObject({ disks: [], interfaces: [] });
    expect((await dom.getInfo()).taints).toEqual(['internal-handler']);
    expect(host.log(dom.uuid)).toEqual([
      expect.stringMatching(/^internal: storage\.openFile phase=hotplug via=setHandler [\d.]+ms ok$/),
      expect.stringMatching(/^internal: net\.openTap phase=hotplug via=setHandler [\d.]+ms ok$/),
    ]);
    expect(events.slice(-2)).toEqual(['device-added:virtio-disk1', 'device-added:net0']);

    // The running guest lets go at once; live and config together change both definitions.
    await dom.detachDevice('virtio-disk1');
    await dom.attachDevice(disk('vdc'), { live: true, config: true });
    expect(dom.getDefinition().disks.map((d) => d.alias)).toEqual(['virtio-disk2']);
    expect(dom.getDefinition({ inactive: true }).disks.map((d) => d.alias)).toEqual(['virtio-disk2']);
    expect(calls).toHaveLength(3);
    expect(events.slice(-2)).toEqual(['device-removed:virtio-disk1', 'device-added:virtio-disk2']);
  });

  it('a failing, lying or hanging handler fails the attach with the embedded codes; nothing changes', async () => {
    const api = openInternal(conn, { apiVersion: '1.0' });
    let mode: 'throw' | 'lie' | 'hang' = 'throw';
    let signal: AbortSignal | undefined;
    api.setHandler(
      'net.openTap',
      (ctx) => {
        signal = ctx.signal;
        if (mode === 'throw') throw new Error('agent unreachable');
        if (mode === 'lie') return { ifname: 'someone-else', fds: [openSync('/dev/null', 'r')] };
        return new Promise<never>(() => {});
      },
      { timeoutMs: 50 },
    );
    const dom = await conn.defineDomain(guest('hot'));
    await dom.start({ paused: true });
    const before = dom.toXML();
    const failure = (mode: string) =>
      dom.attachDevice(tap('vnet-x'), { live: true, config: true }).then(
        () => {
          throw new Error(`${mode}: attached`);
        },
        (err: unknown) => err as { code: string; details: Record<string, unknown>; message: string },
      );

    const thrown = await failure('throw');
    expect(thrown).toMatchObject({
      code: 'HANDLER_FAILED',
      details: { operation: 'net.openTap', phase: 'hotplug' },
    });
    mode = 'lie';
    const lied = await failure('lie');
    expect(lied.code).toBe('POSTCONDITION_FAILED');
    expect(lied.message).toMatch(/someone-else is not the requested vnet-x/);
    mode = 'hang';
    expect((await failure('hang')).code).toBe('OPERATION_TIMEOUT');
    expect(signal?.aborted).toBe(true);

    expect(dom.toXML()).toBe(before);
    expect(dom.getDefinition({ inactive: true }).interfaces).toEqual([]);
    expect(events.filter((e) => e.startsWith('device-'))).toEqual([]);
    expect(await dom.getInfo()).toMatchObject({ state: 'paused', id: 1 });
  });

  it('refuses what the embedded driver refuses; a paused guest never lets go of a device', async () => {
    const dom = await conn.defineDomain(guest('hot'));
    await expect(dom.attachDevice(disk('vdb'), { live: true })).rejects.toMatchObject({
      code: 'OPERATION_INVALID',
    });
    // Inactive: the persistent definition, without any handler call.
    await dom.attachDevice(disk('vdb'));
    expect(dom.getDefinition().disks.map((d) => d.target.dev)).toEqual(['vdb']);
    await dom.start({ paused: true });
    await expect(
      dom.attachDevice("<disk type='file'><source file='/i/s.img'/><target dev='sda' bus='sata'/></disk>", {
        live: true,
      }),
    ).rejects.toMatchObject({ code: 'CONFIG_UNSUPPORTED' });
    await expect(dom.detachDevice('nothing-here', { live: true })).rejects.toMatchObject({
      code: 'OPERATION_INVALID',
    });
    await dom.attachDevice(disk('vdc'), { live: true });
    await expect(dom.detachDevice('virtio-disk2', { live: true, timeoutMs: 20 })).rejects.toMatchObject({
      code: 'OPERATION_TIMEOUT',
    });
    expect(dom.getDefinition().disks.map((d) => d.alias)).toEqual(['virtio-disk1', 'virtio-disk2']);
    await dom.resume();
    await dom.detachDevice(disk('vdc'), { live: true });
    expect(dom.getDefinition().disks.map((d) => d.target.dev)).toEqual(['vdb']);
  });
});

describe('stable aliases and memory hotplug, as the embedded driver gives and does them', () => {
  const MiB = 1024 * 1024;
  const dimm = (mib: number) =>
    `<memory model='dimm'><target><size unit='MiB'>${mib}</size></target></memory>`;

  it('devices defined before start get the embedded driver aliases, kept through start and detach', async () => {
    const dom = await conn.defineDomain(
      guest('aliases', {
        memoryKiB: 192 * 1024,
        maxMemory: { kib: 1024 * 1024, slots: 2 },
        disks: [
          { type: 'file', source: '/images/a.img', target: { dev: 'vda', bus: 'virtio' } },
          { type: 'file', source: '/images/b.img', target: { dev: 'sdb', bus: 'sata' } },
        ],
        interfaces: [
          { type: 'user', model: 'virtio', alias: 'ua-mine' },
          { type: 'user', model: 'virtio' },
        ],
        memoryDevices: [{ model: 'dimm', sizeKiB: 128 * 1024 }],
      }),
    );
    const aliases = (def: ReturnType<typeof dom.getDefinition>) => [
      ...def.disks.map((d) => d.alias),
      ...def.interfaces.map((n) => n.alias),
      ...(def.memoryDevices ?? []).map((m) => `${m.alias}@${m.slot}`),
    ];
    // The names qemu/devices/assign.ts gives (test/integration/devices-qemu.test.ts sees them in QEMU).
    expect(aliases(dom.getDefinition())).toEqual(['virtio-disk0', 'sata0-0-1', 'ua-mine', 'net0', 'dimm0@0']);
    expect(dom.toXML()).toContain("<alias name='virtio-disk0'/>");
    await dom.start();
    expect(aliases(dom.getDefinition())).toEqual(aliases(dom.getDefinition({ inactive: true })));
    await dom.detachDevice('net0', { live: true });
    await dom.detachDevice('dimm0', { live: true });
    expect(aliases(dom.getDefinition())).toEqual(['virtio-disk0', 'sata0-0-1', 'ua-mine']);
    expect(dom.getDefinition().memoryKiB).toBe(64 * 1024);
    expect(events.slice(-2)).toEqual(['device-removed:net0', 'device-removed:dimm0']);
  });

  it('a DIMM: memlock raised in phase hotplug only when the limit does not cover the need; a lying handler changes nothing', async () => {
    const api = openInternal(conn, { apiVersion: '1.0' });
    const host = simulatedHost(conn);
    let lie = false;
    const calls: unknown[] = [];
    api.setHandler('process.setMaxMemLock', (ctx, args) => {
      calls.push({
        phase: ctx.phase,
        pid: ctx.pid,
        bytes: args.bytes,
        current: args.current,
        rule: args.breakdown.rule,
      });
      if (!lie && args.pid !== undefined) host.setMemLock(args.pid, { soft: args.bytes, hard: args.bytes });
    });
    const dom = await conn.defineDomain(
      guest('mem', { maxMemory: { kib: 1024 * 1024, slots: 2 }, memtune: { hardLimitKiB: 16 * 1024 } }),
    );
    await dom.start();
    const { pid } = await dom.getInfo();
    expect(calls).toEqual([
      {
        phase: 'pre-exec',
        pid,
        bytes: BigInt(16 * MiB),
        current: { soft: BigInt(8 * MiB), hard: BigInt(8 * MiB) },
        rule: 'hard_limit',
      },
    ]);
    // The limit covers the need: no call, the DIMM is there at once.
    await dom.attachDevice(dimm(128), { live: true });
    expect(calls).toHaveLength(1);
    expect(dom.getDefinition()).toMatchObject({
      memoryKiB: 192 * 1024,
      memoryDevices: [{ alias: 'dimm0', slot: 0 }],
    });
    expect(dom.getDefinition({ inactive: true }).memoryDevices).toBeUndefined();

    // Someone lowered the soft limit (the launcher's own): the next DIMM raises it first.
    host.setMemLock(pid as number, { soft: BigInt(MiB), hard: BigInt(16 * MiB) });
    await dom.attachDevice(dimm(64), { live: true, config: true });
    expect(calls.at(-1)).toEqual({
      phase: 'hotplug',
      pid,
      bytes: BigInt(16 * MiB),
      current: { soft: BigInt(MiB), hard: BigInt(16 * MiB) },
      rule: 'hard_limit',
    });
    expect(host.process(pid as number)?.memlock).toEqual({ soft: BigInt(16 * MiB), hard: BigInt(16 * MiB) });
    expect(dom.getDefinition().memoryDevices?.map((d) => d.alias)).toEqual(['dimm0', 'dimm1']);
    // Each definition's own free slot, as libvirt assigns them (the persistent one had none).
    expect(dom.getDefinition({ inactive: true }).memoryDevices).toMatchObject([
      { sizeKiB: 64 * 1024, slot: 0, alias: 'dimm0' },
    ]);
    expect(host.log(dom.uuid).at(-1)).toMatch(
      /^internal: process\.setMaxMemLock phase=hotplug via=setHandler [\d.]+ms ok$/,
    );

    // A handler that says yes and does nothing: caught by the post-check, nothing added.
    await dom.detachDevice('dimm1', { live: true });
    host.setMemLock(pid as number, { soft: BigInt(MiB), hard: BigInt(16 * MiB) });
    lie = true;
    const before = dom.toXML();
    await expect(dom.attachDevice(dimm(64), { live: true })).rejects.toMatchObject({
      code: 'POSTCONDITION_FAILED',
      details: expect.objectContaining({ operation: 'process.setMaxMemLock', phase: 'hotplug' }),
    });
    expect(dom.toXML()).toBe(before);
    expect(events.filter((e) => e.startsWith('device-'))).toEqual([
      'device-added:dimm0',
      'device-added:dimm1',
      'device-removed:dimm1',
    ]);
  });

  it('refuses what the embedded driver refuses; a paused guest never lets go of a DIMM', async () => {
    const plain = await conn.defineDomain(guest('mem-plain'));
    await expect(plain.attachDevice(dimm(64))).rejects.toMatchObject({
      code: 'CONFIG_UNSUPPORTED',
      details: { path: 'maxMemory' },
    });
    const huge = await conn.defineDomain(
      guest('mem-huge', { maxMemory: { kib: 1024 * 1024, slots: 1 }, memoryBacking: { hugepages: true } }),
    );
    await expect(huge.attachDevice(dimm(64))).rejects.toMatchObject({ code: 'CONFIG_UNSUPPORTED' });
    const dom = await conn.defineDomain(guest('mem', { maxMemory: { kib: 256 * 1024, slots: 1 } }));
    await expect(dom.attachDevice(dimm(256))).rejects.toMatchObject({
      code: 'OPERATION_INVALID',
      details: expect.objectContaining({ path: 'memory.sizeKiB' }),
    });
    await dom.start({ paused: true });
    await dom.attachDevice(dimm(64), { live: true });
    await expect(dom.attachDevice(dimm(64), { live: true })).rejects.toMatchObject({
      code: 'OPERATION_INVALID',
      details: expect.objectContaining({ path: 'maxMemory.slots' }),
    });
    await expect(dom.detachDevice('dimm0', { live: true, timeoutMs: 20 })).rejects.toMatchObject({
      code: 'OPERATION_TIMEOUT',
    });
    expect(dom.getDefinition().memoryDevices?.map((d) => d.alias)).toEqual(['dimm0']);
    await expect(dom.detachDevice('dimm7', { live: true })).rejects.toMatchObject({
      code: 'OPERATION_INVALID',
    });
    await dom.resume();
    await dom.detachDevice(dimm(64), { live: true });
    expect(dom.getDefinition()).toMatchObject({ memoryKiB: 64 * 1024 });
    expect(dom.getDefinition().memoryDevices).toBeUndefined();
  });
});

describe('migration-in phase: live migration between test drivers as the embedded driver does it', () => {
  /** Memlock, pinning and FIFO vCPUs: every operation of phase migration-in has work to do. */
  const pinned = (name: string) =>
    guest(name, {
      type: 'kvm',
      vcpu: { count: 2 },
      memtune: { hardLimitKiB: 16 * 1024 },
      cputune: {
        vcpupin: [
          { vcpu: 0, cpuset: '0' },
          { vcpu: 1, cpuset: '1' },
        ],
        vcpusched: [{ ids: '0-1', scheduler: 'fifo', priority: 1 }],
      },
      interfaces: [{ type: 'ethernet', target: { dev: 'vnet-mig0' } }],
    });
  let dst: Connection;
  let dstEvents: string[];
  let calls: Array<{ op: string; phase: string; pid: number | undefined; id: number | null }>;
  let failing: string | undefined;

  beforeEach(async () => {
    dst = await connect('test:///default');
    dstEvents = [];
    dst.on('domain-event', (e: DomainEvent) => dstEvents.push(`${e.type}:${e.reason}`));
    calls = [];
    failing = undefined;
    const api = openInternal(dst, { apiVersion: '1.0' });
    const host = simulatedHost(dst);
    const rec = (
      op: string,
      ctx: { phase: string; pid: number | undefined; domain: { id: number | null } },
    ) => {
      calls.push({ op, phase: ctx.phase, pid: ctx.pid, id: ctx.domain.id });
      if (failing === op) throw new Error(`${op} refused by the agent`);
    };
    api.setHandler('net.openTap', (ctx, args) => {
      rec('net.openTap', ctx);
      return { ifname: args.ifname ?? 'tap0', fds: [openSync('/dev/null', 'r')] };
    });
    api.setHandler('process.setMaxMemLock', (ctx, args) => {
      rec('process.setMaxMemLock', ctx);
      host.setMemLock(args.pid, { soft: args.bytes, hard: args.bytes });
    });
    api.setHandler('cgroup.placeThreads', (ctx, args) => {
      rec('cgroup.placeThreads', ctx);
      const placements = args.threads.map((t) => ({ tid: t.tid, cgroup: `/agent/${t.role}${t.index}` }));
      for (const p of placements) host.placeThread(p.tid, p.cgroup);
      return { placements };
    });
    api.setHandler(
      'thread.setScheduler',
      (ctx, args) => {
        rec('thread.setScheduler', ctx);
        if (failing === 'hang') return new Promise<never>(() => {});
        // 'lie': claims success without the effect.
        if (failing !== 'lie') for (const t of args.threads) host.setScheduler(t.tid, t.policy, t.priority);
      },
      { timeoutMs: 50 },
    );
    api.setHandler('cgroup.release', (ctx) => {
      rec('cgroup.release', ctx);
    });
  });

  afterEach(async () => {
    await dst.close();
  });

  it('runs the destination handlers in phase migration-in before the stream, then moves the domain', async () => {
    const dom = await conn.defineDomain(pinned('mover'));
    await dom.start();
    const srcPid = (await dom.getInfo()).pid;
    const offer = await dom.migrateBegin();
    const incoming = await dst.migratePrepare(offer, { listen: 'tcp:127.0.0.1:0' });
    expect(incoming.uri).toMatch(/^tcp:127\.0\.0\.1:[1-9]\d*$/);
    const dstPid = (await incoming.domain.getInfo()).pid as number;
    expect(dstPid).toBe(SIMULATED_PID_BASE + 1000);
    expect(await incoming.domain.getInfo()).toMatchObject({ state: 'paused', reason: 'migration', id: 1 });
    // Before any stream: the embedded driver's order, on the destination's own simulated process.
    expect(calls.map((c) => `${c.phase}:${c.op}`)).toEqual([
      'pre-exec:net.openTap',
      'migration-in:process.setMaxMemLock',
      'migration-in:cgroup.placeThreads',
      'migration-in:thread.setScheduler',
    ]);
    expect(calls.map((c) => [c.pid, c.id])).toEqual([
      [undefined, null],
      [dstPid, 1],
      [dstPid, 1],
      [dstPid, 1],
    ]);
    const progress: string[] = [];
    await dom.migratePerform(incoming.uri, {
      cookie: incoming.cookie,
      onProgress: (p) => progress.push(p.status),
    });
    expect(progress).toEqual(['completed']);
    expect(await dom.getInfo()).toMatchObject({ state: 'paused', reason: 'migration', pid: srcPid });
    const moved = await incoming.finish();
    await dom.migrateConfirm();
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'migrated', pid: null });
    expect(await moved.getInfo()).toMatchObject({
      state: 'running',
      reason: 'migrated',
      pid: dstPid,
      taints: ['internal-handler'],
    });
    expect(
      simulatedHost(dst)
        .process(dstPid)
        ?.threads.find((t) => t.tid === dstPid + 11),
    ).toMatchObject({
      policy: 'fifo',
      priority: 1,
      cgroup: '/agent/vcpu1',
    });
    expect(events).toEqual(['defined:added', 'started:booted', 'suspended:migration', 'stopped:migrated']);
    expect(dstEvents).toEqual(['defined:added', 'started:migrated']);
    // Released where it ran: the destination's placements when its process ends; without
    // `persist` the domain was transient there, and goes with its process.
    await moved.destroy();
    expect(calls.at(-1)).toMatchObject({ op: 'cgroup.release', phase: 'release', pid: dstPid });
    await new Promise((r) => setImmediate(r));
    expect(dstEvents.slice(-2)).toEqual(['stopped:destroyed', 'undefined:removed']);
    expect(await dst.listDomains()).toEqual([]);
  });

  it('persist keeps the domain defined at the destination; undefineSource removes the source', async () => {
    const dom = await conn.defineDomain(guest('kept'));
    await dom.start();
    const moved = await dom.migrateTo(dst, { persist: true, undefineSource: true });
    await moved.destroy();
    await new Promise((r) => setImmediate(r));
    expect((await dst.listDomains()).map((d) => d.name)).toEqual(['kept']);
    expect(await conn.listDomains()).toEqual([]);
    expect(events.slice(-2)).toEqual(['stopped:migrated', 'undefined:removed']);
  });

  it.each([
    ['throw', 'thread.setScheduler', 'HANDLER_FAILED'],
    ['lie', 'lie', 'POSTCONDITION_FAILED'],
    ['hang', 'hang', 'OPERATION_TIMEOUT'],
  ])(
    'a destination handler that fails (%s): %s, rolled back; the source runs on and can migrate again',
    async (_what, mode, code) => {
      failing = mode;
      const dom = await conn.defineDomain(pinned('stays'));
      await dom.start();
      const before = await dom.getInfo();
      const err = await dom
        .migrateTo(dst, { listen: 'unix:/run/never-created.sock' })
        .catch((e: unknown) => e);
      expect(err).toMatchObject({ name: 'VirtError', code });
      expect(calls.map((c) => `${c.phase}:${c.op}`)).toEqual([
        'pre-exec:net.openTap',
        'migration-in:process.setMaxMemLock',
        'migration-in:cgroup.placeThreads',
        'migration-in:thread.setScheduler',
        'release:cgroup.release',
      ]);
      expect(await dom.getInfo()).toMatchObject({ state: 'running', pid: before.pid, id: before.id });
      expect(await dst.listDomains()).toEqual([]);
      expect(dstEvents).toEqual(['defined:added', 'stopped:failed', 'undefined:removed']);
      expect(simulatedHost(dst).process(SIMULATED_PID_BASE + 1000)).toBeUndefined();
      failing = undefined;
      const moved = await dom.migrateTo(dst, { listen: 'unix:/run/never-created.sock' });
      expect(await moved.getInfo()).toMatchObject({ state: 'running', reason: 'migrated' });
    },
  );

  it('tls: credentials checked as the embedded driver does; the handshake needs one CA, TLS on both ends and the host', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'vk-test-tls-'));
    try {
      const good = { dir: makeCredentials(join(tmp, 'good'), 'vk-test-ca') };
      const foreign = { dir: makeCredentials(join(tmp, 'foreign'), 'vk-foreign-ca') };
      const dom = await conn.defineDomain(guest('secret'));
      await dom.start();
      const pid = (await dom.getInfo()).pid;

      // Refused before anything starts on either side, with the embedded driver's codes and fields.
      for (const [tls, field] of [
        [{ dir: 'relative/dir' }, 'tls.dir'],
        [{ dir: join(tmp, 'nothing-here') }, 'tls.dir'],
      ] as const) {
        await expect(dom.migrateTo(dst, { tls })).rejects.toMatchObject({
          code: 'CONFIG_UNSUPPORTED',
          details: { field },
        });
      }
      await expect(dom.migrateTo(dst, { listen: 'unix:/run/vk-tls.sock', tls: good })).rejects.toMatchObject({
        code: 'CONFIG_UNSUPPORTED',
        details: { field: 'tls.hostname' },
      });
      expect(await dst.listDomains()).toEqual([]);
      expect(await dom.getInfo()).toMatchObject({ state: 'running', pid });

      // A failed handshake fails perform; the destination keeps waiting until it is cancelled.
      const refused: Array<[string, { dir: string; hostname?: string } | undefined, string]> = [
        ['foreign CA', foreign, 'signed'],
        ['plain stream', undefined, 'expects TLS'],
        ['wrong host', { ...good, hostname: 'elsewhere.example' }, 'elsewhere.example'],
      ];
      for (const [, tls, why] of refused) {
        const offer = await dom.migrateBegin();
        const incoming = await dst.migratePrepare(offer, { listen: 'tcp:127.0.0.1:0', tls: good });
        await expect(
          dom.migratePerform(incoming.uri, { cookie: incoming.cookie, ...(tls ? { tls } : {}) }),
        ).rejects.toMatchObject({ code: 'OPERATION_FAILED', message: expect.stringContaining(why) });
        expect(await incoming.domain.getInfo()).toMatchObject({ state: 'paused', reason: 'migration' });
        await incoming.finish({ cancelled: true });
        await dom.migrateConfirm({ cancelled: true });
        expect(await dom.getInfo()).toMatchObject({ state: 'running', pid });
        expect(await dst.listDomains()).toEqual([]);
      }
      // TLS from a source to a destination that listens in the clear fails the same way.
      const offer = await dom.migrateBegin();
      const plain = await dst.migratePrepare(offer, { listen: 'tcp:127.0.0.1:0' });
      await expect(dom.migratePerform(plain.uri, { cookie: plain.cookie, tls: good })).rejects.toMatchObject({
        code: 'OPERATION_FAILED',
      });
      await plain.finish({ cancelled: true });
      await dom.migrateConfirm({ cancelled: true });

      // One CA on both ends, the certificate naming 127.0.0.1 (or `localhost` over a UNIX socket).
      const moved = await dom.migrateTo(dst, { tls: good });
      expect(await moved.getInfo()).toMatchObject({ state: 'running', reason: 'migrated' });
      const back = await moved.migrateTo(conn, {
        listen: 'unix:/run/vk-tls.sock',
        tls: { ...good, hostname: 'localhost' },
      });
      expect(await back.getInfo()).toMatchObject({ state: 'running', reason: 'migrated' });
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('refuses what the embedded driver refuses, and a stream nobody receives fails with the source running', async () => {
    const dom = await conn.defineDomain(guest('lonely'));
    await expect(dom.migrateBegin()).rejects.toMatchObject({ code: 'OPERATION_INVALID' });
    await dom.start({ paused: true });
    const offer = await dom.migrateBegin();
    await expect(dom.migrateBegin()).rejects.toMatchObject({ code: 'OPERATION_INVALID' });
    await expect(dst.migratePrepare(offer, { listen: 'http://x' })).rejects.toMatchObject({
      code: 'INVALID_URI',
    });
    expect(await dst.listDomains()).toEqual([]);
    await expect(dom.migratePerform('tcp:127.0.0.1:1')).rejects.toMatchObject({ code: 'OPERATION_FAILED' });
    expect(await dom.getInfo()).toMatchObject({ state: 'paused', reason: 'user' });
    await expect(dom.migrateConfirm()).rejects.toMatchObject({ code: 'OPERATION_INVALID' });
    await dom.migrateConfirm({ cancelled: true });
    // A paused source arrives paused.
    const moved = await dom.migrateTo(dst);
    expect(await moved.getInfo()).toMatchObject({ state: 'paused', reason: 'migrated' });
    expect(events.slice(-1)).toEqual(['stopped:migrated']);
  });
});

describe('hotplug phase: setVcpus as the embedded driver does it', () => {
  const cpus = (name: string, type: 'kvm' | 'qemu' = 'kvm') =>
    guest(name, {
      type,
      vcpu: { count: 3, current: 1 },
      cputune: {
        vcpupin: [
          { vcpu: 1, cpuset: '1' },
          { vcpu: 2, cpuset: '0' },
        ],
        vcpusched: [{ ids: '1-2', scheduler: 'fifo', priority: 1 }],
      },
    });

  it('places and schedules each new vCPU thread in phase hotplug before it is online; unplug ends the thread', async () => {
    const api = openInternal(conn, { apiVersion: '1.0' });
    const host = simulatedHost(conn);
    const calls: unknown[] = [];
    api.setHandler('cgroup.placeThreads', (ctx, args) => {
      calls.push({ op: 'cgroup.placeThreads', phase: ctx.phase, pid: ctx.pid, threads: args.threads });
      const placements = args.threads.map((t) => ({ tid: t.tid, cgroup: `/agent/vcpu${t.index}` }));
      for (const p of placements) host.placeThread(p.tid, p.cgroup);
      return { placements };
    });
    api.setHandler('thread.setScheduler', (ctx, args) => {
      calls.push({ op: 'thread.setScheduler', phase: ctx.phase, pid: ctx.pid, threads: args.threads });
      for (const t of args.threads) host.setScheduler(t.tid, t.policy, t.priority);
    });
    const released: Array<{ phase: string; placements: unknown[] }> = [];
    api.setHandler('cgroup.release', (ctx, args) => {
      released.push({ phase: ctx.phase, placements: args.placements });
    });
    const dom = await conn.defineDomain(cpus('cpus'));
    await dom.start();
    const pid = (await dom.getInfo()).pid as number;
    // At start: vCPU 0 only; its thread placed in phase startup.
    expect(calls.map((c) => (c as { phase: string }).phase)).toEqual(['startup']);
    calls.length = 0;

    await dom.setVcpus(3, { live: true });
    expect(calls).toEqual([
      {
        op: 'cgroup.placeThreads',
        phase: 'hotplug',
        pid,
        threads: [{ tid: pid + 11, role: 'vcpu', index: 1 }],
      },
      {
        op: 'thread.setScheduler',
        phase: 'hotplug',
        pid,
        threads: [{ tid: pid + 11, role: 'vcpu', index: 1, policy: 'fifo', priority: 1 }],
      },
      {
        op: 'cgroup.placeThreads',
        phase: 'hotplug',
        pid,
        threads: [{ tid: pid + 12, role: 'vcpu', index: 2 }],
      },
      {
        op: 'thread.setScheduler',
        phase: 'hotplug',
        pid,
        threads: [{ tid: pid + 12, role: 'vcpu', index: 2, policy: 'fifo', priority: 1 }],
      },
    ]);
    expect((await dom.getInfo()).vcpus).toBe(3);
    expect(dom.getDefinition().vcpu).toEqual({ count: 3 });
    expect(dom.getDefinition({ inactive: true }).vcpu).toEqual({ count: 3, current: 1 });
    expect(host.process(pid)?.threads.find((t) => t.tid === pid + 12)).toMatchObject({
      policy: 'fifo',
      priority: 1,
      cgroup: '/agent/vcpu2',
    });

    await dom.setVcpus(2, { live: true, config: true });
    expect(
      host
        .process(pid)
        ?.threads.filter((t) => t.role === 'vcpu')
        .map((t) => t.index),
    ).toEqual([0, 1]);
    expect(dom.getDefinition().vcpu).toEqual({ count: 3, current: 2 });
    expect(dom.getDefinition({ inactive: true }).vcpu).toEqual({ count: 3, current: 2 });
    // The unplugged vCPU's placement was given back at once, in phase hotplug, and only it.
    expect(released).toEqual([{ phase: 'hotplug', placements: [{ tid: pid + 12, cgroup: '/agent/vcpu2' }] }]);
    await expect(dom.setVcpus(4, { live: true })).rejects.toMatchObject({ code: 'OPERATION_INVALID' });
    // The rest is released with those of the start (vCPU 0, two emulator threads, vCPU 1).
    await dom.destroy();
    expect(released.map((r) => [r.phase, r.placements.length])).toEqual([
      ['hotplug', 1],
      ['release', 4],
    ]);
  });

  it('a failing handler removes the new vCPU again; TCG refuses unplug, and hotplug after a TCG rollback', async () => {
    const api = openInternal(conn, { apiVersion: '1.0' });
    let fail = true;
    api.setHandler('thread.setScheduler', (_ctx, args) => {
      if (fail) throw new Error('no FIFO for you');
      for (const t of args.threads) simulatedHost(conn).setScheduler(t.tid, t.policy, t.priority);
    });
    const kvm = await conn.defineDomain(cpus('kvm-cpus'));
    await kvm.start();
    const pid = (await kvm.getInfo()).pid as number;
    await expect(kvm.setVcpus(2, { live: true })).rejects.toMatchObject({
      code: 'HANDLER_FAILED',
      details: { operation: 'thread.setScheduler', phase: 'hotplug' },
    });
    expect((await kvm.getInfo()).vcpus).toBe(1);
    expect(
      simulatedHost(conn)
        .process(pid)
        ?.threads.filter((t) => t.role === 'vcpu'),
    ).toHaveLength(1);
    fail = false;
    await kvm.setVcpus(2, { live: true });
    expect((await kvm.getInfo()).vcpus).toBe(2);

    const tcg = await conn.defineDomain(cpus('tcg-cpus', 'qemu'));
    await tcg.start();
    await tcg.setVcpus(2, { live: true });
    await expect(tcg.setVcpus(1, { live: true })).rejects.toMatchObject({ code: 'CONFIG_UNSUPPORTED' });
    fail = true;
    await expect(tcg.setVcpus(3, { live: true })).rejects.toMatchObject({ code: 'HANDLER_FAILED' });
    fail = false;
    await expect(tcg.setVcpus(3, { live: true })).rejects.toMatchObject({ code: 'CONFIG_UNSUPPORTED' });
    expect((await tcg.getInfo()).vcpus).toBe(2);
  });
});

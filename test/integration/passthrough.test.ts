import { existsSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type MonitorEvent, openInternal } from '../../src/internal/index.js';
import { type Connection, connect, VirtError } from '../../src/stable/index.js';
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

let root: string;
let conn: Connection;

beforeEach(async () => {
  root = tempRoot('vk-pt-');
  conn = await openRoot(root);
});

afterEach(async () => {
  for (const dom of await conn.listDomains({ state: 'active' })) await dom.destroy({ graceMs: 1000 });
  await conn.close();
  removeRoot(root);
});

/** A gate a handler waits at: `inHandler` once it is there, `release()` lets it go on. */
function gate() {
  let release!: () => void;
  const released = new Promise<undefined>((r) => {
    release = () => r(undefined);
  });
  let entered!: () => void;
  const inHandler = new Promise<void>((r) => {
    entered = r;
  });
  return { released, release, inHandler, entered };
}

const codeOf = async (p: Promise<unknown>): Promise<VirtError> => {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!VirtError.is(err)) throw new Error(`expected a VirtError, got ${String(err)}`);
  return err;
};

describe('QMP passthrough (monitorCommand)', () => {
  it('returns QEMU reply, taints custom-monitor, logs the command, and the taint survives a reconnect', async () => {
    const dom = await conn.defineDomain(pausedOnly('pt'));
    await dom.start({ paused: true });
    expect((await dom.getInfo()).taints).not.toContain('custom-monitor');
    const internal = openInternal(conn, { apiVersion: '1.0' });
    const reply = await internal.monitorCommand(dom, 'query-status');
    expect(reply).toMatchObject({ status: 'prelaunch', running: false });
    const name = await internal.monitorCommand(dom, 'query-name');
    expect(name).toEqual({ name: 'pt' });
    expect((await dom.getInfo()).taints).toContain('custom-monitor');
    const log = readFileSync(join(root, 'log', 'pt.log'), 'utf8');
    expect(log).toMatch(/is tainted: custom-monitor/);
    expect(log).toMatch(/monitor passthrough: query-status\n/);
    expect(log.match(/is tainted: custom-monitor/g)).toHaveLength(1);

    const pid = (await dom.getInfo()).pid as number;
    await conn.close();
    conn = await openRoot(root);
    const again = await conn.lookupDomain('pt');
    expect(await again.getInfo()).toMatchObject({ pid, taints: expect.arrayContaining(['custom-monitor']) });
  });

  it('keeps the driver state in step with a passthrough stop and cont, with events', async () => {
    const rec = recordEvents(conn);
    const dom = await conn.defineDomain(pausedOnly('pt'));
    await dom.start({ paused: true });
    const internal = openInternal(conn, { apiVersion: '1.0' });
    await internal.monitorCommand(dom, 'cont');
    await rec.next((e) => e.type === 'resumed');
    expect(await dom.getInfo()).toMatchObject({ state: 'running', reason: 'unpaused' });
    await internal.monitorCommand(dom, 'stop');
    await rec.next((e) => e.type === 'suspended' && rec.events.some((r) => r.type === 'resumed'));
    expect((await dom.getInfo()).state).toBe('paused');
    // The driver's own operations agree with what the passthrough did.
    await expect(dom.suspend()).rejects.toMatchObject({ code: 'OPERATION_INVALID' });
    await dom.resume();
    expect((await internal.monitorCommand(dom, 'query-status')) as object).toMatchObject({ running: true });
    await dom.suspend();
    expect((await internal.monitorCommand(dom, 'query-status')) as object).toMatchObject({
      running: false,
      status: 'paused',
    });
    expect(rec.events.map((e) => `${e.type}:${e.reason}`)).toEqual([
      'defined:added',
      'started:booted',
      'suspended:user',
      'resumed:unpaused',
      'suspended:user',
      'resumed:unpaused',
      'suspended:user',
    ]);
  });

  it('a passthrough quit stops the domain like any exit: event, state, nothing left behind', async () => {
    const rec = recordEvents(conn);
    const dom = await conn.defineDomain(pausedOnly('pt'));
    await dom.start({ paused: true });
    const pid = (await dom.getInfo()).pid as number;
    const internal = openInternal(conn, { apiVersion: '1.0' });
    await internal.monitorCommand(dom, 'quit').catch(() => undefined);
    expect((await rec.next((e) => e.type === 'stopped')).reason).toBe('shutdown');
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', pid: null, taints: [] });
    expect(alive(pid)).toBe(false);
    expect(runLeftovers(root)).toEqual([]);
  });

  it('reports QMP errors with their class, and refuses bad input and inactive domains, typed', async () => {
    const dom = await conn.defineDomain(pausedOnly('pt'));
    const internal = openInternal(conn, { apiVersion: '1.0' });
    expect((await codeOf(internal.monitorCommand(dom, 'query-status'))).code).toBe('OPERATION_INVALID');
    await dom.start({ paused: true });
    const notFound = await codeOf(internal.monitorCommand(dom, 'no-such-command'));
    expect(notFound.code).toBe('OPERATION_FAILED');
    expect(notFound.details.qmpClass).toBe('CommandNotFound');
    const badArgs = await codeOf(internal.monitorCommand(dom, 'human-monitor-command', { bogus: 1 }));
    expect(badArgs).toMatchObject({ code: 'OPERATION_FAILED', details: { qmpClass: 'GenericError' } });
    for (const [command, args, field] of [
      ['', undefined, 'command'],
      ['query-status\n{"execute":"quit"}', undefined, 'command'],
      ['query-status', [1, 2], 'args'],
      ['query-status', { n: 1n }, 'args'],
    ] as const) {
      const err = await codeOf(internal.monitorCommand(dom, command, args as never));
      expect(err).toMatchObject({ code: 'XML_ERROR', details: { field } });
    }
    // None of that went through: QEMU is still there, still paused.
    expect(await internal.monitorCommand(dom, 'query-status')).toMatchObject({ running: false });
    await using testConn = await connect('test:///default');
    const testDom = await testConn.defineDomain(pausedOnly('t'));
    const noSupport = await codeOf(
      openInternal(testConn, { apiVersion: '1.0' }).monitorCommand(testDom, 'query-status'),
    );
    expect(noSupport.code).toBe('NO_SUPPORT');
  });

  it("a modifying command takes the domain's job (libvirt's QEMU_JOB_MODIFY): it waits for a start and a device change; queries do not", async () => {
    const internal = openInternal(conn, { apiVersion: '1.0' });
    const startGate = gate();
    const attachGate = gate();
    internal.setHandler(
      'thread.setScheduler',
      async () => {
        startGate.entered();
        // SCHED_OTHER priority 0 is what every thread already has: the post-check passes.
        return startGate.released;
      },
      { timeoutMs: 120_000 },
    );
    internal.setHandler(
      'storage.openFile',
      async (ctx, args) => {
        if (ctx.phase === 'hotplug') {
          attachGate.entered();
          await attachGate.released;
        }
        return { fd: openSync(args.path, args.mode === 'r' ? 'r' : 'r+') };
      },
      { timeoutMs: 120_000 },
    );
    const rec = recordEvents(conn);
    const dom = await conn.defineDomain(
      pausedOnly('ptjob', { cputune: { vcpusched: [{ ids: '0', scheduler: 'other' }] } }),
    );
    const order: string[] = [];

    // 1. A start holds the domain inside a handler.
    const starting = dom.start({ paused: true }).then(() => order.push('start'));
    await startGate.inHandler;
    const cont = internal.monitorCommand(dom, 'cont').then(() => order.push('cont'));
    // One whose signal fires while it waits for its turn leaves the queue, typed; nothing was sent.
    const giveUp = new AbortController();
    const stopAborted = codeOf(internal.monitorCommand(dom, 'stop', undefined, { signal: giveUp.signal }));
    giveUp.abort();
    expect(await stopAborted).toMatchObject({ code: 'ABORTED', details: { operation: 'monitor-command' } });
    // A query does not queue: the domain has not finished starting, so it is refused at once.
    expect((await codeOf(internal.monitorCommand(dom, 'query-status'))).code).toBe('OPERATION_INVALID');
    expect(await dom.getJobInfo()).toMatchObject({ operation: 'start' });
    startGate.release();
    await Promise.all([starting, cont]);
    // `cont` ran once the start had finished (paused): without the job it would have found the
    // domain not started and failed.
    expect(order).toEqual(['start', 'cont']);
    // QEMU sends RESUME before its reply: the state is already the new one.
    expect(await dom.getState()).toEqual({ state: 'running', reason: 'unpaused' });

    // 2. A device change holds the domain inside its handler (phase hotplug).
    const image = join(root, 'lib', 'ptjob.img');
    writeFileSync(image, Buffer.alloc(1024 * 1024));
    const attaching = dom
      .attachDevice(
        `<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='${image}'/><target dev='vdb' bus='virtio'/></disk>`,
        { live: true },
      )
      .then(() => order.push('attach'));
    await attachGate.inHandler;
    const stop = internal.monitorCommand(dom, 'stop').then(() => order.push('stop'));
    // A query answers while the job holds the domain.
    expect(await internal.monitorCommand(dom, 'query-status')).toMatchObject({ running: true });
    expect(await dom.getJobInfo()).toMatchObject({ operation: 'device-change' });
    expect(await dom.getState()).toEqual({ state: 'running', reason: 'unpaused' });
    attachGate.release();
    await Promise.all([attaching, stop]);
    expect(order).toEqual(['start', 'cont', 'attach', 'stop']);
    expect(await dom.getState()).toEqual({ state: 'paused', reason: 'user' });
    expect(
      rec.events
        .filter((e) => ['started', 'suspended', 'resumed'].includes(e.type))
        .map((e) => `${e.type}:${e.reason}`),
    ).toEqual(['started:booted', 'suspended:user', 'resumed:unpaused', 'suspended:user']);
    expect(dom.getDefinition().disks.map((d) => d.target.dev)).toEqual(['vdb']);
    expect(await dom.getJobInfo()).toMatchObject({ operation: 'none' });
  }, 180_000);
});

describe('QMP passthrough (monitorEvents)', () => {
  it('yields the raw events of the domain and ends when the domain stops', async () => {
    const dom = await conn.defineDomain(pausedOnly('ev'));
    await dom.start({ paused: true });
    const internal = openInternal(conn, { apiVersion: '1.0' });
    const events = internal.monitorEvents(dom);
    expect((await dom.getInfo()).taints).toContain('custom-monitor');
    await dom.resume();
    await dom.suspend();
    const seen: MonitorEvent[] = [];
    const collected = (async () => {
      for await (const ev of events) seen.push(ev);
    })();
    await dom.destroy();
    await collected;
    const names = seen.map((e) => e.event);
    expect(names.slice(0, 2)).toEqual(['RESUME', 'STOP']);
    // SIGTERM makes QEMU report a host-signalled shutdown before its monitor closes.
    expect(names).toContain('SHUTDOWN');
    const shutdown = seen.find((e) => e.event === 'SHUTDOWN');
    expect(shutdown?.data).toMatchObject({ guest: false, reason: 'host-signal' });
    expect(shutdown?.timestamp.seconds).toBeGreaterThan(1_600_000_000);
  });

  it('ends on abort, and a consumer that mutates events does not disturb the driver', async () => {
    const dom = await conn.defineDomain(pausedOnly('ev'));
    await dom.start({ paused: true });
    const internal = openInternal(conn, { apiVersion: '1.0' });
    const abort = new AbortController();
    const events = internal.monitorEvents(dom, { signal: abort.signal });
    await dom.resume();
    const first = await events.next();
    expect(first.value).toMatchObject({ event: 'RESUME' });
    (first.value as { event: string }).event = 'STOP';
    abort.abort();
    expect(await events.next()).toEqual({ value: undefined, done: true });
    expect((await dom.getInfo()).state).toBe('running');
  });

  it('fails instead of buffering without bound when the consumer does not read', async () => {
    const dom = await conn.defineDomain(pausedOnly('ev'));
    await dom.start({ paused: true });
    const internal = openInternal(conn, { apiVersion: '1.0' });
    const events = internal.monitorEvents(dom, { maxBuffered: 2 });
    await dom.resume();
    await dom.suspend();
    await dom.resume();
    expect((await events.next()).value).toMatchObject({ event: 'RESUME' });
    expect((await events.next()).value).toMatchObject({ event: 'STOP' });
    await expect(events.next()).rejects.toMatchObject({ code: 'OPERATION_FAILED' });
  });
});

/** The latest `VIRTKIT-DEVICES …;` report of a `devices` guest, once `match` holds for it. */
async function guestSees(name: string, match: (report: string) => boolean): Promise<string> {
  const console = join(root, 'log', `${name}.console.log`);
  const until = Date.now() + 120_000;
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

describe('QMP passthrough changing devices', { timeout: 300_000 }, () => {
  it('the live definition follows a passthrough device_del (DEVICE_DELETED) and device_add, with events', async () => {
    const rec = recordEvents(conn);
    const dom = await conn.defineDomain(tinyGuest('ptdev', 'devices'));
    await dom.start();
    await guestSees('ptdev', (r) => r === '');
    const internal = openInternal(conn, { apiVersion: '1.0' });
    const first = join(root, 'lib', 'first.img');
    writeFileSync(first, Buffer.alloc(4 * 1024 * 1024));
    await dom.attachDevice(
      `<disk type='file'><driver name='qemu' type='raw'/><source file='${first}'/><target dev='vdb' bus='virtio'/></disk>`,
      { live: true },
    );
    await guestSees('ptdev', (r) => r.includes('blk:vda:8192'));

    // device_del behind the driver's back: the guest lets go, QEMU says DEVICE_DELETED, the live
    // definition drops the disk and its backend is released, as after dom.detachDevice.
    await internal.monitorCommand(dom, 'device_del', { id: 'virtio-disk1' });
    await rec.next((e) => e.type === 'device-removed' && e.reason === 'virtio-disk1');
    await guestSees('ptdev', (r) => r === '');
    expect(dom.getDefinition().disks).toEqual([]);
    const nodes = (await internal.monitorCommand(dom, 'query-named-block-nodes')) as unknown[];
    expect(nodes).toEqual([]);
    expect(await internal.monitorCommand(dom, 'query-fdsets')).toEqual([]);

    // blockdev-add is a backend only: nothing in the definition; device_add then adds a disk the
    // driver reads back from QEMU under the id given.
    const second = join(root, 'lib', 'second.img');
    writeFileSync(second, Buffer.alloc(2 * 1024 * 1024));
    await internal.monitorCommand(dom, 'blockdev-add', {
      driver: 'raw',
      'node-name': 'pt-node',
      'read-only': true,
      file: { driver: 'file', filename: second },
    });
    expect(dom.getDefinition().disks).toEqual([]);
    await internal.monitorCommand(dom, 'device_add', {
      driver: 'virtio-blk-pci',
      drive: 'pt-node',
      id: 'pt-disk',
    });
    await rec.next((e) => e.type === 'device-added' && e.reason === 'pt-disk');
    expect(dom.getDefinition().disks).toEqual([
      {
        type: 'file',
        device: 'disk',
        driver: { type: 'raw' },
        source: second,
        target: { dev: 'vda', bus: 'virtio' },
        readonly: true,
        alias: 'pt-disk',
        address: { type: 'pci', domain: 0, bus: 0, slot: expect.any(Number), function: 0 },
      },
    ]);
    expect(dom.toXML()).toContain(`<source file='${second}'/>`);
    await guestSees('ptdev', (r) => r.includes('blk:vda:4096'));
    // A successor driver adopts the same live definition.
    await conn.close();
    conn = await openRoot(root);
    const again = await conn.lookupDomain('ptdev');
    expect(again.getDefinition().disks.map((d) => d.alias)).toEqual(['pt-disk']);
    expect((await again.getInfo()).taints).toContain('custom-monitor');
    const log = readFileSync(join(root, 'log', 'ptdev.log'), 'utf8');
    expect(log).toMatch(/QEMU deleted virtio-disk1, which this driver did not unplug/);
    expect(log).toMatch(/blockdev-add changes a backend; the live definition is left as it was/);
    expect(log).toMatch(/pt-disk added to the live definition/);
  });
});

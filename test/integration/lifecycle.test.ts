import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Connection } from '../../src/stable/index.js';
import {
  alive,
  GUEST_MARKER,
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
  root = tempRoot();
  conn = await openRoot(root);
});

afterEach(async () => {
  for (const dom of await conn.listDomains({ state: 'active' })) await dom.destroy({ graceMs: 1000 });
  await conn.close();
  removeRoot(root);
});

/** How many descriptors of this process are open on `/proc/<pid>/stat` (getInfo keeps one per running domain). */
const statFds = (pid: number) =>
  readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`) === `/proc/${pid}/stat`;
    } catch {
      return false;
    }
  }).length;

const types = (rec: ReturnType<typeof recordEvents>) => rec.events.map((e) => `${e.type}:${e.reason}`);

/** Waits (60 s at most) until /proc says the process is in `state` (e.g. `T`, stopped). */
async function waitForProcessState(pid: number, state: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === state) return;
    if (Date.now() > deadline) throw new Error(`pid ${pid} never reached state ${state}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function waitForConsole(text: string, timeoutMs = 60_000): Promise<string> {
  const path = join(root, 'log', `${'g'}.console.log`);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let content = '';
    try {
      content = readFileSync(path, 'utf8');
    } catch {}
    if (content.includes(text)) return content;
    if (Date.now() > deadline)
      throw new Error(`console never showed ${text}; it has: ${content.slice(-500)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('a TCG guest through the embedded driver', () => {
  it('boots, prints on the serial console and stops with reason shutdown when it powers off', async () => {
    const rec = recordEvents(conn);
    const dom = await conn.defineDomain(tinyGuest('g', 'hello'));
    await dom.start();
    const stopped = await rec.next((e) => e.type === 'stopped');
    expect(stopped.reason).toBe('shutdown');
    expect(readFileSync(join(root, 'log', 'g.console.log'), 'utf8')).toContain(GUEST_MARKER);
    expect(types(rec)).toEqual(['defined:added', 'started:booted', 'stopped:shutdown']);
    const info = await dom.getInfo();
    expect(info).toMatchObject({ state: 'shutoff', reason: 'shutdown', pid: null, id: null });
    expect(runLeftovers(root)).toEqual([]);
    const log = readFileSync(join(root, 'log', 'g.log'), 'utf8');
    expect(log).toMatch(/virtkit: starting: \/usr\/bin\/qemu-system-x86_64 .*-name guest=g,debug-threads=on/);
    expect(log).toMatch(/exited \(code 0\): stopped, shutdown/);
  });

  it('shuts down through ACPI when asked', async () => {
    const rec = recordEvents(conn);
    const dom = await conn.defineDomain(tinyGuest('g', 'wait'));
    await dom.start();
    await waitForConsole('VIRTKIT-GUEST-WAITING');
    await dom.shutdown({ timeoutMs: 30_000 });
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'shutdown' });
    expect(readFileSync(join(root, 'log', 'g.console.log'), 'utf8')).toContain('VIRTKIT-GUEST-POWERBUTTON');
    expect(types(rec).at(-1)).toBe('stopped:shutdown');
    expect(runLeftovers(root)).toEqual([]);
  });

  it('times out a shutdown the guest ignores, and falls back to destroy when asked', async () => {
    // A paused guest never sees the power button.
    const dom = await conn.defineDomain(pausedOnly('ignorer'));
    await dom.start({ paused: true });
    const { pid } = await dom.getInfo();
    await expect(dom.shutdown({ timeoutMs: 300 })).rejects.toMatchObject({ code: 'OPERATION_TIMEOUT' });
    expect(await dom.getInfo()).toMatchObject({ state: 'paused', pid });
    await dom.shutdown({ timeoutMs: 300, fallbackToDestroy: true });
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'destroyed' });
    expect(alive(pid as number)).toBe(false);
  });
});

describe('life cycle of a paused-only domain', () => {
  it('start paused -> paused; resume -> running; suspend/resume; destroy', async () => {
    const rec = recordEvents(conn);
    const dom = await conn.defineDomain(pausedOnly('p', { vcpu: { count: 2 } }));
    await dom.start({ paused: true });
    const info = await dom.getInfo();
    expect(info).toMatchObject({ state: 'paused', reason: 'user', vcpus: 2, memoryKiB: 65536, taints: [] });
    expect(info.id).toBeGreaterThan(0);
    expect(alive(info.pid as number)).toBe(true);
    // The QEMU process execs in place of the stub: same pid, QEMU's binary.
    expect(readFileSync(`/proc/${info.pid}/cmdline`, 'utf8').split('\0')[0]).toBe(
      '/usr/bin/qemu-system-x86_64',
    );

    await dom.resume();
    expect(await dom.getInfo()).toMatchObject({ state: 'running', reason: 'unpaused' });
    await dom.suspend();
    expect(await dom.getInfo()).toMatchObject({ state: 'paused', reason: 'user' });
    await expect(dom.suspend()).rejects.toMatchObject({ code: 'OPERATION_INVALID' });
    await dom.resume();
    await expect(dom.resume()).rejects.toMatchObject({ code: 'OPERATION_INVALID' });
    await expect(dom.start()).rejects.toMatchObject({ code: 'OPERATION_INVALID' });
    await expect(dom.undefine()).rejects.toMatchObject({ code: 'OPERATION_INVALID' });

    expect(statFds(info.pid as number)).toBe(1);
    await dom.destroy();
    expect(statFds(info.pid as number)).toBe(0);
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'destroyed', pid: null });
    expect(alive(info.pid as number)).toBe(false);
    expect(runLeftovers(root)).toEqual([]);
    expect(types(rec)).toEqual([
      'defined:added',
      'started:booted',
      'suspended:user',
      'resumed:unpaused',
      'suspended:user',
      'resumed:unpaused',
      'stopped:destroyed',
    ]);
    await expect(dom.destroy()).rejects.toMatchObject({ code: 'OPERATION_INVALID' });
    await dom.undefine();
    await expect(conn.lookupDomain('p')).rejects.toMatchObject({ code: 'NO_DOMAIN' });
  });

  it('destroy --graceful: QEMU exits on SIGTERM -> destroyed; a QEMU that cannot -> OPERATION_TIMEOUT, still running', async () => {
    const rec = recordEvents(conn);
    const dom = await conn.defineDomain(pausedOnly('gr'));
    await expect(dom.destroy({ graceful: true })).rejects.toMatchObject({ code: 'OPERATION_INVALID' });

    await dom.start();
    const first = (await dom.getInfo()).pid as number;
    await dom.destroy({ graceful: true });
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'destroyed', pid: null });
    expect(alive(first)).toBe(false);

    // A stopped QEMU keeps SIGTERM pending: to the driver it is a QEMU that does not exit.
    await dom.start();
    const pid = (await dom.getInfo()).pid as number;
    process.kill(pid, 'SIGSTOP');
    await waitForProcessState(pid, 'T');
    const err = await dom.destroy({ graceful: true, graceMs: 1000 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: 'OPERATION_TIMEOUT', details: { pid } });
    expect(await dom.getInfo()).toMatchObject({ state: 'running', pid });
    expect(alive(pid)).toBe(true);
    // A plain destroy still ends it (SIGKILL reaches a stopped process).
    await dom.destroy({ graceMs: 1000 });
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'destroyed', pid: null });
    expect(alive(pid)).toBe(false);
    expect(runLeftovers(root)).toEqual([]);
    expect(types(rec)).toEqual([
      'defined:added',
      'started:booted',
      'stopped:destroyed',
      'started:booted',
      'stopped:destroyed',
    ]);
  });

  it('kill -9 of QEMU -> stopped with reason crashed, leftovers cleaned', async () => {
    const rec = recordEvents(conn);
    const dom = await conn.defineDomain(pausedOnly('k'));
    await dom.start({ paused: true });
    const { pid } = await dom.getInfo();
    process.kill(pid as number, 'SIGKILL');
    const stopped = await rec.next((e) => e.type === 'stopped');
    expect(stopped.reason).toBe('crashed');
    expect(statFds(pid as number)).toBe(0);
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'crashed' });
    expect(runLeftovers(root)).toEqual([]);
    // It can be started again.
    await dom.start({ paused: true });
    expect((await dom.getInfo()).state).toBe('paused');
  });

  it('serialises concurrent operations on one domain instead of interleaving them', async () => {
    const dom = await conn.defineDomain(pausedOnly('c'));
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

  it('lists and looks up domains by name and uuid, by state', async () => {
    const a = await conn.defineDomain(pausedOnly('a'));
    await conn.defineDomain(pausedOnly('b'));
    await a.start({ paused: true });
    expect((await conn.listDomains()).map((d) => d.name)).toEqual(['a', 'b']);
    expect((await conn.listDomains({ state: 'active' })).map((d) => d.name)).toEqual(['a']);
    expect((await conn.listDomains({ state: 'inactive' })).map((d) => d.name)).toEqual(['b']);
    expect((await conn.lookupDomain(a.uuid)).name).toBe('a');
    expect((await conn.lookupDomain('b')).name).toBe('b');
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
    const dom = await conn.defineDomain(pausedOnly('it'));
    await dom.start({ paused: true });
    await dom.destroy();
    await loop;
    expect(seen).toEqual(['defined:added', 'started:booted', 'suspended:user', 'stopped:destroyed']);
  });
});

import { existsSync, mkdirSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Connection } from '../../src/stable/index.js';
import { installFaultHook } from '../../src/util/fault-points.js';
import { acceptsConnection, alive, openRoot, pausedOnly, removeRoot, tempRoot } from '../helpers/env.js';
import { leftovers, NOTHING_LEFT } from '../helpers/hostile.js';

/*
 * The UNIX sockets QEMU listens on for virtio-serial channels (the guest agent's) and serial ports
 * are removed once it is gone, as libvirt's qemuProcessCleanupChardevDevice does: after a destroy
 * and after a start that failed once QEMU had bound them. A socket QEMU connected to is someone
 * else's and stays.
 */

let root: string;
let conn: Connection;
const servers: Server[] = [];

beforeEach(async () => {
  root = tempRoot('vk-chardev-');
  mkdirSync(join(root, 'files'), { recursive: true });
  conn = await openRoot(root);
});

afterEach(async () => {
  installFaultHook(undefined);
  for (const dom of await conn.listDomains({ state: 'active' })) await dom.destroy({ graceMs: 1000 });
  await conn.close();
  for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
  removeRoot(root);
});

/** Waits (up to 60 s) until none of `paths` exists; returns those that still do. */
async function goneWithin(paths: string[]): Promise<string[]> {
  const deadline = Date.now() + 60_000;
  while (paths.some((p) => existsSync(p)) && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 100));
  return paths.filter((p) => existsSync(p));
}

/** A paused-only domain with a guest-agent channel on the generated path, one named, and a bound serial. */
function withSockets(name: string) {
  const named = join(root, 'files', `${name}.chan.sock`);
  const serial = join(root, 'files', `${name}.serial.sock`);
  const def = pausedOnly(name, {
    serials: [{ type: 'unix', mode: 'bind', path: serial }],
    channels: [
      { type: 'unix', name: 'org.qemu.guest_agent.0' },
      { type: 'unix', name: 'org.example.named', path: named },
    ],
  });
  return { def, named, serial };
}

describe('UNIX sockets QEMU listened on for channels and serial ports', { timeout: 180_000 }, () => {
  // QEMU removes them itself when it ends on SIGTERM; killed, it cannot: the driver must.
  it.each([
    ['a destroy', 'destroy'],
    ['QEMU killed (SIGKILL) behind the driver', 'kill'],
    ['QEMU killed while no driver ran, then a reconnect', 'reconnect'],
  ] as const)('exist while it runs and are gone after %s; nothing else is left', async (_, how) => {
    const { def, named, serial } = withSockets(`chardev-${how}`);
    const dom = await conn.defineDomain(def);
    await dom.start({ paused: true });
    const agent = join(root, 'run', `${dom.uuid}.org.qemu.guest_agent.0.sock`);
    for (const path of [agent, named, serial]) expect(await acceptsConnection(path), path).toBe(true);

    if (how === 'destroy') await dom.destroy({ graceMs: 1000 });
    else if (how === 'reconnect') {
      const pid = (await dom.getInfo()).pid as number;
      await conn.close();
      process.kill(pid, 'SIGKILL');
      const deadline = Date.now() + 60_000;
      while (alive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      conn = await openRoot(root);
      const again = await conn.lookupDomain(def.name);
      expect(await again.getInfo()).toMatchObject({ state: 'shutoff', reason: 'crashed', pid: null });
    } else {
      process.kill((await dom.getInfo()).pid as number, 'SIGKILL');
      const deadline = Date.now() + 60_000;
      while ((await dom.getInfo()).state !== 'shutoff' && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 100));
      expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'crashed', pid: null });
    }
    expect(await goneWithin([agent, named, serial])).toEqual([]);
    expect(await leftovers(root, dom.uuid)).toEqual(NOTHING_LEFT);
  });

  it('are gone after a start that failed once QEMU had bound them', async () => {
    const { def, named, serial } = withSockets('chardev-failed');
    const dom = await conn.defineDomain(def);
    const agent = join(root, 'run', `${dom.uuid}.org.qemu.guest_agent.0.sock`);
    const controller = new AbortController();
    let boundAtFailure: boolean[] = [];
    // QEMU is past its command line (its monitor answered) when the threads are read: the sockets
    // are bound; the start is aborted there.
    installFaultHook((point) => {
      if (point !== 'start:step:readThreads') return;
      boundAtFailure = [agent, named, serial].map((p) => existsSync(p));
      controller.abort();
    });
    const err = await dom.start({ paused: true, signal: controller.signal }).catch((e: unknown) => e);
    installFaultHook(undefined);
    expect(err).toMatchObject({ name: 'VirtError', code: 'ABORTED' });
    expect(boundAtFailure).toEqual([true, true, true]);
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', pid: null });
    expect(await goneWithin([agent, named, serial])).toEqual([]);
    expect(await leftovers(root, dom.uuid)).toEqual(NOTHING_LEFT);
  });

  it('a socket QEMU connected to (serial mode connect) stays with whoever listens there', async () => {
    const path = join(root, 'files', 'peer.sock');
    const server = createServer((sock) => sock.on('error', () => {}));
    servers.push(server);
    await new Promise<void>((r) => server.listen(path, r));
    const dom = await conn.defineDomain(
      pausedOnly('chardev-connect', { serials: [{ type: 'unix', mode: 'connect', path }] }),
    );
    await dom.start({ paused: true });
    await dom.destroy({ graceMs: 1000 });
    expect(await leftovers(root, dom.uuid)).toEqual(NOTHING_LEFT);
    expect(existsSync(path)).toBe(true);
    expect(await acceptsConnection(path)).toBe(true);
  });
});

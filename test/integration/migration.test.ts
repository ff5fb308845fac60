import { existsSync, readFileSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Connection, Domain, MigrationProgress } from '../../src/stable/index.js';
import {
  alive,
  GUEST_MARKER,
  openRoot,
  processesMentioning,
  removeRoot,
  runLeftovers,
  tempRoot,
  tinyGuest,
} from '../helpers/env.js';

/*
 * Live migration between two embedded roots on this host, with a real TCG guest whose state lives
 * only in its RAM: /init counts on the serial console. Each side writes its own console file, so
 * the destination's console shows whether the count went on (state moved) or restarted (rebooted).
 */

let rootA: string;
let rootB: string;
let src: Connection;
let dst: Connection;

beforeEach(async () => {
  rootA = tempRoot('vk-mig-a-');
  rootB = tempRoot('vk-mig-b-');
  src = await openRoot(rootA);
  dst = await openRoot(rootB);
});

afterEach(async () => {
  for (const conn of [src, dst]) {
    for (const dom of await conn.listDomains({ state: 'active' })) await dom.destroy({ graceMs: 1000 });
    await conn.close();
  }
  removeRoot(rootA);
  removeRoot(rootB);
});

function consoleOf(dom: Domain): string {
  const serial = dom.getDefinition().serials[0];
  if (serial?.type !== 'file' || !serial.path) throw new Error('the guest has no file console');
  return serial.path;
}

/** The counts printed on a console, in order. */
function counts(path: string): number[] {
  if (!existsSync(path)) return [];
  return [...readFileSync(path, 'utf8').matchAll(/VIRTKIT-COUNT (\d+)/g)].map((m) => Number(m[1]));
}

async function until<T>(what: string, probe: () => T | undefined, timeoutMs = 120_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Starts a counting guest on the source and waits until it has counted to `n`. */
async function countingGuest(name: string, n = 3): Promise<Domain> {
  const dom = await src.defineDomain(tinyGuest(name, 'count'));
  await dom.start();
  const path = consoleOf(dom);
  await until(`count ${n} on the source`, () => (counts(path).at(-1) ?? 0) >= n);
  return dom;
}

/** The live XML with the console path, which is each root's own, blanked out. */
function abi(dom: Domain): string {
  return dom.toXML().replaceAll(consoleOf(dom), '(console)');
}

describe('live migration of a running TCG guest', () => {
  it('moves over TCP (migrateTo): the count goes on at the destination and the source QEMU is gone', async () => {
    const dom = await countingGuest('mig-tcp');
    const srcPid = (await dom.getInfo()).pid as number;
    const srcXmlAbi = abi(dom);
    const srcConsole = consoleOf(dom);
    const progress: MigrationProgress[] = [];
    const moved = await dom.migrateTo(dst, {
      listen: 'tcp:127.0.0.1:0',
      onProgress: (p) => progress.push(p),
    });

    const before = counts(srcConsole).at(-1) as number;
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'migrated', pid: null });
    expect(alive(srcPid)).toBe(false);
    expect(runLeftovers(rootA)).toEqual([]);

    const info = await moved.getInfo();
    expect(info).toMatchObject({ state: 'running', reason: 'migrated' });
    expect(processesMentioning(dom.uuid)).toEqual([info.pid]);
    expect(abi(moved)).toEqual(srcXmlAbi);

    const dstConsole = consoleOf(moved);
    expect(dstConsole.startsWith(rootB)).toBe(true);
    await until('the destination to count on', () => (counts(dstConsole).at(-1) ?? 0) >= before + 3);
    const there = counts(dstConsole);
    // State moved, not rebooted: no fresh /init, and the first count continues the source's.
    expect(readFileSync(dstConsole, 'utf8')).not.toContain(GUEST_MARKER);
    expect(there[0]).toBeGreaterThan(1);
    expect(there[0]).toBeLessThanOrEqual(before + 1);
    expect(there.every((n, i) => i === 0 || n === (there[i - 1] as number) + 1)).toBe(true);

    const last = progress.at(-1);
    expect(last?.status).toBe('completed');
    expect(last?.dataTotal).toBeGreaterThan(100 * 1024 * 1024);
    expect(last?.dataProcessed).toBeGreaterThan(0);
  });
});

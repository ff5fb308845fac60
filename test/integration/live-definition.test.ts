import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Connection } from '../../src/stable/index.js';
import { killChild, runChild } from '../helpers/child.js';
import { alive, openRoot, recordEvents, removeRoot, runLeftovers, tempRoot } from '../helpers/env.js';

const CHILD = join(import.meta.dirname, '../fixtures/driver-child.ts');

let root: string;
let conn: Connection | undefined;

beforeEach(() => {
  root = tempRoot('vk-live-');
});

afterEach(async () => {
  if (conn) {
    for (const dom of await conn.listDomains({ state: 'active' })) await dom.destroy({ graceMs: 1000 });
    await conn.close();
  }
  conn = undefined;
  removeRoot(root);
});

/** Starts a paused domain in a child driver, SIGKILLs that driver, and returns the QEMU pid. */
async function startInKilledManager(name: string): Promise<number> {
  const { child, value: pid } = await runChild(CHILD, [root, name]);
  await killChild(child);
  expect(alive(pid)).toBe(true);
  return pid;
}

const statusFile = (): string => {
  const [file] = runLeftovers(root).filter((f) => f.endsWith('.json'));
  return join(root, 'run', file as string);
};

describe('live definition', () => {
  it('survives a SIGKILL of the manager and a reconnect; toXML({ inactive: true }) is the persistent one', async () => {
    const pid = await startInKilledManager('survivor');
    const recorded = JSON.parse(readFileSync(statusFile(), 'utf8'));
    expect(recorded.liveVersion).toBe(1);
    conn = await openRoot(root);
    const dom = await conn.lookupDomain('survivor');
    expect(await dom.getInfo()).toMatchObject({ state: 'paused', pid });
    expect(dom.getDefinition()).toEqual(recorded.live);
    // A new persistent definition does not touch the live one of the running domain.
    await conn.defineDomain({ ...dom.getDefinition({ inactive: true }), memoryKiB: 96 * 1024 });
    expect(dom.toXML()).toMatch(/<memory unit=.KiB.>65536<\/memory>/);
    expect(dom.toXML({ inactive: true })).toMatch(/<memory unit=.KiB.>98304<\/memory>/);
    // And a second reconnect still shows the live definition of the first start.
    await conn.close();
    conn = await openRoot(root);
    const again = await conn.lookupDomain('survivor');
    expect(again.getDefinition()).toEqual(recorded.live);
    expect(again.getDefinition({ inactive: true }).memoryKiB).toBe(96 * 1024);
  });

  it('a corrupted live definition is reported, kept as found, and the domain still adopted', async () => {
    const pid = await startInKilledManager('corrupt');
    const path = statusFile();
    const status = JSON.parse(readFileSync(path, 'utf8'));
    status.live = { ...status.live, memoryKiB: -5 };
    writeFileSync(path, JSON.stringify(status));
    const before = readFileSync(path, 'utf8');
    conn = await openRoot(root);
    const events = recordEvents(conn);
    const event = await events.next((e) => e.type === 'definition-error', 10_000);
    expect(event).toMatchObject({ reason: 'live-unreadable', domain: { name: 'corrupt' } });
    const dom = await conn.lookupDomain('corrupt');
    expect(await dom.getInfo()).toMatchObject({ state: 'paused', pid });
    expect(() => dom.toXML()).toThrow(expect.objectContaining({ code: 'OPERATION_FAILED' }));
    expect(() => dom.getDefinition()).toThrow(/live definition .* is unreadable/);
    expect(dom.toXML({ inactive: true })).toContain('<name>corrupt</name>');
    // Not replaced: the record is exactly what the test wrote.
    expect(readFileSync(path, 'utf8')).toBe(before);
    expect(JSON.parse(readFileSync(path, 'utf8')).live).toEqual(status.live);
    expect(readFileSync(join(root, 'log', 'corrupt.log'), 'utf8')).toMatch(
      /live definition .* is unreadable/,
    );
    await dom.destroy();
    expect(alive(pid)).toBe(false);
    expect(runLeftovers(root)).toEqual([]);
  });
});

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { START_STEPS } from '../../src/drivers/qemu/start.js';
import type { Connection, Domain } from '../../src/stable/index.js';
import { installFaultHook } from '../../src/util/fault-points.js';
import {
  openRoot,
  pausedOnly,
  processesMentioning,
  removeRoot,
  runLeftovers,
  tempRoot,
} from '../helpers/env.js';

/*
 * A migration stopped at each of its points, by its AbortSignal or by a failure there, is rolled
 * back: the source is as it was (same QEMU, same state, no job), the destination has nothing left
 * (no QEMU, no domain, no file under run/), and the next migration goes through. The source is a
 * paused guest (its QEMU runs no code), so the many destination starts stay cheap.
 */

let rootA: string;
let rootB: string;
let src: Connection;
let dst: Connection;

beforeEach(async () => {
  rootA = tempRoot('vk-migph-a-');
  rootB = tempRoot('vk-migph-b-');
  src = await openRoot(rootA);
  dst = await openRoot(rootB);
});

afterEach(async () => {
  installFaultHook(undefined);
  for (const conn of [src, dst]) {
    for (const dom of await conn.listDomains({ state: 'active' })) await dom.destroy({ graceMs: 1000 });
    await conn.close();
  }
  removeRoot(rootA);
  removeRoot(rootB);
});

/** The destination's start steps, then what follows them on each side. */
const POINTS = [
  ...START_STEPS.map((step) => `start:step:${step.name}`),
  'migrate:prepared',
  'migrate:streaming',
];

async function expectRolledBack(dom: Domain, srcPid: number, point: string): Promise<void> {
  expect(await dom.getInfo(), point).toMatchObject({ state: 'paused', pid: srcPid });
  expect((await dom.getJobInfo()).operation, point).toBe('none');
  expect(await dst.listDomains(), point).toEqual([]);
  expect(runLeftovers(rootB), point).toEqual([]);
  expect(processesMentioning(dom.uuid), point).toEqual([srcPid]);
}

describe('a migration stopped at each point is rolled back', { timeout: 600_000 }, () => {
  it('by its AbortSignal: ABORTED, the source as before, nothing at the destination', async () => {
    const dom = await src.defineDomain(pausedOnly('mig-each-abort'));
    await dom.start({ paused: true });
    const srcPid = (await dom.getInfo()).pid as number;
    for (const point of POINTS) {
      const controller = new AbortController();
      installFaultHook((p) => {
        if (p === point) controller.abort();
      });
      const err = await dom.migrateTo(dst, { signal: controller.signal }).catch((e: unknown) => e);
      installFaultHook(undefined);
      expect(err, point).toMatchObject({ name: 'VirtError', code: 'ABORTED' });
      await expectRolledBack(dom, srcPid, point);
    }
    const moved = await dom.migrateTo(dst);
    expect(await moved.getInfo()).toMatchObject({ state: 'paused', reason: 'migrated' });
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'migrated' });
  });

  it('by a failure there: a typed error, the source as before, nothing at the destination', async () => {
    const dom = await src.defineDomain(pausedOnly('mig-each-fail'));
    await dom.start({ paused: true });
    const srcPid = (await dom.getInfo()).pid as number;
    for (const point of POINTS) {
      installFaultHook((p) => {
        if (p === point) throw new Error(`injected failure at ${point}`);
      });
      const err = await dom.migrateTo(dst).catch((e: unknown) => e);
      installFaultHook(undefined);
      expect(err, point).toMatchObject({ name: 'VirtError' });
      await expectRolledBack(dom, srcPid, point);
    }
    const moved = await dom.migrateTo(dst);
    expect(await moved.getInfo()).toMatchObject({ state: 'paused', reason: 'migrated' });
  });
});

import { openSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { START_STEPS } from '../../src/drivers/qemu/start.js';
import { openInternal } from '../../src/internal/index.js';
import type { Domain } from '../../src/stable/index.js';
import { installFaultHook } from '../../src/util/fault-points.js';
import { alive, pausedOnly, processesMentioning, runLeftovers } from '../helpers/env.js';
import { useMigrationRoots } from '../helpers/migration-roots.js';

/*
 * A migration stopped at each of its points, by its AbortSignal or by a failure there, is rolled
 * back: the source is as it was (same QEMU, same state, no job), the destination has nothing left
 * (no QEMU, no domain, no file under run/), and the next migration goes through. The source is a
 * paused guest (its QEMU runs no code), so the many destination starts stay cheap.
 */

const mig = useMigrationRoots('vk-migph');

afterEach(() => {
  installFaultHook(undefined);
});

/** The destination's start steps, then what follows them on each side. */
const POINTS = [
  ...START_STEPS.map((step) => `start:step:${step.name}`),
  'migrate:prepared',
  'migrate:streaming',
];

/**
 * 10 KiB/s: the stream (64 MiB of zero pages, ~150 KiB) lasts seconds, so one stopped at
 * `migrate:streaming` is stopped before it could complete (a completed stream is a migration that
 * happened, whatever the signal says).
 */
const SLOW = 10 / 1024;

async function expectRolledBack(dom: Domain, srcPid: number, point: string): Promise<void> {
  expect(await dom.getInfo(), point).toMatchObject({ state: 'paused', pid: srcPid });
  expect((await dom.getJobInfo()).operation, point).toBe('none');
  expect(await mig.dst.listDomains(), point).toEqual([]);
  expect(runLeftovers(mig.rootB), point).toEqual([]);
  expect(processesMentioning(dom.uuid), point).toEqual([srcPid]);
}

describe('a migration stopped at each point is rolled back', { timeout: 600_000 }, () => {
  it('by its AbortSignal: ABORTED, the source as before, nothing at the destination', async () => {
    const dom = await mig.src.defineDomain(pausedOnly('mig-each-abort'));
    await dom.start({ paused: true });
    const srcPid = (await dom.getInfo()).pid as number;
    for (const point of POINTS) {
      const controller = new AbortController();
      installFaultHook((p) => {
        if (p === point) controller.abort();
      });
      const err = await dom
        .migrateTo(mig.dst, { signal: controller.signal, bandwidthMiBps: SLOW })
        .catch((e: unknown) => e);
      installFaultHook(undefined);
      expect(err, point).toMatchObject({ name: 'VirtError', code: 'ABORTED' });
      await expectRolledBack(dom, srcPid, point);
    }
    const moved = await dom.migrateTo(mig.dst);
    expect(await moved.getInfo()).toMatchObject({ state: 'paused', reason: 'migrated' });
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'migrated' });
  });

  it('by a failure there: a typed error, the source as before, nothing at the destination', async () => {
    const dom = await mig.src.defineDomain(pausedOnly('mig-each-fail'));
    await dom.start({ paused: true });
    const srcPid = (await dom.getInfo()).pid as number;
    for (const point of POINTS) {
      installFaultHook((p) => {
        if (p === point) throw new Error(`injected failure at ${point}`);
      });
      const err = await dom.migrateTo(mig.dst, { bandwidthMiBps: SLOW }).catch((e: unknown) => e);
      installFaultHook(undefined);
      expect(err, point).toMatchObject({ name: 'VirtError' });
      await expectRolledBack(dom, srcPid, point);
    }
    const moved = await dom.migrateTo(mig.dst);
    expect(await moved.getInfo()).toMatchObject({ state: 'paused', reason: 'migrated' });
  });
});

/** The files a process has open, by the paths its descriptors point at. */
function openFiles(pid: number): string[] {
  return readdirSync(`/proc/${pid}/fd`).map((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      return '';
    }
  });
}

describe('descriptors at the destination (phase pre-exec)', { timeout: 240_000 }, () => {
  it("a disk is opened by the destination's storage.openFile in phase pre-exec, before its QEMU exists, and the QEMU holds it", async () => {
    const calls: Array<{ phase: string; pid: number | undefined; path: string }> = [];
    openInternal(mig.dst, { apiVersion: '1.0' }).setHandler('storage.openFile', (ctx, args) => {
      calls.push({ phase: ctx.phase, pid: ctx.pid, path: args.path });
      return { fd: openSync(args.path, args.mode === 'r' ? 'r' : 'r+') };
    });
    // Shared storage: one image, at the same path for both sides.
    const image = join(mig.rootA, 'lib', 'shared.img');
    writeFileSync(image, Buffer.alloc(1024 * 1024));
    const dom = await mig.src.defineDomain(
      pausedOnly('mig-disk', {
        disks: [{ type: 'file', source: image, target: { dev: 'vda', bus: 'virtio' } }],
      }),
    );
    await dom.start({ paused: true });
    const srcPid = (await dom.getInfo()).pid as number;
    const offer = await dom.migrateBegin();
    const incoming = await mig.dst.migratePrepare(offer, { listen: 'tcp:127.0.0.1:0' });
    expect(calls).toEqual([{ phase: 'pre-exec', pid: undefined, path: image }]);
    const dstPid = (await incoming.domain.getInfo()).pid as number;
    expect(openFiles(dstPid)).toContain(image);
    await dom.migratePerform(incoming.uri, { cookie: incoming.cookie });
    const moved = await incoming.finish();
    await dom.migrateConfirm();
    expect(await moved.getInfo()).toMatchObject({ state: 'paused', reason: 'migrated', pid: dstPid });
    expect(openFiles(dstPid)).toContain(image);
    expect(processesMentioning(dom.uuid)).toEqual([dstPid]);
    expect(alive(srcPid)).toBe(false);
    expect(calls).toHaveLength(1);
  });
});

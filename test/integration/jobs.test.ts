import { readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { START_STEPS } from '../../src/drivers/qemu/start.js';
import { type InternalApi, openInternal } from '../../src/internal/index.js';
import type { Connection, DomainDefinitionInput } from '../../src/stable/index.js';
import { installFaultHook } from '../../src/util/fault-points.js';
import {
  openRoot,
  pausedOnly,
  processesMentioning,
  recordEvents,
  removeRoot,
  runLeftovers,
  tempRoot,
} from '../helpers/env.js';

let root: string;
let conn: Connection;
let internal: InternalApi;

beforeEach(async () => {
  root = tempRoot('vk-jobs-');
  conn = await openRoot(root);
  internal = openInternal(conn, { apiVersion: '1.0' });
});

afterEach(async () => {
  installFaultHook(undefined);
  for (const dom of await conn.listDomains({ state: 'active' })) await dom.destroy({ graceMs: 1000 });
  await conn.close();
  removeRoot(root);
});

/** A paused-only domain with a disk, so the start acquires a descriptor it must give back. */
function withDisk(name: string, extra: Partial<DomainDefinitionInput> = {}): DomainDefinitionInput {
  const image = join(root, 'lib', `${name}.img`);
  writeFileSync(image, Buffer.alloc(1024 * 1024));
  return pausedOnly(name, {
    disks: [{ type: 'file', source: image, target: { dev: 'vda', bus: 'virtio' } }],
    ...extra,
  });
}

/** Descriptors of this process that point at a file under the root: a leak if any outlive a start. */
function openUnderRoot(): string[] {
  const out: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (target.startsWith(root) && !target.endsWith('/driver.lock')) out.push(target);
    } catch {}
  }
  return out;
}

/** A handler that blocks until released; `entered` resolves with its signal once it runs. */
function blockingHandler() {
  let release!: () => void;
  const released = new Promise<undefined>((r) => {
    release = () => r(undefined);
  });
  let entered!: (signal: AbortSignal) => void;
  const inHandler = new Promise<AbortSignal>((r) => {
    entered = r;
  });
  return { released, release, inHandler, entered };
}

const pinnedSched = { cputune: { vcpusched: [{ ids: '0', scheduler: 'other' as const }] } };

describe('jobs', () => {
  it('queries answer while a long job runs, and the job reports its step', async () => {
    const gate = blockingHandler();
    internal.setHandler(
      'thread.setScheduler',
      async (ctx) => {
        gate.entered(ctx.signal);
        // SCHED_OTHER priority 0 is what every thread already has: the post-check passes.
        return gate.released;
      },
      { timeoutMs: 60_000 },
    );
    const dom = await conn.defineDomain(withDisk('long', pinnedSched));
    const starting = dom.start({ paused: true });
    await gate.inHandler;
    // Every query answers while the start is held inside a handler.
    const job = await dom.getJobInfo();
    expect(job).toMatchObject({ operation: 'start', phase: 'configureThreads', aborting: false });
    expect(job.progress).toEqual({ completed: 9, total: START_STEPS.length, unit: 'steps' });
    // QEMU exists, its vCPUs have not run: libvirt's paused/starting-up, until the start finishes.
    expect(await dom.getState()).toEqual({ state: 'paused', reason: 'starting-up' });
    expect(await dom.getInfo()).toMatchObject({ state: 'paused', reason: 'starting-up' });
    expect(dom.toXML()).toContain('<name>long</name>');
    expect((await conn.listDomains()).map((d) => d.name)).toEqual(['long']);
    expect((await conn.lookupDomain('long')).uuid).toBe(dom.uuid);
    // A second modifying job waits its turn; one whose signal fires leaves the queue with ABORTED.
    const waiting = new AbortController();
    const suspend = dom.suspend({ signal: waiting.signal }).catch((e: unknown) => e);
    waiting.abort();
    expect(await suspend).toMatchObject({ name: 'VirtError', code: 'ABORTED' });
    gate.release();
    await starting;
    expect(await dom.getInfo()).toMatchObject({ state: 'paused', reason: 'user' });
    expect(await dom.getJobInfo()).toMatchObject({ operation: 'none', phase: null });
    await expect(dom.abortJob()).rejects.toMatchObject({ code: 'OPERATION_INVALID' });
  });

  it('abortJob() aborts a start held in a handler: ABORTED, the handler signalled, nothing left', async () => {
    const gate = blockingHandler();
    internal.setHandler(
      'thread.setScheduler',
      async (ctx) => {
        gate.entered(ctx.signal);
        return new Promise<undefined>(() => {});
      },
      { timeoutMs: 60_000 },
    );
    const events = recordEvents(conn);
    const dom = await conn.defineDomain(withDisk('abortjob', pinnedSched));
    const starting = dom.start({ paused: true }).catch((e: unknown) => e);
    const handlerSignal = await gate.inHandler;
    await dom.abortJob();
    expect(await starting).toMatchObject({ name: 'VirtError', code: 'ABORTED' });
    expect(handlerSignal.aborted).toBe(true);
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'failed', pid: null });
    expect(events.events.map((e) => `${e.type}:${e.reason}`)).toContain('stopped:failed');
    expect(runLeftovers(root)).toEqual([]);
    expect(processesMentioning(dom.uuid)).toEqual([]);
    expect(openUnderRoot()).toEqual([]);
  });

  it('destroy during a start before QEMU exists ends the start and rolls it back', async () => {
    const gate = blockingHandler();
    internal.setHandler(
      'storage.openFile',
      async (ctx) => {
        gate.entered(ctx.signal);
        return new Promise<{ fd: number }>(() => {});
      },
      { timeoutMs: 60_000 },
    );
    const dom = await conn.defineDomain(withDisk('predestroy'));
    const starting = dom.start({ paused: true }).catch((e: unknown) => e);
    const handlerSignal = await gate.inHandler;
    expect(await dom.getJobInfo()).toMatchObject({ operation: 'start', phase: 'openDescriptors' });
    // No process yet: the domain is not active, its state still the one before the start.
    expect(await dom.getState()).toEqual({ state: 'shutoff', reason: 'unknown' });
    await dom.destroy();
    expect(handlerSignal.aborted).toBe(true);
    expect(await starting).toMatchObject({ name: 'VirtError', code: 'OPERATION_FAILED' });
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', pid: null });
    expect(runLeftovers(root)).toEqual([]);
    expect(processesMentioning(dom.uuid)).toEqual([]);
    // The domain starts normally afterwards: nothing of the aborted start stands in the way.
    // Handlers are sealed and the blocking one stays: a domain without a disk shows the driver works.
    const other = await conn.defineDomain(pausedOnly('after-destroy'));
    await other.start({ paused: true });
    expect(await other.getInfo()).toMatchObject({ state: 'paused' });
  });

  it('an AbortSignal aborts a start at each step: ABORTED, and nothing is left', async () => {
    const dom = await conn.defineDomain(withDisk('each-step'));
    for (const step of START_STEPS) {
      const controller = new AbortController();
      installFaultHook((point) => {
        if (point === `start:step:${step.name}`) controller.abort();
      });
      const err = await dom.start({ signal: controller.signal }).catch((e: unknown) => e);
      installFaultHook(undefined);
      expect(err, step.name).toMatchObject({ name: 'VirtError', code: 'ABORTED' });
      expect((err as { details: unknown }).details, step.name).toMatchObject({ operation: 'start' });
      expect(await dom.getInfo(), step.name).toMatchObject({ state: 'shutoff', pid: null });
      expect(await dom.getJobInfo(), step.name).toMatchObject({ operation: 'none' });
      expect(runLeftovers(root), step.name).toEqual([]);
      expect(processesMentioning(dom.uuid), step.name).toEqual([]);
      expect(openUnderRoot(), step.name).toEqual([]);
    }
    // An already aborted signal never begins the job.
    const err = await dom.start({ signal: AbortSignal.abort() }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ABORTED' });
    // And after all that, a start runs to the end.
    await dom.start({ paused: true });
    expect(await dom.getInfo()).toMatchObject({ state: 'paused' });
  });
});

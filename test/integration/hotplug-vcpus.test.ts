import { existsSync, readFileSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { QmpClient } from '../../src/drivers/qemu/qmp/client.js';
import { openInternal } from '../../src/internal/index.js';
import { threadGroups } from '../../src/privileged/builtins.js';
import type { Connection, Domain, DomainDefinitionInput } from '../../src/stable/index.js';
import {
  detectCgroupMode,
  placeThreads,
  releaseCgroups,
  releaseGroups,
  threadCgroup,
} from '../../src/util/cgroup.js';
import { schedGet, schedSet } from '../../src/util/libc.js';
import { openRoot, removeRoot, runLeftovers, tempRoot, tinyGuest } from '../helpers/env.js';

/*
 * vCPU hotplug on a running TCG busybox guest that onlines every CPU that appears and reports the
 * online set on its serial console (`VIRTKIT-RESOURCES cpus:0-1 mem:…;`). The new vCPU's thread is
 * placed and scheduled in phase `hotplug` before the guest onlines it, by the built-ins (checked in
 * /proc) or by handlers (which see the thread id), and a failing handler removes it again.
 * Scheduling uses SCHED_BATCH, not FIFO: the guest runs, and FIFO on a busy vCPU of a 2-core host
 * is unsafe.
 */

let root: string;
let conn: Connection;
const closers: Array<() => void> = [];

beforeEach(async () => {
  root = tempRoot();
  conn = await openRoot(root);
});
afterEach(async () => {
  for (const close of closers.splice(0)) close();
  for (const dom of await conn.listDomains({ state: 'active' })) await dom.destroy({ graceMs: 1000 });
  await conn.close();
  expect(runLeftovers(root)).toEqual([]);
  removeRoot(root);
});

afterAll(() => {
  // The handlers' parent cgroup; each domain's groups below it were released with the domain.
  for (const mount of ['/sys/fs/cgroup/cpuset', '/sys/fs/cgroup']) {
    const dir = join(mount, `virtkit-test-${process.pid}`);
    if (existsSync(dir)) rmdirSync(dir);
  }
});

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

const cpusOf = (report: string): string => /cpus:(\S+)/.exec(report)?.[1] ?? '';

function guest(name: string, extra: Partial<DomainDefinitionInput> = {}): DomainDefinitionInput {
  const probe = join(root, `${name}.qmp`);
  return tinyGuest(name, 'resources', {
    vcpu: { count: 3, current: 1 },
    cputune: {
      vcpupin: [
        { vcpu: 0, cpuset: '0' },
        { vcpu: 1, cpuset: '1' },
        { vcpu: 2, cpuset: '0-1' },
      ],
      vcpusched: [{ ids: '1-2', scheduler: 'batch', priority: 0 }],
    },
    qemuCommandline: { args: ['-qmp', `unix:${probe},server=on,wait=off`], env: [] },
    ...extra,
  });
}

async function probe(name: string): Promise<QmpClient> {
  const qmp = await QmpClient.connect(join(root, `${name}.qmp`), { timeoutMs: 10_000 });
  closers.push(() => qmp.close());
  return qmp;
}

async function qemuVcpus(qmp: QmpClient): Promise<Array<{ index: number; tid: number }>> {
  const cpus = await qmp.execute<Array<{ 'cpu-index': number; 'thread-id': number }>>('query-cpus-fast');
  return cpus.map((c) => ({ index: c['cpu-index'], tid: c['thread-id'] })).sort((a, b) => a.index - b.index);
}

describe('vCPU hotplug on a running guest', { timeout: 400_000 }, () => {
  it('setVcpus adds a vCPU the guest onlines, placed and scheduled by the built-ins; unplug is refused on TCG', async () => {
    const dom = await conn.defineDomain(guest('vcpu-builtin'));
    await dom.start();
    const qmp = await probe('vcpu-builtin');
    expect(cpusOf(await guestSees(dom, () => true))).toBe('0');
    const pid = (await dom.getInfo()).pid as number;

    await dom.setVcpus(2, { live: true });
    const vcpus = await qemuVcpus(qmp);
    expect(vcpus.map((v) => v.index)).toEqual([0, 1]);
    const tid = vcpus[1]?.tid as number;
    const mode = detectCgroupMode();
    if (!mode) throw new Error('no cgroup hierarchy to place threads in');
    expect(threadCgroup(pid, tid, mode)).toMatch(new RegExp(`/vk-${dom.uuid}/vcpu1$`));
    // The placement of the threads placed at start is untouched.
    expect(threadCgroup(pid, vcpus[0]?.tid as number, mode)).toMatch(new RegExp(`/vk-${dom.uuid}/vcpu0$`));
    expect(schedGet(tid).policy).toBe('batch');
    expect(cpusOf(await guestSees(dom, (r) => cpusOf(r) === '0-1'))).toBe('0-1');
    expect(dom.getDefinition().vcpu).toMatchObject({ count: 3, current: 2 });
    expect(dom.toXML()).toContain("<vcpu placement='static' current='2'>3</vcpu>");
    expect((await dom.getInfo()).vcpus).toBe(2);
    // The persistent definition did not change.
    expect(dom.getDefinition({ inactive: true }).vcpu.current).toBe(1);

    await dom.setVcpus(3, { live: true });
    await guestSees(dom, (r) => cpusOf(r) === '0-2');
    expect((await qemuVcpus(qmp)).map((v) => v.index)).toEqual([0, 1, 2]);

    // TCG: QEMU 7.2 crashes on a vCPU hotplug after an unplug, so the driver refuses the unplug.
    await expect(dom.setVcpus(1, { live: true })).rejects.toMatchObject({ code: 'CONFIG_UNSUPPORTED' });
    expect((await qemuVcpus(qmp)).map((v) => v.index)).toEqual([0, 1, 2]);
    expect(dom.getDefinition().vcpu.current).toBe(undefined);
  });

  it('handlers see phase hotplug and the new thread; a failing one leaves the guest as it was', async () => {
    const internal = openInternal(conn, { apiVersion: '1.0' });
    const calls: Array<{ op: string; phase: string; domain: unknown; threads: unknown }> = [];
    let fail = true;
    internal.setHandler('cgroup.placeThreads', (ctx, args) => {
      calls.push({ op: 'cgroup.placeThreads', phase: ctx.phase, domain: ctx.domain, threads: args.threads });
      const { placements } = placeThreads({
        parent: `virtkit-test-${process.pid}`,
        name: `vk-${ctx.domain.uuid}`,
        pid: args.pid,
        groups: threadGroups(args, 'rest'),
      });
      return { placements };
    });
    const released: Array<{ phase: string; placements: Array<{ tid: number; cgroup: string }> }> = [];
    const dirOf = (cgroup: string): string =>
      join(detectCgroupMode() === 'v1-cpuset' ? '/sys/fs/cgroup/cpuset' : '/sys/fs/cgroup', cgroup);
    internal.setHandler('cgroup.release', (ctx, args) => {
      released.push({ phase: ctx.phase, placements: args.placements });
      const domain = { parent: `virtkit-test-${process.pid}`, name: `vk-${ctx.domain.uuid}` };
      // hotplug: vCPUs were taken away from a running QEMU; only their groups go.
      if (ctx.phase === 'hotplug') {
        releaseGroups({
          ...domain,
          groups: args.placements.map((p) => p.cgroup.split('/').at(-1) as string),
        });
      } else {
        releaseCgroups(domain);
      }
    });
    internal.setHandler('thread.setScheduler', (ctx, args) => {
      calls.push({ op: 'thread.setScheduler', phase: ctx.phase, domain: ctx.domain, threads: args.threads });
      if (fail && ctx.phase === 'hotplug') {
        // The placement made just before is real: the new vCPU's group holds its thread.
        const tid = args.threads[0]?.tid as number;
        placedBeforeFailure.push({
          tid,
          threads: readFileSync(join(groupDir(ctx.domain.uuid, 1), threadsFile), 'utf8'),
        });
        throw new Error('no scheduling for you');
      }
      for (const t of args.threads) schedSet(t.tid, t.policy, t.priority);
    });
    const placedBeforeFailure: Array<{ tid: number; threads: string }> = [];
    const threadsFile = detectCgroupMode() === 'v1-cpuset' ? 'tasks' : 'cgroup.threads';
    const groupDir = (uuid: string, vcpu: number): string =>
      dirOf(`/virtkit-test-${process.pid}/vk-${uuid}/vcpu${vcpu}`);
    const dom = await conn.defineDomain(guest('vcpu-handlers'));
    await dom.start();
    const qmp = await probe('vcpu-handlers');
    await guestSees(dom, (r) => cpusOf(r) === '0');
    const before = await qemuVcpus(qmp);
    calls.length = 0;
    released.length = 0;

    await expect(dom.setVcpus(2, { live: true })).rejects.toMatchObject({
      code: 'HANDLER_FAILED',
      details: expect.objectContaining({ operation: 'thread.setScheduler', phase: 'hotplug' }),
    });
    expect(await qemuVcpus(qmp)).toEqual(before);
    expect(dom.getDefinition().vcpu.current).toBe(1);
    const hot = calls.filter((c) => c.phase === 'hotplug');
    expect(hot.map((c) => c.op)).toEqual(['cgroup.placeThreads', 'thread.setScheduler']);
    // The removed vCPU's placement was given back in phase hotplug, and only it: its group is gone
    // from the cgroup tree, vCPU 0's group still holds vCPU 0's thread.
    const removed = placedBeforeFailure[0]?.tid as number;
    expect(placedBeforeFailure[0]?.threads.split('\n')).toContain(String(removed));
    expect(released).toEqual([
      {
        phase: 'hotplug',
        placements: [{ tid: removed, cgroup: expect.stringMatching(new RegExp(`/vk-${dom.uuid}/vcpu1$`)) }],
      },
    ]);
    expect(existsSync(groupDir(dom.uuid, 1))).toBe(false);
    expect(readFileSync(join(groupDir(dom.uuid, 0), threadsFile), 'utf8').split('\n')).toContain(
      String(before[0]?.tid),
    );

    // The rollback unplugged the vCPU: on TCG a further hotplug would crash QEMU, so it is refused.
    await expect(dom.setVcpus(2, { live: true })).rejects.toMatchObject({ code: 'CONFIG_UNSUPPORTED' });
    expect(await qemuVcpus(qmp)).toEqual(before);
    await guestSees(dom, (r) => cpusOf(r) === '0');
    await dom.destroy();

    fail = false;
    const ok = await conn.defineDomain(guest('vcpu-handlers-ok'));
    await ok.start();
    const okQmp = await probe('vcpu-handlers-ok');
    await guestSees(ok, (r) => cpusOf(r) === '0');
    calls.length = 0;
    await ok.setVcpus(2, { live: true });
    const added = (await qemuVcpus(okQmp)).find((v) => v.index === 1);
    expect(calls).toEqual([
      {
        op: 'cgroup.placeThreads',
        phase: 'hotplug',
        domain: expect.objectContaining({ uuid: ok.uuid, name: 'vcpu-handlers-ok' }),
        threads: [{ tid: added?.tid, role: 'vcpu', index: 1 }],
      },
      {
        op: 'thread.setScheduler',
        phase: 'hotplug',
        domain: expect.objectContaining({ uuid: ok.uuid }),
        threads: [{ tid: added?.tid, role: 'vcpu', index: 1, policy: 'batch', priority: 0 }],
      },
    ]);
    expect(schedGet(added?.tid as number).policy).toBe('batch');
    await guestSees(ok, (r) => cpusOf(r) === '0-1');
    expect((await ok.getInfo()).taints).toContain('internal-handler');
  });

  it('a rolled-back vCPU placed by the built-in gives its cgroup back in phase hotplug; the others stay', async () => {
    const mode = detectCgroupMode();
    if (!mode) throw new Error('no cgroup hierarchy to place threads in');
    const mount = mode === 'v1-cpuset' ? '/sys/fs/cgroup/cpuset' : '/sys/fs/cgroup';
    const threadsFile = mode === 'v1-cpuset' ? 'tasks' : 'cgroup.threads';
    const internal = openInternal(conn, { apiVersion: '1.0' });
    const seen: Array<{ tid: number; cgroup: string | undefined; threads: string }> = [];
    let pid = 0;
    // Only scheduling has a handler, and it fails: placement (and its release) are the built-ins'.
    internal.setHandler('thread.setScheduler', (ctx, args) => {
      if (ctx.phase !== 'hotplug') return;
      const tid = args.threads[0]?.tid as number;
      const cgroup = threadCgroup(pid, tid, mode);
      seen.push({
        tid,
        cgroup,
        threads: readFileSync(join(mount, cgroup ?? '/nonexistent', threadsFile), 'utf8'),
      });
      throw new Error('no scheduling for you');
    });
    const dom = await conn.defineDomain(guest('vcpu-builtin-release'));
    await dom.start();
    const qmp = await probe('vcpu-builtin-release');
    await guestSees(dom, (r) => cpusOf(r) === '0');
    pid = (await dom.getInfo()).pid as number;
    const before = await qemuVcpus(qmp);
    const group0 = threadCgroup(pid, before[0]?.tid as number, mode) as string;
    expect(group0).toMatch(new RegExp(`/vk-${dom.uuid}/vcpu0$`));

    await expect(dom.setVcpus(2, { live: true })).rejects.toMatchObject({ code: 'HANDLER_FAILED' });
    // The domain's log says what the rollback did, should an assertion below fail.
    const log = readFileSync(join(root, 'log', `${dom.name}.log`), 'utf8');
    expect(await qemuVcpus(qmp), log).toEqual(before);
    // The built-in had placed the new thread in its own group before scheduling failed…
    expect(seen, log).toHaveLength(1);
    const placed = seen[0] as { tid: number; cgroup: string; threads: string };
    expect(placed.cgroup).toMatch(new RegExp(`/vk-${dom.uuid}/vcpu1$`));
    expect(placed.threads.split('\n')).toContain(String(placed.tid));
    // …and the rollback removed that group, and only it.
    expect(existsSync(join(mount, placed.cgroup)), log).toBe(false);
    expect(existsSync(join(mount, group0)), log).toBe(true);
    expect(threadCgroup(pid, before[0]?.tid as number, mode)).toBe(group0);
    expect(log).toMatch(/internal: cgroup\.release phase=hotplug via=built-in [\d.]+ms ok/);
    await guestSees(dom, (r) => cpusOf(r) === '0');
  });

  it('bad counts are refused with typed errors; config changes only the persistent definition', async () => {
    const dom = await conn.defineDomain(guest('vcpu-config', { cputune: undefined }));
    await expect(dom.setVcpus(4, { config: true })).rejects.toMatchObject({ code: 'OPERATION_INVALID' });
    await expect(dom.setVcpus(0, { config: true })).rejects.toMatchObject({ code: 'OPERATION_INVALID' });
    await expect(dom.setVcpus(2, { live: true })).rejects.toMatchObject({ code: 'OPERATION_INVALID' });
    await dom.setVcpus(2, { config: true });
    expect(dom.getDefinition().vcpu).toMatchObject({ count: 3, current: 2 });
    await dom.start();
    await guestSees(dom, (r) => cpusOf(r) === '0-1');
    await dom.setVcpus(3, { config: true });
    expect(dom.getDefinition().vcpu.current).toBe(2);
    expect(dom.getDefinition({ inactive: true }).vcpu).toEqual({ count: 3 });
    await expect(dom.setVcpus(4, { live: true })).rejects.toMatchObject({ code: 'OPERATION_INVALID' });
  });
});

import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Connection, Domain } from '../../src/stable/index.js';
import { alive, openRoot, pausedOnly, removeRoot, runLeftovers, tempRoot } from '../helpers/env.js';

/*
 * Many domains at once: the start, destroy and reconnect paths run concurrently for all of them
 * (status files written off the event loop, process groups signalled without scanning /proc), and
 * every domain must still come out exactly right. Speed is measured in bench/scale.ts, not here.
 */

const N = 10;
const roots: string[] = [];
const conns: Connection[] = [];
afterEach(async () => {
  for (const c of conns.splice(0)) {
    if (c.closed) continue;
    for (const d of await c.listDomains({ state: 'active' })) await d.destroy().catch(() => undefined);
    await c.close();
  }
  for (const r of roots.splice(0)) removeRoot(r);
});

async function defineMany(conn: Connection, prefix: string): Promise<Domain[]> {
  const doms: Domain[] = [];
  for (let i = 0; i < N; i++)
    doms.push(await conn.defineDomain(pausedOnly(`${prefix}-${i}`, { vcpu: { count: 2 } })));
  return doms;
}

/** The tids of a process, from /proc. */
function tasksOf(pid: number): number[] {
  return readdirSync(`/proc/${pid}/task`).map(Number);
}

describe('many domains at once', () => {
  it(`starts ${N} domains concurrently: each runs its own QEMU, recorded durably with its own verified threads`, async () => {
    const root = tempRoot();
    roots.push(root);
    const conn = await openRoot(root);
    conns.push(conn);
    const doms = await defineMany(conn, 'burst');

    await Promise.all(doms.map((d) => d.start({ paused: true })));

    const infos = await Promise.all(doms.map((d) => d.getInfo()));
    const pids = infos.map((i) => i.pid as number);
    expect(infos.every((i) => i.state === 'paused' && i.reason === 'user')).toBe(true);
    expect(new Set(pids).size).toBe(N);
    expect(new Set(infos.map((i) => i.id)).size).toBe(N);
    for (const [i, d] of doms.entries()) {
      const pid = pids[i] as number;
      expect(alive(pid)).toBe(true);
      const status = JSON.parse(readFileSync(join(root, 'run', `${d.name}.json`), 'utf8'));
      expect(status).toMatchObject({ phase: 'running', pid, id: infos[i]?.id });
      // Each domain's status names its own vCPU threads, and they are threads of its own QEMU.
      expect(status.threads.vcpus).toHaveLength(2);
      const tasks = tasksOf(pid);
      for (const t of status.threads.vcpus) expect(tasks).toContain(t.tid);
    }
    // No temporary file of the atomic writes is left behind.
    expect(readdirSync(join(root, 'run')).filter((f) => f.includes('.tmp-'))).toEqual([]);

    await Promise.all(doms.map((d) => d.destroy()));
    for (const pid of pids) expect(alive(pid)).toBe(false);
    for (const d of doms) expect(await d.getInfo()).toMatchObject({ state: 'shutoff', reason: 'destroyed' });
    expect(runLeftovers(root)).toEqual([]);
  });

  it(`a new connect() adopts all ${N} running domains, each with its own pid, and can destroy them all at once`, async () => {
    const root = tempRoot();
    roots.push(root);
    const first = await openRoot(root);
    conns.push(first);
    const doms = await defineMany(first, 'adopt');
    await Promise.all(doms.map((d) => d.start({ paused: true })));
    // One of them running, so adoption reads each QEMU's own state rather than assuming one.
    await doms[0]?.resume();
    const before = new Map(
      await Promise.all(doms.map(async (d) => [d.name, (await d.getInfo()).pid as number] as const)),
    );
    await first.close();
    for (const pid of before.values()) expect(alive(pid)).toBe(true);

    const second = await openRoot(root);
    conns.push(second);
    const active = await second.listDomains({ state: 'active' });
    expect(active.map((d) => d.name).sort()).toEqual([...before.keys()].sort());
    for (const d of active) {
      const info = await d.getInfo();
      expect(info.pid).toBe(before.get(d.name));
      expect(info.state).toBe(d.name === 'adopt-0' ? 'running' : 'paused');
    }

    await Promise.all(active.map((d) => d.destroy()));
    for (const pid of before.values()) expect(alive(pid)).toBe(false);
    for (const d of active) expect((await d.getInfo()).state).toBe('shutoff');
    expect(runLeftovers(root)).toEqual([]);
  });
});

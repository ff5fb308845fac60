/*
 * What a killed driver leaves, removed by the next one (issue 11, defects 8 and 9): atomic-write
 * temporaries in etc/domains and run, monitor sockets no running domain owns, and the driver's
 * own cgroups of a domain that is not running (a release that failed is retried by every driver).
 */
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { closeFd, listenUnixSocket } from '../../src/util/libc.js';
import { openRoot, pausedOnly, removeRoot, tempRoot } from '../helpers/env.js';
import { cgroupLeftovers } from '../helpers/hostile.js';

const roots: string[] = [];
afterEach(() => {
  for (const r of roots.splice(0)) removeRoot(r);
});

/** A UNIX socket file left behind, as by a listener that was killed (a raw close never unlinks). */
function staleSocket(path: string): void {
  closeFd(listenUnixSocket(path));
}

describe('a new driver removes what a killed one left', () => {
  it('atomic-write temporaries and unowned monitor sockets go; a running domain keeps its own', async () => {
    const root = tempRoot('vk-sweep-');
    roots.push(root);
    const conn = await openRoot(root);
    const dom = await conn.defineDomain(pausedOnly('kept'));
    await dom.start({ paused: true });
    await conn.close();

    const domains = join(root, 'etc', 'domains');
    const run = join(root, 'run');
    writeFileSync(join(domains, 'lost.json.tmp-999999-0a1b2c3d4e5f'), '{');
    writeFileSync(join(run, 'lost.json.tmp-999999-abcdef012345'), '{');
    staleSocket(join(run, '6f1c3a52-0000-4000-8000-000000000001.qmp'));
    writeFileSync(join(run, 'unrelated.txt'), 'not ours to remove');

    const again = await openRoot(root);
    expect(readdirSync(domains)).toEqual(['kept.json']);
    expect(readdirSync(run).sort()).toEqual(
      ['driver.lock', 'kept.json', `${dom.uuid}.qmp`, 'unrelated.txt'].sort(),
    );
    const adopted = await again.lookupDomain('kept');
    expect((await adopted.getInfo()).state).toBe('paused');
    await adopted.destroy();
    await again.close();
  });

  it("the driver's own cgroups of a stopped domain are released", async () => {
    const root = tempRoot('vk-sweep-cg-');
    roots.push(root);
    const conn = await openRoot(root);
    const dom = await conn.defineDomain(pausedOnly('stopped'));
    await conn.close();
    // As a release that gave up leaves it: the domain directory and a group below it, empty.
    const dir = `/sys/fs/cgroup/cpuset/virtkit/vk-${dom.uuid}`;
    mkdirSync(`${dir}/vcpu0`, { recursive: true });
    expect(cgroupLeftovers(dom.uuid)).toEqual([dir]);

    const again = await openRoot(root);
    expect(cgroupLeftovers(dom.uuid)).toEqual([]);
    await again.close();
  });
});

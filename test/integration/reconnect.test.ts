import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { killChild, runChild } from '../helpers/child.js';
import {
  alive,
  openRoot,
  pausedOnly,
  recordEvents,
  removeRoot,
  runLeftovers,
  tempRoot,
} from '../helpers/env.js';

const CHILD = join(__dirname, '..', 'fixtures', 'driver-child.ts');
const roots: string[] = [];
afterEach(() => {
  for (const r of roots.splice(0)) removeRoot(r);
});

describe('QEMU outlives the management process', () => {
  it('a new process reconnects to a VM whose driver was SIGKILLed, and destroys it', async () => {
    const root = tempRoot();
    roots.push(root);
    const { child, value: qemuPid } = await runChild(CHILD, [root, 'survivor']);
    await killChild(child);
    expect(alive(qemuPid)).toBe(true);

    const conn = await openRoot(root);
    const dom = await conn.lookupDomain('survivor');
    const info = await dom.getInfo();
    expect(info).toMatchObject({ state: 'paused', pid: qemuPid });
    await dom.resume();
    expect((await dom.getInfo()).state).toBe('running');
    await dom.destroy();
    expect(alive(qemuPid)).toBe(false);
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'destroyed' });
    expect(runLeftovers(root)).toEqual([]);
    await conn.close();
  });

  it('follows an adopted VM that dies later: stopped, crashed', async () => {
    const root = tempRoot();
    roots.push(root);
    const { child, value: qemuPid } = await runChild(CHILD, [root, 'adopted']);
    await killChild(child);
    const conn = await openRoot(root);
    const rec = recordEvents(conn);
    process.kill(qemuPid, 'SIGKILL');
    expect((await rec.next((e) => e.type === 'stopped')).reason).toBe('crashed');
    expect(runLeftovers(root)).toEqual([]);
    await conn.close();
  });

  it('marks a VM that died while no driver ran as crashed, with an event, and cleans its leftovers', async () => {
    const root = tempRoot();
    roots.push(root);
    const { child, value: qemuPid } = await runChild(CHILD, [root, 'lost']);
    await killChild(child);
    process.kill(qemuPid, 'SIGKILL');
    while (alive(qemuPid)) await new Promise((r) => setTimeout(r, 10));

    const conn = await openRoot(root);
    const rec = recordEvents(conn);
    const stopped = await rec.next((e) => e.type === 'stopped');
    expect(stopped).toMatchObject({ reason: 'crashed', domain: { name: 'lost' } });
    expect(await (await conn.lookupDomain('lost')).getInfo()).toMatchObject({
      state: 'shutoff',
      reason: 'crashed',
    });
    expect(runLeftovers(root)).toEqual([]);
    await conn.close();
  });

  it('adopts a VM whose recorded live definition no longer validates, using the persistent one', async () => {
    const root = tempRoot();
    roots.push(root);
    const conn = await openRoot(root);
    const dom = await conn.defineDomain(pausedOnly('upgraded'));
    await dom.start({ paused: true });
    const { pid } = await dom.getInfo();
    await conn.close();
    // As if written by a virtkit whose definitions had a field this one does not know.
    const statusPath = join(root, 'run', 'upgraded.json');
    const status = JSON.parse(readFileSync(statusPath, 'utf8'));
    status.live.futureField = true;
    writeFileSync(statusPath, JSON.stringify(status));

    const conn2 = await openRoot(root);
    const again = await conn2.lookupDomain('upgraded');
    expect(await again.getInfo()).toMatchObject({ state: 'paused', pid });
    expect(again.getDefinition().name).toBe('upgraded');
    await again.destroy();
    expect(alive(pid as number)).toBe(false);
    await conn2.close();
  });

  it('a process that adopted a VM and closed its connection exits on its own; the VM runs on', async () => {
    const root = tempRoot();
    roots.push(root);
    const { child, value: qemuPid } = await runChild(CHILD, [root, 'lingering']);
    await killChild(child);
    const script = `const { connect } = await import(${JSON.stringify(join(__dirname, '..', '..', 'src', 'index.ts'))});
      const conn = await connect('qemu:///embed?root=${root}');
      const dom = await conn.lookupDomain('lingering');
      if ((await dom.getInfo()).pid !== ${qemuPid}) process.exit(3);
      await conn.close();`;
    const res = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      timeout: 20_000,
      encoding: 'utf8',
    });
    // Killed by the timeout (a monitor poll keeping the loop alive) would leave status null.
    expect({ status: res.status, stderr: res.stderr }).toEqual({ status: 0, stderr: '' });
    expect(alive(qemuPid)).toBe(true);
    process.kill(qemuPid, 'SIGKILL');
  });

  it('never adopts a process whose start time differs (a reused pid)', async () => {
    const root = tempRoot();
    roots.push(root);
    const conn = await openRoot(root);
    const dom = await conn.defineDomain(pausedOnly('reused'));
    await dom.start({ paused: true });
    const { pid } = await dom.getInfo();
    await conn.close();
    // Forge the status as if the pid had been reused by another process started later.
    const statusPath = join(root, 'run', 'reused.json');
    const status = JSON.parse(readFileSync(statusPath, 'utf8'));
    status.startTime = String(BigInt(status.startTime) + 1n);
    writeFileSync(statusPath, JSON.stringify(status));

    const conn2 = await openRoot(root);
    const rec = recordEvents(conn2);
    expect((await rec.next((e) => e.type === 'stopped')).reason).toBe('crashed');
    expect(alive(pid as number)).toBe(true);
    process.kill(pid as number, 'SIGKILL');
    await conn2.close();
  });
});

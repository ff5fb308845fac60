import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { killChild, runChild } from '../helpers/child.js';
import { useCliRoots, virtkit } from '../helpers/cli.js';
import { alive, tempRoot, tinyGuest } from '../helpers/env.js';

/*
 * Why a domain shut off, told by a later `virtkit` process (a new driver of the root) as virsh
 * tells it within one libvirtd lifetime: `domstate --reason` after `destroy` says `destroyed`.
 */

const HOLDER = join(__dirname, '..', '..', 'test', 'fixtures', 'control-holder.ts');
const XML = "<domain type='qemu'><name>vm</name><memory unit='MiB'>64</memory><vcpu>1</vcpu></domain>";

const { roots, holders } = useCliRoots();

function setUp(): { root: string; run: (...args: string[]) => ReturnType<typeof virtkit> } {
  const root = tempRoot();
  roots.push(root);
  return { root, run: (...args) => virtkit([...args, '--root', root]) };
}

/** Polls `check` until it holds; the guest and the machine decide how long that takes. */
async function until(what: string, check: () => boolean, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const records = (root: string): string[] =>
  existsSync(join(root, 'lib', 'shutoff')) ? readdirSync(join(root, 'lib', 'shutoff')) : [];

describe('the shut-off reason, in a later virtkit process', () => {
  it('is kept for destroyed, crashed and failed domains, ignored when damaged, and gone with the domain', async () => {
    const { root, run } = setUp();
    const file = join(root, 'vm.xml');
    writeFileSync(file, XML);
    expect(run('define', file).code).toBe(0);
    expect(run('domstate', 'vm', '--reason')).toEqual({ code: 0, out: 'shut off (unknown)\n\n', err: '' });

    expect(run('start', 'vm', '--paused').code).toBe(0);
    expect(run('destroy', 'vm').code).toBe(0);
    expect(run('domstate', 'vm', '--reason')).toEqual({ code: 0, out: 'shut off (destroyed)\n\n', err: '' });
    expect(JSON.parse(run('domstate', 'vm', '--json').out)).toEqual({
      state: 'shutoff',
      reason: 'destroyed',
    });
    expect(JSON.parse(run('list', '--all', '--json').out)).toMatchObject([
      { name: 'vm', state: 'shutoff', reason: 'destroyed' },
    ]);

    // QEMU killed while no driver watched: the next driver finds it gone (crashed), and the one
    // after it still says so.
    expect(run('start', 'vm', '--paused').code).toBe(0);
    const { pid } = JSON.parse(run('dominfo', 'vm', '--json').out) as { pid: number };
    process.kill(pid, 'SIGKILL');
    await until(`the exit of QEMU pid ${pid}`, () => !alive(pid));
    expect(run('domstate', 'vm', '--reason').out).toBe('shut off (crashed)\n\n');
    expect(run('domstate', 'vm', '--reason').out).toBe('shut off (crashed)\n\n');

    // A damaged record, or one of another domain of that name, says nothing.
    const record = join(root, 'lib', 'shutoff', 'vm.json');
    expect(JSON.parse(readFileSync(record, 'utf8'))).toMatchObject({ state: 'shutoff', reason: 'crashed' });
    writeFileSync(record, '{"version":1,"uuid":"');
    expect(run('domstate', 'vm', '--reason')).toEqual({ code: 0, out: 'shut off (unknown)\n\n', err: '' });
    writeFileSync(
      record,
      JSON.stringify({
        version: 1,
        uuid: '00000000-0000-4000-8000-000000000000',
        state: 'shutoff',
        reason: 'destroyed',
      }),
    );
    expect(run('domstate', 'vm', '--reason').out).toBe('shut off (unknown)\n\n');

    // A start that fails (its disk is missing).
    const uuid = run('domuuid', 'vm').out.trim();
    writeFileSync(
      file,
      XML.replace('</name>', `</name><uuid>${uuid}</uuid>`).replace(
        '</vcpu>',
        `</vcpu><devices><disk type='file' device='disk'><source file='${join(root, 'missing.img')}'/><target dev='vda' bus='virtio'/></disk></devices>`,
      ),
    );
    expect(run('define', file).code).toBe(0);
    expect(run('start', 'vm').code).toBe(1);
    expect(run('domstate', 'vm', '--reason').out).toBe('shut off (failed)\n\n');

    expect(run('undefine', 'vm').code).toBe(0);
    expect(records(root)).toEqual([]);

    // A transient domain leaves nothing.
    writeFileSync(file, XML);
    expect(run('create', file, '--paused').code).toBe(0);
    expect(run('destroy', 'vm').code).toBe(0);
    expect(JSON.parse(run('list', '--all', '--json').out)).toEqual([]);
    expect(records(root)).toEqual([]);
  }, 600_000);

  it('keeps a guest power-off seen by an application that held the root, after it is gone', async () => {
    const { root, run } = setUp();
    const holder = (await runChild(HOLDER, [root])).child;
    holders.push(holder);
    const file = join(root, 'g.json');
    writeFileSync(file, JSON.stringify(tinyGuest('g', 'hello')));
    expect(run('define', file).code).toBe(0);
    expect(run('start', 'g').code).toBe(0);
    // The guest powers itself off once booted.
    await until('the guest power-off', () => run('domstate', 'g').out === 'shut off\n\n');
    expect(run('domstate', 'g', '--reason').out).toBe('shut off (shutdown)\n\n');
    // Killed, not closed: the reason was kept when the domain shut off.
    await killChild(holder);
    expect(run('domstate', 'g', '--reason')).toEqual({ code: 0, out: 'shut off (shutdown)\n\n', err: '' });
    expect(run('version', '--json').out).toMatch(/"through": "local"/);
  }, 600_000);
});

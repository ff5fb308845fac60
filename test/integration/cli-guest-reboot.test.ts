import type { ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { killChild, runChild } from '../helpers/child.js';
import { useCliRoots, virtkit, virtkitBackground } from '../helpers/cli.js';
import { alive, GUEST_MARKER, tempRoot, tinyGuest } from '../helpers/env.js';

/*
 * A guest that reboots itself (`reboot -f` from its /init, every boot), watched with
 * `virtkit event`: virsh's reboot event line, and the domain keeps running; with
 * on_reboot='destroy' the reboot ends the domain instead, shut off with reason `shutdown`.
 */

const HOLDER = join(__dirname, '..', '..', 'test', 'fixtures', 'control-holder.ts');
const REBOOT_LINE = "event 'reboot' for domain 'g'";

const { roots, holders } = useCliRoots();
const watchers: ChildProcess[] = [];
// Registered after useCliRoots, so it runs before its clean-up (vitest runs after-hooks as a stack).
afterEach(async () => {
  for (const w of watchers.splice(0)) await killChild(w);
});

/** Polls `check` until it holds; the guest and the machine decide how long that takes. */
async function until(what: string, check: () => boolean, timeoutMs = 180_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** How often the guest's /init has run: once per boot. */
function boots(root: string): number {
  try {
    return readFileSync(join(root, 'log', 'g.console.log'), 'utf8').split(GUEST_MARKER).length - 1;
  } catch {
    return 0;
  }
}

const count = (text: string, line: string): number => text.split('\n').filter((l) => l === line).length;

describe('a guest that reboots itself, watched with virtkit event', () => {
  it('prints virsh’s reboot event line for every reboot, and the domain keeps running (the command holds the root)', async () => {
    const root = tempRoot();
    roots.push(root);
    const run = (...args: string[]) => virtkit([...args, '--root', root]);
    const file = join(root, 'g.json');
    writeFileSync(file, JSON.stringify(tinyGuest('g', 'reboot')));
    expect(run('define', file).code).toBe(0);
    expect(run('start', 'g')).toEqual({ code: 0, out: "Domain 'g' started\n\n", err: '' });
    const { pid } = JSON.parse(run('dominfo', 'g', '--json').out) as { pid: number };

    // The watcher owns the root (a new driver adopting the running QEMU) while it runs.
    const watcher = virtkitBackground(['event', '--loop', '--event', 'reboot', '--root', root]);
    watchers.push(watcher.child);
    await until('two reboot events', () => count(watcher.out(), REBOOT_LINE) >= 2);
    // Each reboot is the guest starting over: its /init ran again.
    await until('the guest booting again', () => boots(root) >= 2);
    watcher.child.kill('SIGINT');
    expect(await watcher.exited).toBe(0);
    const lines = watcher.out().trimEnd().split('\n');
    const summary = lines.pop();
    // Nothing but reboot events (no lifecycle event: the domain never stopped).
    expect(lines.every((l) => l === REBOOT_LINE)).toBe(true);
    expect(summary).toBe(`events received: ${lines.length}`);
    expect(watcher.out().endsWith('\n\n')).toBe(true);
    expect(watcher.err()).toBe('');

    expect(run('domstate', 'g', '--reason')).toEqual({ code: 0, out: 'running (booted)\n\n', err: '' });
    expect(JSON.parse(run('dominfo', 'g', '--json').out)).toMatchObject({ pid, state: 'running' });
    expect(alive(pid)).toBe(true);
    expect(run('destroy', 'g').code).toBe(0);
  }, 600_000);

  it("with on_reboot='destroy', the reboot shuts the domain off (shutdown), without a reboot event (an application holds the root)", async () => {
    const root = tempRoot();
    roots.push(root);
    const holder = (await runChild(HOLDER, [root])).child;
    holders.push(holder);
    const run = (...args: string[]) => virtkit([...args, '--root', root]);
    const file = join(root, 'g.json');
    writeFileSync(file, JSON.stringify({ ...tinyGuest('g', 'reboot'), onReboot: 'destroy' }));
    expect(run('define', file).code).toBe(0);
    expect(run('dumpxml', 'g').out).toContain('<on_reboot>destroy</on_reboot>');
    // Defined again below: the same domain, so with its uuid.
    const uuid = run('domuuid', 'g').out.trim();
    writeFileSync(file, JSON.stringify({ ...tinyGuest('g', 'reboot'), onReboot: 'destroy', uuid }));

    const watcher = virtkitBackground(['event', '--loop', '--domain', 'g', '--root', root]);
    watchers.push(watcher.child);
    // Subscribed once an event of ours reaches it: define again until one does.
    const updated = "event 'lifecycle' for domain 'g': Defined Updated";
    await until('the watcher subscribed', () => {
      if (count(watcher.out(), updated) > 0) return true;
      expect(run('define', file).code).toBe(0);
      return false;
    });

    expect(run('start', 'g').code).toBe(0);
    const stopped = "event 'lifecycle' for domain 'g': Stopped Shutdown";
    await until('the domain stopping', () => count(watcher.out(), stopped) === 1);
    expect(boots(root)).toBe(1);
    expect(run('domstate', 'g', '--reason')).toEqual({ code: 0, out: 'shut off (shutdown)\n\n', err: '' });
    watcher.child.kill('SIGINT');
    expect(await watcher.exited).toBe(0);
    const lines = watcher.out().trimEnd().split('\n');
    expect(lines.slice(-3)).toEqual([
      "event 'lifecycle' for domain 'g': Started Booted",
      stopped,
      `events received: ${lines.length - 1}`,
    ]);
    expect(count(watcher.out(), REBOOT_LINE)).toBe(0);
  }, 600_000);
});

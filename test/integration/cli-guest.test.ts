import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runChild } from '../helpers/child.js';
import { useCliRoots, virtkit } from '../helpers/cli.js';
import { alive, tempRoot, tinyGuest } from '../helpers/env.js';

/*
 * The commands that need a guest that runs code (a TCG busybox guest): what the guest sees of
 * `reset` and `reboot`, read back from its serial console.
 */

const HOLDER = join(__dirname, '..', '..', 'test', 'fixtures', 'control-holder.ts');
const CLI = join(__dirname, '..', '..', 'src', 'cli.ts');

/**
 * The command run on a pseudo-terminal, as a user at a terminal runs it: util-linux's `script`
 * gives it one (node has no pty module); what is written goes to the terminal, `out()` is what the
 * terminal showed.
 */
function onTerminal(args: readonly string[]) {
  const quote = (a: string) => `'${a.replaceAll("'", "'\\''")}'`;
  const command = [process.execPath, '--import', 'tsx', CLI, ...args].map(quote).join(' ');
  const child = spawn('script', ['-qfec', command, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const waitFor = async (text: string, timeoutMs = 120_000): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    while (!out.includes(text)) {
      if (Date.now() > deadline)
        throw new Error(`the terminal never showed ${text}; it shows: ${out.slice(-600)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  return { child, exited, out: () => out, type: (text: string) => child.stdin.write(text), waitFor };
}

const { roots, holders } = useCliRoots();

type Mode = 'the command holds the root' | 'an application holds the root';

async function setUp(
  mode: Mode,
): Promise<{ root: string; run: (...args: string[]) => ReturnType<typeof virtkit> }> {
  const root = tempRoot();
  roots.push(root);
  if (mode === 'an application holds the root') {
    const { child } = await runChild(HOLDER, [root]);
    holders.push(child);
  }
  return { root, run: (...args) => virtkit([...args, '--root', root]) };
}

/** How often `text` appears on the guest's serial console. */
function seen(root: string, text: string): number {
  let content = '';
  try {
    content = readFileSync(join(root, 'log', 'g.console.log'), 'utf8');
  } catch {}
  return content.split(text).length - 1;
}

/** Waits until the console shows `text` `times` times. */
async function waitFor(root: string, text: string, times: number, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (seen(root, text) < times) {
    if (Date.now() > deadline) {
      const tail = readFileSync(join(root, 'log', 'g.console.log'), 'utf8').slice(-600);
      throw new Error(`the console never showed ${text} ${times} times; it ends with: ${tail}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe.each<Mode>(['the command holds the root', 'an application holds the root'])(
  'the virtkit command with a running guest, when %s',
  (mode) => {
    it('resets the guest (it boots again without warning) and reboots it (it sees the power button, then boots again), in one QEMU process', async () => {
      const { root, run } = await setUp(mode);
      const file = join(root, 'g.json');
      writeFileSync(file, JSON.stringify(tinyGuest('g', 'wait')));
      expect(run('define', file).code).toBe(0);
      expect(run('start', 'g')).toEqual({ code: 0, out: "Domain 'g' started\n\n", err: '' });
      const { pid, id } = JSON.parse(run('dominfo', 'g', '--json').out) as { pid: number; id: number };
      await waitFor(root, 'VIRTKIT-GUEST-WAITING', 1);

      expect(run('reset', 'g')).toEqual({ code: 0, out: "Domain 'g' was reset\n\n", err: '' });
      await waitFor(root, 'VIRTKIT-GUEST-WAITING', 2);
      expect(seen(root, 'VIRTKIT-GUEST-HELLO')).toBe(2);
      expect(seen(root, 'VIRTKIT-GUEST-POWERBUTTON')).toBe(0);
      expect(JSON.parse(run('dominfo', 'g', '--json').out)).toMatchObject({ pid, id, state: 'running' });

      expect(run('reboot', 'g')).toEqual({ code: 0, out: "Domain 'g' is being rebooted\n\n", err: '' });
      await waitFor(root, 'VIRTKIT-GUEST-WAITING', 3);
      // The guest saw the button and powered off; QEMU did not exit but reset it.
      expect(seen(root, 'VIRTKIT-GUEST-POWERBUTTON')).toBe(1);
      expect(seen(root, 'VIRTKIT-GUEST-HELLO')).toBe(3);
      expect(alive(pid)).toBe(true);
      // The pause between the power-off and the reset is no suspend: the domain stayed running.
      expect(JSON.parse(run('dominfo', 'g', '--json').out)).toMatchObject({
        pid,
        id,
        state: 'running',
        // A command holding the root itself keeps the reason the status file recorded, as libvirt.
        reason: 'booted',
      });

      // After the reboot a guest power-off ends QEMU again, as the definition says.
      expect(run('shutdown', 'g', '--timeout', '120')).toMatchObject({ code: 0 });
      expect(seen(root, 'VIRTKIT-GUEST-POWERBUTTON')).toBe(2);
      expect(alive(pid)).toBe(false);
      expect(JSON.parse(run('domstate', 'g', '--json').out)).toMatchObject({ state: 'shutoff' });
      expect(run('reset', 'g')).toMatchObject({
        code: 1,
        err: expect.stringMatching(/^error: Failed to reset domain 'g'\nerror: OPERATION_INVALID: /),
      });
      expect(run('reboot', 'g')).toMatchObject({
        code: 1,
        err: expect.stringMatching(/^error: Failed to reboot domain 'g'\nerror: OPERATION_INVALID: /),
      });
    }, 400_000);

    it('attaches the terminal to the serial console (start --console, console): guest lines shown, typed lines reach the guest, Ctrl+] leaves', async () => {
      const { root, run } = await setUp(mode);
      const file = join(root, 'g.json');
      writeFileSync(file, JSON.stringify(tinyGuest('g', 'echo', { serials: [{ type: 'pty' }] })));
      expect(run('define', file).code).toBe(0);
      expect(run('console', 'g')).toMatchObject({
        code: 1,
        err: expect.stringMatching(
          /^error: The domain is not running\nerror: OPERATION_INVALID: .*not running/,
        ),
      });

      const first = onTerminal(['start', 'g', '--console', '--root', root]);
      await first.waitFor("Connected to domain 'g'");
      expect(first.out()).toContain("Domain 'g' started");
      await first.waitFor('VIRTKIT-PROMPT');
      first.type('hello-from-the-host\r');
      await first.waitFor('VIRTKIT-ECHO:hello-from-the-host');
      first.type('\x1d');
      expect(await first.exited).toBe(0);

      const live = run('dumpxml', 'g').out;
      const pty = /<console type='pty' tty='(\/dev\/pts\/[0-9]+)'>/.exec(live)?.[1];
      expect(pty).toBeDefined();
      expect(live).toContain(`<serial type='pty'>\n      <source path='${pty}'/>`);
      expect(run('dumpxml', 'g', '--inactive').out).not.toContain('/dev/pts/');
      expect(JSON.parse(run('domstate', 'g', '--json').out)).toMatchObject({ state: 'running' });

      // Again with `console`; the domain going away ends the session too.
      const second = onTerminal(['console', 'g', '--root', root]);
      await second.waitFor("Connected to domain 'g'");
      const before = second.out().length;
      await second.waitFor('VIRTKIT-PROMPT');
      second.type('second line\r');
      await second.waitFor('VIRTKIT-ECHO:second line');
      expect(second.out().slice(before)).toContain('VIRTKIT-PROMPT');
      expect(run('console', 'g', '--devname', 'serial1')).toMatchObject({
        code: 1,
        err: expect.stringMatching(/^error: OPERATION_INVALID: /),
      });
      expect(run('destroy', 'g').code).toBe(0);
      expect(await second.exited).toBe(0);
    }, 400_000);

    it('attaches the terminal to a unix-socket serial port QEMU listens on: lines both ways, Ctrl+] leaves, the domain stopping ends it', async () => {
      const { root, run } = await setUp(mode);
      const sock = join(root, 'lib', 'g-serial.sock');
      const file = join(root, 'g.json');
      writeFileSync(
        file,
        JSON.stringify(tinyGuest('g', 'echo', { serials: [{ type: 'unix', path: sock }] })),
      );
      expect(run('define', file).code).toBe(0);
      expect(run('dumpxml', 'g').out).toContain(
        `<serial type='unix'>\n      <source mode='bind' path='${sock}'/>`,
      );

      const first = onTerminal(['start', 'g', '--console', '--root', root]);
      await first.waitFor("Connected to domain 'g'");
      await first.waitFor('VIRTKIT-PROMPT');
      first.type('hello-over-a-socket\r');
      await first.waitFor('VIRTKIT-ECHO:hello-over-a-socket');
      first.type('\x1d');
      expect(await first.exited).toBe(0);
      expect(JSON.parse(run('domstate', 'g', '--json').out)).toMatchObject({ state: 'running' });

      // QEMU takes the next client once the first has gone; its stopping ends the session.
      const second = onTerminal(['console', 'g', '--devname', 'serial0', '--root', root]);
      await second.waitFor("Connected to domain 'g'");
      const before = second.out().length;
      second.type('again\r');
      await second.waitFor('VIRTKIT-ECHO:again');
      expect(second.out().slice(before)).toContain('VIRTKIT-ECHO:again');
      expect(run('destroy', 'g').code).toBe(0);
      expect(await second.exited).toBe(0);
      // The socket QEMU listened on goes with the domain.
      for (let i = 0; i < 600 && existsSync(sock); i++) await new Promise((r) => setTimeout(r, 100));
      expect(existsSync(sock)).toBe(false);
    }, 400_000);
  },
);

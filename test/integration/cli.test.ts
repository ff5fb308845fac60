import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runChild } from '../helpers/child.js';
import { useCliRoots, virtkit, virtkitBackground } from '../helpers/cli.js';
import { alive, runLeftovers, tempRoot } from '../helpers/env.js';
import { hostileEmulator } from '../helpers/hostile.js';

const HOLDER = join(__dirname, '..', '..', 'test', 'fixtures', 'control-holder.ts');
const XML = "<domain type='qemu'><name>clivm</name><memory unit='MiB'>64</memory><vcpu>2</vcpu></domain>";

const { roots, holders } = useCliRoots();

type Mode = 'the command holds the root' | 'an application holds the root';

/** A root; in the second mode, held by another process that serves its control socket. */
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

function json(out: string): unknown {
  return JSON.parse(out);
}

describe.each<Mode>(['the command holds the root', 'an application holds the root'])(
  'the virtkit command, when %s',
  (mode) => {
    it('defines, starts paused, resumes, suspends, destroys and undefines, printing what virsh prints', async () => {
      const { root, run } = await setUp(mode);
      const file = join(root, 'vm.xml');
      writeFileSync(file, XML);
      expect(run('define', file)).toEqual({
        code: 0,
        out: `Domain 'clivm' defined from ${file}\n\n`,
        err: '',
      });
      expect(run('list').out).toBe(' Id   Name   State\n--------------------\n\n');
      expect(run('list', '--all').out).toBe(
        ' Id   Name    State\n------------------------\n -    clivm   shut off\n\n',
      );
      const [defined] = json(run('list', '--all', '--json').out) as Array<Record<string, unknown>>;
      expect(defined).toMatchObject({ id: null, name: 'clivm', state: 'shutoff', persistent: true });
      const uuid = String(defined?.['uuid']);

      expect(run('start', 'clivm', '--paused')).toEqual({
        code: 0,
        out: "Domain 'clivm' started\n\n",
        err: '',
      });
      const [listed] = json(run('list', '--json').out) as Array<Record<string, unknown>>;
      expect(listed).toMatchObject({ name: 'clivm', uuid, state: 'paused', reason: 'user' });
      const id = Number(listed?.['id']);
      expect(run('list').out).toBe(
        ` Id   Name    State\n----------------------\n ${id}    clivm   paused\n\n`,
      );
      expect(run('list', '--name').out).toBe('clivm\n\n');
      expect(run('list', '--uuid').out).toBe(`${uuid}\n\n`);
      expect(run('list', '--all', '--state-shutoff', '--name').out).toBe('\n');

      const info = json(run('dominfo', 'clivm', '--json').out) as Record<string, unknown>;
      expect(info).toMatchObject({ id, name: 'clivm', uuid, state: 'paused', vcpus: 2, maxMemoryKiB: 65536 });
      const pid = Number(info['pid']);
      expect(alive(pid)).toBe(true);
      expect(run('dominfo', uuid).out).toMatch(
        new RegExp(
          `^Id: {13}${id}\\nName: {11}clivm\\nUUID: {11}${uuid}\\nOS Type: {8}hvm\\nState: {10}paused\\nCPU\\(s\\): {9}2\\n(CPU time: .*\\n)?Max memory: {5}65536 KiB\\nUsed memory: {4}65536 KiB\\nPersistent: {5}yes\\n`,
        ),
      );
      expect(run('domstate', String(id), '--reason').out).toBe('paused (user)\n\n');
      expect(json(run('domstate', 'clivm', '--json').out)).toEqual({ state: 'paused', reason: 'user' });
      expect(run('domid', 'clivm').out).toBe(`${id}\n\n`);
      expect(run('domuuid', 'clivm').out).toBe(`${uuid}\n\n`);
      expect(run('domname', uuid).out).toBe('clivm\n\n');
      expect(json(run('domid', uuid, '--json').out)).toEqual({ id });
      expect(run('dumpxml', 'clivm').out).toMatch(
        new RegExp(`^<domain type='qemu'>\\n  <name>clivm</name>\\n  <uuid>${uuid}</uuid>`),
      );
      expect(run('dumpxml', 'clivm', '--inactive').out).toContain('<name>clivm</name>');

      expect(run('resume', 'clivm').out).toBe("Domain 'clivm' resumed\n\n");
      expect(run('domstate', 'clivm').out).toBe('running\n\n');
      expect(run('suspend', 'clivm').out).toBe("Domain 'clivm' suspended\n\n");
      expect(run('domstate', 'clivm', '--reason').out).toBe('paused (user)\n\n');
      // A paused guest never sees the power button: the reboot times out and changes nothing.
      expect(run('reboot', 'clivm', '--timeout', '1')).toMatchObject({
        code: 1,
        out: '',
        err: expect.stringMatching(/^error: Failed to reboot domain 'clivm'\nerror: OPERATION_TIMEOUT: /),
      });
      expect(run('reset', 'clivm')).toEqual({ code: 0, out: "Domain 'clivm' was reset\n\n", err: '' });
      expect(run('domstate', 'clivm', '--reason').out).toBe('paused (user)\n\n');
      expect(run('undefine', 'clivm')).toMatchObject({
        code: 1,
        out: '',
        err: expect.stringMatching(/^error: Failed to undefine domain 'clivm'\nerror: OPERATION_INVALID: /),
      });
      expect(run('destroy', 'clivm')).toEqual({ code: 0, out: "Domain 'clivm' destroyed\n\n", err: '' });
      expect(alive(pid)).toBe(false);
      expect(run('domid', 'clivm').out).toBe('-\n\n');
      // virsh names the domain as it was given.
      expect(run('undefine', uuid).out).toBe(`Domain '${uuid}' has been undefined\n\n`);
      expect(json(run('list', '--all', '--json').out)).toEqual([]);
      expect(runLeftovers(root).filter((f) => f !== 'control.sock')).toEqual([]);
    }, 300_000);

    it('destroy --graceful ends a QEMU that exits on SIGTERM', async () => {
      const { root, run } = await setUp(mode);
      const file = join(root, 'vm.xml');
      writeFileSync(file, XML);
      expect(run('define', file).code).toBe(0);
      expect(run('start', 'clivm').code).toBe(0);
      const first = (json(run('dominfo', 'clivm', '--json').out) as { pid: number }).pid;
      expect(run('destroy', 'clivm', '--graceful')).toEqual({
        code: 0,
        out: "Domain 'clivm' destroyed\n\n",
        err: '',
      });
      expect(alive(first)).toBe(false);
      expect(run('domstate', 'clivm').out).toBe('shut off\n\n');

      expect(run('undefine', 'clivm').code).toBe(0);
    }, 300_000);

    it('fails with status 1 and the error code, refuses bad usage, and has help for every command', async () => {
      const { root, run } = await setUp(mode);
      // virsh's line first (scripts match it), then the code and message.
      expect(run('start', 'nope')).toMatchObject({
        code: 1,
        out: '',
        err: expect.stringMatching(/^error: failed to get domain 'nope'\nerror: NO_DOMAIN: [^\n]+\n$/),
      });
      for (const cmd of ['dominfo', 'domstate', 'domid', 'dumpxml', 'destroy', 'undefine', 'console'])
        expect(run(cmd, 'nope')).toEqual({
          code: 1,
          out: '',
          err: expect.stringMatching(/^error: failed to get domain 'nope'\nerror: NO_DOMAIN: /),
        });
      expect(run('event', '--domain', 'nope', '--timeout', '1')).toMatchObject({
        code: 1,
        err: expect.stringMatching(/^error: failed to get domain 'nope'\nerror: NO_DOMAIN: /),
      });
      const failed = run('dominfo', 'nope', '--json');
      expect(failed.code).toBe(1);
      expect(json(failed.err)).toMatchObject({ error: { code: 'NO_DOMAIN' } });
      expect(run('frobnicate')).toMatchObject({
        code: 1,
        err: expect.stringMatching(/unknown command 'frobnicate'/),
      });
      expect(run('list', '--bogus')).toMatchObject({
        code: 1,
        err: expect.stringMatching(/unknown option '--bogus'/),
      });
      expect(run('start')).toMatchObject({
        code: 1,
        err: expect.stringMatching(/missing required argument 'domain'/),
      });
      expect(run('start', 'a', 'b')).toMatchObject({
        code: 1,
        err: expect.stringMatching(/too many arguments/),
      });
      const bad = join(root, 'bad.xml');
      writeFileSync(bad, "<domain type='qemu'><name>x</name><memory>64</memory><frob/></domain>");
      expect(run('define', bad)).toMatchObject({
        code: 1,
        err: expect.stringMatching(
          /^error: Failed to define domain from \S+bad\.xml\nerror: (XML_ERROR|CONFIG_UNSUPPORTED): .*frob/,
        ),
      });
      expect(run('reboot', 'x')).toMatchObject({
        code: 1,
        err: expect.stringMatching(/^error: failed to get domain 'x'\nerror: NO_DOMAIN: /),
      });
      expect(run('create', bad)).toMatchObject({
        code: 1,
        err: expect.stringMatching(
          /^error: Failed to create domain from \S+bad\.xml\nerror: (XML_ERROR|CONFIG_UNSUPPORTED): .*frob/,
        ),
      });
      const help = run('--help');
      expect(help.code).toBe(0);
      for (const cmd of [
        'list',
        'dominfo',
        'domstate',
        'dumpxml',
        'define',
        'undefine',
        'start',
        'shutdown',
        'destroy',
        'suspend',
        'resume',
        'edit',
        'event',
        'capabilities',
        'domcapabilities',
        'version',
      ])
        expect(help.out).toMatch(new RegExp(`^  ${cmd} `, 'm'));
      expect(run('help', 'list')).toMatchObject({ code: 0, out: expect.stringMatching(/--state-running/) });
      expect(run('--version')).toMatchObject({ code: 0, out: expect.stringMatching(/^\d+\.\d+\.\d+/) });
      expect(json(run('version', '--json').out)).toMatchObject({
        through: mode === 'an application holds the root' ? 'control-socket' : 'local',
        protocol: 1,
      });
    }, 180_000);

    it('attaches a disk to the persistent definition and detaches it again', async () => {
      const { root, run } = await setUp(mode);
      const file = join(root, 'vm.xml');
      writeFileSync(file, XML);
      expect(run('define', file).code).toBe(0);
      writeFileSync(join(root, 'data.img'), Buffer.alloc(1024 * 1024));
      const disk = join(root, 'disk.xml');
      writeFileSync(
        disk,
        `<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='${join(root, 'data.img')}'/><target dev='vdb' bus='virtio'/></disk>`,
      );
      expect(run('attach-device', 'clivm', disk, '--config')).toEqual({
        code: 0,
        out: 'Device attached successfully\n\n',
        err: '',
      });
      expect(run('dumpxml', 'clivm', '--inactive').out).toContain(
        `<source file='${join(root, 'data.img')}'/>`,
      );
      expect(run('detach-device', 'clivm', disk)).toEqual({
        code: 0,
        out: 'Device detached successfully\n\n',
        err: '',
      });
      expect(run('dumpxml', 'clivm', '--inactive').out).not.toContain('data.img');
      expect(run('attach-device', 'clivm', disk, '--live')).toMatchObject({
        code: 1,
        err: expect.stringMatching(/^error: Failed to attach device from \S+\nerror: OPERATION_INVALID: /),
      });
    }, 180_000);

    it('edits the persistent XML with $EDITOR and defines it again', async () => {
      const { root } = await setUp(mode);
      const file = join(root, 'vm.xml');
      writeFileSync(file, XML);
      const args = ['--root', root];
      expect(virtkit(['define', file, ...args]).code).toBe(0);
      expect(virtkit(['edit', 'clivm', ...args], { EDITOR: 'true', VISUAL: '' }).out).toBe(
        "Domain 'clivm' XML configuration not changed.\n\n",
      );
      const sed = "sed -i -e 's|>2</vcpu>|>3</vcpu>|'";
      expect(virtkit(['edit', 'clivm', ...args], { EDITOR: sed, VISUAL: '' })).toMatchObject({
        code: 0,
        out: "Domain 'clivm' XML configuration edited.\n\n",
      });
      expect(json(virtkit(['dominfo', 'clivm', '--json', ...args]).out)).toMatchObject({ vcpus: 3 });
      expect(virtkit(['edit', 'clivm', ...args], { EDITOR: 'false', VISUAL: '' })).toMatchObject({
        code: 1,
        err: expect.stringMatching(/^error: OPERATION_FAILED: the editor 'false' failed/),
      });
    }, 120_000);

    it('passes a QMP or HMP command to QEMU, tainting the domain, only when it holds the root itself', async () => {
      const { root, run } = await setUp(mode);
      const file = join(root, 'vm.xml');
      writeFileSync(file, XML);
      expect(run('define', file).code).toBe(0);
      expect(run('start', 'clivm', '--paused').code).toBe(0);
      const qmp = run('qemu-monitor-command', 'clivm', '--pretty', '{"execute":"query-name"}');
      const hmp = run('qemu-monitor-command', 'clivm', '--hmp', 'info', 'name');
      if (mode === 'an application holds the root') {
        for (const r of [qmp, hmp])
          expect(r).toMatchObject({
            code: 1,
            err: expect.stringMatching(/^error: ACCESS_DENIED: .*virtkit\/internal/),
          });
        expect(json(run('dominfo', 'clivm', '--json').out)).toMatchObject({ taints: [] });
      } else {
        expect(qmp).toEqual({ code: 0, out: '{\n  "return": {\n    "name": "clivm"\n  }\n}\n', err: '' });
        expect(hmp).toMatchObject({ code: 0, out: expect.stringMatching(/^clivm\r?\n/) });
        expect(
          run('qemu-monitor-command', 'clivm', '--return-value', '{"execute":"query-status"}').out,
        ).toMatch(/"running":false/);
        expect(run('qemu-monitor-command', 'clivm', '{"execute":"no-such-command"}')).toMatchObject({
          code: 1,
          err: expect.stringMatching(/^error: OPERATION_FAILED: /),
        });
        expect(json(run('dominfo', 'clivm', '--json').out)).toMatchObject({ taints: ['custom-monitor'] });
      }
      expect(run('destroy', 'clivm').code).toBe(0);
    }, 180_000);

    it('prints the capabilities and domain capabilities as libvirt XML and as JSON', async () => {
      const { run } = await setUp(mode);
      expect(run('capabilities').out).toMatch(/^<capabilities>\n/);
      expect(json(run('capabilities', '--json').out)).toMatchObject({ host: { cpu: { arch: 'x86_64' } } });
      expect(run('domcapabilities', '--virttype', 'qemu').out).toMatch(/^<domainCapabilities>\n/);
      expect(json(run('domcapabilities', '--virttype', 'qemu', '--json').out)).toMatchObject({
        domainType: 'qemu',
      });
      expect(run('domcapabilities', '--virttype', 'xen')).toMatchObject({
        code: 1,
        err: expect.stringMatching(/^error: OPERATION_INVALID: .*virttype/),
      });
    }, 120_000);
  },
);

describe('the virtkit command and a root held by an application', () => {
  it('streams the holder’s events with `event --loop`', async () => {
    const { root, run } = await setUp('an application holds the root');
    const file = join(root, 'vm.xml');
    writeFileSync(file, XML);
    expect(run('define', file).code).toBe(0);
    // Defined again with its uuid, the domain is updated: an event each time.
    const uuid = run('domuuid', 'clivm').out.trim();
    writeFileSync(file, XML.replace('<name>clivm</name>', `<name>clivm</name><uuid>${uuid}</uuid>`));
    const events = virtkitBackground(['event', '--loop', '--json', '--root', root]);
    // Until the subscription is in place, each define is an event it may miss; one it sees will do.
    for (let i = 0; i < 100 && events.out() === ''; i++) {
      expect(run('define', file)).toMatchObject({ code: 0 });
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(run('start', 'clivm', '--paused').code).toBe(0);
    // A reset is virsh's reboot event; waited for, so it comes before the stop.
    expect(run('reset', 'clivm').code).toBe(0);
    for (let i = 0; i < 600 && !events.out().includes('"rebooted"'); i++)
      await new Promise((r) => setTimeout(r, 100));
    // Without --loop, the first reboot event of the domain ends the command, in virsh's words.
    const once = virtkitBackground(['event', '--event', 'reboot', '--domain', 'clivm', '--root', root]);
    for (let i = 0; i < 100 && once.out() === ''; i++) {
      expect(run('reset', 'clivm').code).toBe(0);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(await once.exited).toBe(0);
    expect(once.out()).toBe("event 'reboot' for domain 'clivm'\nevents received: 1\n\n");
    expect(run('destroy', 'clivm').code).toBe(0);
    for (let i = 0; i < 600 && !events.out().includes('"stopped"'); i++)
      await new Promise((r) => setTimeout(r, 100));
    events.child.kill('SIGINT');
    expect({ code: await events.exited, err: events.err() }).toEqual({ code: 0, err: '' });
    const seen = events
      .out()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { type: string; reason: string; domain: { name: string } });
    expect(seen[0]).toMatchObject({ type: 'defined', reason: 'updated', domain: { name: 'clivm', uuid } });
    const kinds = seen.map((e) => `${e.type}:${e.reason}`).filter((k, i, all) => k !== all[i - 1]);
    expect(kinds.slice(-4)).toEqual([
      'started:booted',
      'suspended:user',
      'rebooted:host',
      'stopped:destroyed',
    ]);
  }, 180_000);

  it('migrates a domain out of a held root and back into it, through its control socket', async () => {
    const { root: held, run } = await setUp('an application holds the root');
    const other = tempRoot();
    roots.push(other);
    const otherUri = `qemu:///embed?root=${encodeURIComponent(other)}`;
    const heldUri = `qemu:///embed?root=${encodeURIComponent(held)}`;
    const file = join(held, 'vm.xml');
    writeFileSync(file, XML);
    expect(run('define', file).code).toBe(0);
    expect(run('start', 'clivm', '--paused').code).toBe(0);
    const uuid = run('domuuid', 'clivm').out.trim();
    const out = run('migrate', 'clivm', otherUri, '--verbose', '--json');
    expect(out).toMatchObject({ code: 0, err: expect.stringMatching(/Migration: \[100 %\]\n$/) });
    expect(json(out.out)).toEqual({ name: 'clivm', uuid, destination: otherUri });
    expect(json(run('domstate', 'clivm', '--reason', '--json').out)).toEqual({
      state: 'shutoff',
      reason: 'migrated',
    });
    const there = json(virtkit(['dominfo', 'clivm', '--json', '-c', otherUri]).out) as {
      state: string;
      pid: number;
    };
    expect(there).toMatchObject({ state: 'paused' });
    expect(alive(there.pid)).toBe(true);

    // And back: the command holds the source now, the application the destination.
    expect(virtkit(['migrate', uuid, heldUri, '-c', otherUri])).toEqual({ code: 0, out: '', err: '' });
    expect(alive(there.pid)).toBe(false);
    expect(json(run('dominfo', 'clivm', '--json').out)).toMatchObject({ state: 'paused', uuid });
    expect(run('destroy', 'clivm').code).toBe(0);
  }, 240_000);

  it('shows the job another command runs on the held root, and aborts it', async () => {
    const { root, run } = await setUp('an application holds the root');
    const file = join(root, 'vm.xml');
    writeFileSync(file, XML);
    expect(run('define', file).code).toBe(0);
    expect(run('start', 'clivm', '--paused').code).toBe(0);
    expect(run('domjobinfo', 'clivm')).toEqual({ code: 0, out: 'Job type:         None\n\n', err: '' });
    expect(json(run('domjobinfo', 'clivm', '--json').out)).toMatchObject({ operation: 'none', phase: null });
    expect(run('domjobabort', 'clivm')).toMatchObject({
      code: 1,
      err: expect.stringMatching(/^error: OPERATION_INVALID: /),
    });
    // A paused guest never answers the power button: the shutdown job waits until it is aborted.
    const shutdown = virtkitBackground(['shutdown', 'clivm', '--timeout', '600', '--root', root]);
    let job: { operation?: string } = {};
    for (let i = 0; i < 100 && job.operation !== 'shutdown'; i++) {
      job = json(run('domjobinfo', 'clivm', '--json').out) as { operation: string };
      if (job.operation !== 'shutdown') await new Promise((r) => setTimeout(r, 200));
    }
    expect(run('domjobinfo', 'clivm').out).toMatch(
      /^Job type: {9}Unbounded\nOperation: {8}shutdown\nPhase: {12}\S+\nTime elapsed: {5}\d+ ms\n/,
    );
    expect(run('domjobabort', 'clivm')).toEqual({ code: 0, out: '\n', err: '' });
    expect(await shutdown.exited).toBe(1);
    expect(shutdown.err()).toMatch(/^error: Failed to shutdown domain 'clivm'\nerror: ABORTED: /);
    expect(json(run('domjobinfo', 'clivm', '--json').out)).toMatchObject({ operation: 'none' });
    expect(json(run('domstate', 'clivm', '--json').out)).toMatchObject({ state: 'paused' });
    expect(run('destroy', 'clivm').code).toBe(0);
  }, 240_000);

  it('names the holder and how to enable the control socket when it serves none', async () => {
    const root = tempRoot();
    roots.push(root);
    const { child, value: pid } = await runChild(HOLDER, [root, 'off']);
    holders.push(child);
    expect(virtkit(['list', '--root', root])).toMatchObject({
      code: 1,
      err: expect.stringMatching(
        new RegExp(
          `^error: ROOT_LOCKED: .* by pid ${pid}, which serves no control socket: .*controlSocket: true`,
        ),
      ),
    });
  });

  it('finds a domain the holder started still running when the holder closes and the command takes the root', async () => {
    const { root, run } = await setUp('an application holds the root');
    const file = join(root, 'vm.xml');
    writeFileSync(file, XML);
    expect(run('define', file).code).toBe(0);
    expect(run('start', 'clivm', '--paused').code).toBe(0);
    const pid = Number((json(run('dominfo', 'clivm', '--json').out) as { pid: number }).pid);
    const holder = holders.pop();
    const gone = new Promise((r) => holder?.once('exit', r));
    holder?.kill('SIGTERM');
    await gone;
    expect(runLeftovers(root)).not.toContain('control.sock');
    expect(json(run('dominfo', 'clivm', '--json').out)).toMatchObject({ state: 'paused', pid });
    expect(json(run('version', '--json').out)).toMatchObject({ through: 'local' });
    expect(run('destroy', 'clivm').code).toBe(0);
  }, 120_000);
});

// Through the control socket only: a command that holds the root itself would first reconnect to
// the domain, and it adopts no process but QEMU's binary (the hostile emulator is node's).
it('destroy --graceful fails with OPERATION_TIMEOUT, leaving the domain running, when QEMU ignores SIGTERM', async () => {
  const { root, run } = await setUp('an application holds the root');
  const stubborn = join(root, 'stubborn.xml');
  writeFileSync(
    stubborn,
    `<domain type='qemu'><name>stubborn</name><memory unit='MiB'>64</memory><devices><emulator>${hostileEmulator(root, 'ignore-sigterm')}</emulator></devices></domain>`,
  );
  expect(run('define', stubborn).code).toBe(0);
  expect(run('start', 'stubborn', '--paused').code).toBe(0);
  const pid = (json(run('dominfo', 'stubborn', '--json').out) as { pid: number }).pid;
  expect(run('destroy', 'stubborn', '--graceful')).toMatchObject({
    code: 1,
    out: '',
    err: expect.stringMatching(
      /^error: Failed to destroy domain 'stubborn'\nerror: OPERATION_TIMEOUT: [^\n]*SIGTERM/,
    ),
  });
  expect(alive(pid)).toBe(true);
  expect(run('domstate', 'stubborn').out).toBe('paused\n\n');
  expect(run('destroy', 'stubborn')).toEqual({
    code: 0,
    out: "Domain 'stubborn' destroyed\n\n",
    err: '',
  });
  expect(alive(pid)).toBe(false);
  expect(run('undefine', 'stubborn').code).toBe(0);
}, 300_000);

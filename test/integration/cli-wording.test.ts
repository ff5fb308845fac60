import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runChild } from '../helpers/child.js';
import { type CliRun, useCliRoots, virtkit } from '../helpers/cli.js';
import { tempRoot, tinyGuest } from '../helpers/env.js';

/*
 * The wording of every domain command against virsh 9.0's (tools/virsh-domain.c,
 * virsh-domain-monitor.c; checked against Debian's virsh 9.0.0 on the test driver): its success
 * line, and on failure virsh's first line ("error: Failed to start domain 'x'", "error: failed to
 * get domain 'x'", "error: Domain is already active"…) followed by virtkit's code and message.
 * Success lines name the domain as it was given (virsh prints its argument), except `start`,
 * `define` and `create`, which print the domain's name, as virsh does.
 */

const HOLDER = join(__dirname, '..', '..', 'test', 'fixtures', 'control-holder.ts');
const XML = "<domain type='qemu'><name>w</name><memory unit='MiB'>64</memory><vcpu>1</vcpu></domain>";

const { roots, holders } = useCliRoots();

/** A row: the command, and either its exact output or virsh's first error line and virtkit's code. */
type Row = readonly [
  args: readonly string[],
  expected: string | { readonly error: string; readonly code: string },
];

/** Checks one row; the failure names the command, so the table reads as the report. */
function check(run: (args: readonly string[]) => CliRun, [args, expected]: Row): void {
  const got = run(args);
  const label = `virtkit ${args.join(' ')}`;
  if (typeof expected === 'string') {
    expect(got, label).toEqual({ code: 0, out: expected, err: '' });
    return;
  }
  expect({ code: got.code, out: got.out }, label).toEqual({ code: 1, out: '' });
  const lines = got.err.split('\n');
  expect(lines[0], label).toBe(`error: ${expected.error}`);
  expect(lines[1], label).toMatch(new RegExp(`^error: ${expected.code}: \\S`));
  expect(lines.slice(2), label).toEqual(['']);
}

/** Polls until `check` holds; the guest decides how long that takes. */
async function until(what: string, check: () => boolean, timeoutMs = 180_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

type Mode = 'the command holds the root' | 'an application holds the root';

describe.each<Mode>(['the command holds the root', 'an application holds the root'])(
  'virsh’s wording, when %s',
  (mode) => {
    it('success and error lines of every domain command', async () => {
      const root = tempRoot();
      roots.push(root);
      if (mode === 'an application holds the root') holders.push((await runChild(HOLDER, [root])).child);
      const run = (args: readonly string[], env: NodeJS.ProcessEnv = {}) =>
        virtkit([...args, '--root', root], env);
      const file = join(root, 'w.xml');
      writeFileSync(file, XML);
      const missing = join(root, 'missing.xml');
      const bad = join(root, 'bad.xml');
      writeFileSync(bad, '<domain><bad');
      const disk = join(root, 'disk.xml');
      writeFileSync(
        disk,
        `<disk type='file' device='disk'><source file='${join(root, 'data.img')}'/><target dev='vdb' bus='virtio'/></disk>`,
      );
      const transient = join(root, 't.xml');
      writeFileSync(transient, XML.replace('<name>w</name>', '<name>t</name>'));

      const invalid = (error: string) => ({ error, code: 'OPERATION_INVALID' });
      const noFile = (path: string) => ({
        error: `Failed to open file '${path}': No such file or directory`,
        code: 'SYSTEM_ERROR',
      });
      const defining: Row[] = [
        [['define', file], `Domain 'w' defined from ${file}\n\n`],
        [['define', missing], noFile(missing)],
        [['define', bad], { error: `Failed to define domain from ${bad}`, code: 'XML_ERROR' }],
        [['create', file], { error: `Failed to create domain from ${file}`, code: 'DOMAIN_EXISTS' }],
        [['start', 'nope'], { error: "failed to get domain 'nope'", code: 'NO_DOMAIN' }],
        [['dominfo', 'nope'], { error: "failed to get domain 'nope'", code: 'NO_DOMAIN' }],
        [['domstate', 'w', '--reason'], 'shut off (unknown)\n\n'],
        [['domid', 'w'], '-\n\n'],
        [['event', '--domain', 'w', '--timeout', '1'], 'event loop timed out\nevents received: 0\n\n'],
        [['console', 'w'], invalid('The domain is not running')],
        [['suspend', 'w'], invalid("Failed to suspend domain 'w'")],
        [['resume', 'w'], invalid("Failed to resume domain 'w'")],
        [['shutdown', 'w'], invalid("Failed to shutdown domain 'w'")],
        [['reboot', 'w'], invalid("Failed to reboot domain 'w'")],
        [['reset', 'w'], invalid("Failed to reset domain 'w'")],
        [['destroy', 'w'], invalid("Failed to destroy domain 'w'")],
        [['attach-device', 'w', missing], noFile(missing)],
        [['attach-device', 'w', disk, '--live'], invalid(`Failed to attach device from ${disk}`)],
        [['detach-device', 'w', disk, '--live'], invalid(`Failed to detach device from ${disk}`)],
      ];
      for (const row of defining) check(run, row);

      const uuid = run(['domuuid', 'w']).out.trim();
      // virsh leaves a blank line after the XML too.
      expect(run(['dumpxml', 'w']).out).toMatch(/<\/domain>\n\n$/);
      expect(run(['domcapabilities', '--virttype', 'qemu']).out).toMatch(/<\/domainCapabilities>\n\n$/);
      check(run, [['setvcpus', 'w', '1', '--config'], '\n']);
      // virsh edit names the domain, however it was given.
      expect(run(['edit', uuid], { EDITOR: 'true' })).toEqual({
        code: 0,
        out: "Domain 'w' XML configuration not changed.\n\n",
        err: '',
      });
      const running: Row[] = [
        [['start', uuid, '--paused'], "Domain 'w' started\n\n"],
        [['start', 'w'], invalid('Domain is already active')],
        [['suspend', 'w'], invalid("Failed to suspend domain 'w'")],
        [['resume', 'w'], "Domain 'w' resumed\n\n"],
        [['suspend', uuid], `Domain '${uuid}' suspended\n\n`],
        [['reset', 'w'], "Domain 'w' was reset\n\n"],
        [['undefine', 'w'], invalid("Failed to undefine domain 'w'")],
        [['destroy', uuid], `Domain '${uuid}' destroyed\n\n`],
        [['domstate', 'w', '--reason'], 'shut off (destroyed)\n\n'],
        [['undefine', 'w'], "Domain 'w' has been undefined\n\n"],
        [['undefine', 'w'], { error: "failed to get domain 'w'", code: 'NO_DOMAIN' }],
        [['create', transient, '--paused'], `Domain 't' created from ${transient}\n\n`],
        [['destroy', 't'], "Domain 't' destroyed\n\n"],
      ];
      for (const row of running) check(run, row);

      // A guest that answers the power button, for the success lines of shutdown and reboot.
      const guest = join(root, 'g.json');
      writeFileSync(guest, JSON.stringify(tinyGuest('g', 'wait')));
      check(run, [['define', guest], `Domain 'g' defined from ${guest}\n\n`]);
      check(run, [['start', 'g'], "Domain 'g' started\n\n"]);
      const console = join(root, 'log', 'g.console.log');
      await until('the guest waiting for the power button', () =>
        readFileSync(console, 'utf8').includes('VIRTKIT-GUEST-WAITING'),
      );
      check(run, [['shutdown', 'g'], "Domain 'g' is being shutdown\n\n"]);
      check(run, [['domstate', 'g', '--reason'], 'shut off (shutdown)\n\n']);
    }, 600_000);
  },
);

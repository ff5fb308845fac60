import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runChild } from '../helpers/child.js';
import { useCliRoots, virtkit } from '../helpers/cli.js';
import { alive, runLeftovers, tempRoot } from '../helpers/env.js';

/* `virtkit create`: transient domains in a real QEMU, with and without an application holding the root. */

const HOLDER = join(__dirname, '..', '..', 'test', 'fixtures', 'control-holder.ts');
const XML = "<domain type='qemu'><name>tvm</name><memory unit='MiB'>64</memory><vcpu>1</vcpu></domain>";

const { roots, holders } = useCliRoots();

type Mode = 'the command holds the root' | 'an application holds the root';

describe.each<Mode>(['the command holds the root', 'an application holds the root'])(
  'virtkit create, when %s',
  (mode) => {
    it('starts a transient domain that is gone, files and all, once destroyed; a failed create leaves nothing', async () => {
      const root = tempRoot();
      roots.push(root);
      if (mode === 'an application holds the root') holders.push((await runChild(HOLDER, [root])).child);
      const run = (...args: string[]) => virtkit([...args, '--root', root]);
      const file = join(root, 'tvm.xml');
      writeFileSync(file, XML);

      expect(run('create', file, '--paused')).toEqual({
        code: 0,
        out: `Domain 'tvm' created from ${file}\n\n`,
        err: '',
      });
      // Every command below is a new driver when the command holds the root: each finds the
      // domain transient again.
      const [listed] = JSON.parse(run('list', '--all', '--json').out) as Array<Record<string, unknown>>;
      expect(listed).toMatchObject({ name: 'tvm', state: 'paused', persistent: false });
      expect(run('dominfo', 'tvm').out).toMatch(/\nPersistent: {5}no\n/);
      const { pid } = JSON.parse(run('dominfo', 'tvm', '--json').out) as { pid: number };
      expect(alive(pid)).toBe(true);
      expect(run('create', file)).toMatchObject({
        code: 1,
        err: expect.stringMatching(
          /^error: Failed to create domain from \S+tvm\.xml\nerror: DOMAIN_EXISTS: /,
        ),
      });
      expect(run('undefine', 'tvm')).toMatchObject({
        code: 1,
        err: expect.stringMatching(/^error: Failed to undefine domain 'tvm'\nerror: OPERATION_INVALID: /),
      });

      expect(run('destroy', 'tvm')).toEqual({ code: 0, out: "Domain 'tvm' destroyed\n\n", err: '' });
      expect(alive(pid)).toBe(false);
      expect(JSON.parse(run('list', '--all', '--json').out)).toEqual([]);
      expect(run('dominfo', 'tvm')).toMatchObject({
        code: 1,
        err: expect.stringMatching(/^error: failed to get domain 'tvm'\nerror: NO_DOMAIN: /),
      });
      expect(readdirSync(join(root, 'etc', 'domains'))).toEqual([]);
      expect(runLeftovers(root).filter((f) => f !== 'control.sock')).toEqual([]);

      // A start that fails (its disk is missing) leaves no domain and no file either.
      const broken = join(root, 'broken.xml');
      writeFileSync(
        broken,
        XML.replace(
          '</vcpu>',
          `</vcpu><devices><disk type='file' device='disk'><source file='${join(root, 'missing.img')}'/><target dev='vda' bus='virtio'/></disk></devices>`,
        ),
      );
      expect(run('create', broken)).toMatchObject({
        code: 1,
        out: '',
        err: expect.stringMatching(
          /^error: Failed to create domain from \S+broken\.xml\nerror: \w+: .*missing\.img/,
        ),
      });
      expect(JSON.parse(run('list', '--all', '--json').out)).toEqual([]);
      expect(readdirSync(join(root, 'etc', 'domains'))).toEqual([]);
      expect(runLeftovers(root).filter((f) => f !== 'control.sock')).toEqual([]);

      // Defined while it runs, a transient domain becomes persistent and outlives its QEMU.
      expect(run('create', file, '--paused').code).toBe(0);
      const uuid = run('domuuid', 'tvm').out.trim();
      writeFileSync(file, XML.replace('</name>', `</name><uuid>${uuid}</uuid>`));
      expect(run('define', file).code).toBe(0);
      expect(JSON.parse(run('dominfo', 'tvm', '--json').out)).toMatchObject({
        persistent: true,
        state: 'paused',
      });
      expect(run('destroy', 'tvm').code).toBe(0);
      expect(JSON.parse(run('list', '--all', '--json').out)).toMatchObject([
        { name: 'tvm', state: 'shutoff', persistent: true },
      ]);
      expect(runLeftovers(root).filter((f) => f !== 'control.sock')).toEqual([]);
    }, 300_000);
  },
);

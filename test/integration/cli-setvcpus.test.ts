import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runChild } from '../helpers/child.js';
import { useCliRoots, virtkit } from '../helpers/cli.js';
import { tempRoot } from '../helpers/env.js';

/* `virtkit setvcpus` against a real QEMU, with and without an application holding the root. */

const HOLDER = join(__dirname, '..', '..', 'test', 'fixtures', 'control-holder.ts');
const XML =
  "<domain type='qemu'><name>cvm</name><memory unit='MiB'>64</memory><vcpu current='1'>3</vcpu></domain>";

const { roots, holders } = useCliRoots();

type Mode = 'the command holds the root' | 'an application holds the root';

describe.each<Mode>(['the command holds the root', 'an application holds the root'])(
  'virtkit setvcpus, when %s',
  (mode) => {
    it('changes the definition of an inactive domain and hot-plugs a vCPU into a running one', async () => {
      const root = tempRoot();
      roots.push(root);
      if (mode === 'an application holds the root') holders.push((await runChild(HOLDER, [root])).child);
      const run = (...args: string[]) => virtkit([...args, '--root', root]);
      const file = join(root, 'cvm.xml');
      writeFileSync(file, XML);
      expect(run('define', file).code).toBe(0);
      const vcpus = () => (JSON.parse(run('dominfo', 'cvm', '--json').out) as { vcpus: number }).vcpus;
      expect(vcpus()).toBe(1);

      expect(run('setvcpus', 'cvm', '2')).toEqual({ code: 0, out: '\n', err: '' });
      expect(vcpus()).toBe(2);
      expect(run('dumpxml', 'cvm', '--inactive').out).toContain(
        "<vcpu placement='static' current='2'>3</vcpu>",
      );
      expect(run('setvcpus', 'cvm', '4', '--config')).toMatchObject({
        code: 1,
        err: expect.stringMatching(/^error: OPERATION_INVALID: /),
      });
      expect(run('setvcpus', 'cvm', 'two')).toMatchObject({
        code: 1,
        err: expect.stringMatching(/not a vCPU count/),
      });
      expect(run('setvcpus', 'cvm', '1', '--live')).toMatchObject({
        code: 1,
        err: expect.stringMatching(/^error: OPERATION_INVALID: /),
      });

      expect(run('start', 'cvm', '--paused').code).toBe(0);
      const { pid } = JSON.parse(run('dominfo', 'cvm', '--json').out) as { pid: number };
      expect(run('setvcpus', 'cvm', '3', '--live')).toEqual({ code: 0, out: '\n', err: '' });
      expect(vcpus()).toBe(3);
      // QEMU runs a thread for each vCPU (named with debug-threads): the new one exists.
      const cpuThreads = readdirSync(`/proc/${pid}/task`).filter((t) =>
        /^CPU \d+\//.test(readFileSync(`/proc/${pid}/task/${t}/comm`, 'utf8')),
      );
      expect(cpuThreads).toHaveLength(3);
      expect(run('dumpxml', 'cvm', '--inactive').out).toContain("current='2'>3</vcpu>");
      expect(run('destroy', 'cvm').code).toBe(0);
    }, 300_000);
  },
);

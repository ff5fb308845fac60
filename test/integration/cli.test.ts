import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { alive, removeRoot, runLeftovers, tempRoot } from '../helpers/env.js';

const CLI = join(__dirname, '..', '..', 'src', 'cli.ts');
const roots: string[] = [];
afterEach(() => {
  for (const r of roots.splice(0)) removeRoot(r);
});

/** Runs the `virtkit` command as a user would, each call its own process (and its own driver). */
function virtkit(root: string, ...args: string[]) {
  const res = spawnSync(process.execPath, ['--import', 'tsx', CLI, ...args, '--root', root], {
    encoding: 'utf8',
  });
  return { code: res.status, out: res.stdout, err: res.stderr };
}

describe('the virtkit command', () => {
  it('defines from XML, starts paused, lists, shows info and destroys, across processes', () => {
    const root = tempRoot();
    roots.push(root);
    const xml = join(root, 'vm.xml');
    writeFileSync(
      xml,
      "<domain type='qemu'><name>clivm</name><memory unit='MiB'>64</memory><vcpu>2</vcpu></domain>",
    );
    expect(virtkit(root, 'define', xml)).toMatchObject({
      code: 0,
      out: expect.stringMatching(/^defined clivm /),
    });
    expect(virtkit(root, 'start', 'clivm', '--paused').code).toBe(0);
    const list = virtkit(root, 'list');
    const pid = Number(list.out.trim().split('\t')[3]);
    expect(list.out).toMatch(/^clivm\tpaused\tuser\t\d+\n$/);
    expect(alive(pid)).toBe(true);
    expect(JSON.parse(virtkit(root, 'info', 'clivm').out)).toMatchObject({ state: 'paused', vcpus: 2, pid });
    expect(virtkit(root, 'destroy', 'clivm').code).toBe(0);
    expect(alive(pid)).toBe(false);
    expect(runLeftovers(root)).toEqual([]);
  });

  it('exits 1 with the error code for a failed command, 2 for bad usage', () => {
    const root = tempRoot();
    roots.push(root);
    expect(virtkit(root, 'start', 'nope')).toMatchObject({
      code: 1,
      err: expect.stringMatching(/NO_DOMAIN/),
    });
    expect(virtkit(root, 'frobnicate')).toMatchObject({
      code: 2,
      err: expect.stringMatching(/usage: virtkit/),
    });
  });
});

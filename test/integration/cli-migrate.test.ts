import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runChild } from '../helpers/child.js';
import { useCliRoots, virtkit } from '../helpers/cli.js';
import { alive, runLeftovers, tempRoot } from '../helpers/env.js';
import { makeCredentials } from '../helpers/tls.js';

/*
 * `virtkit migrate --persistent --undefinesource --tls` between two roots, one of them held by an
 * application that serves its control socket, against real QEMU.
 */

const HOLDER = join(__dirname, '..', '..', 'test', 'fixtures', 'control-holder.ts');
const XML = "<domain type='qemu'><name>migvm</name><memory unit='MiB'>64</memory><vcpu>1</vcpu></domain>";

const { roots, holders } = useCliRoots();

function uriOf(root: string): string {
  return `qemu:///embed?root=${encodeURIComponent(root)}`;
}

/** Two roots; `held` is held by another process serving its control socket. */
async function twoRoots(): Promise<{ held: string; own: string }> {
  const held = tempRoot();
  const own = tempRoot();
  roots.push(held, own);
  holders.push((await runChild(HOLDER, [held])).child);
  return { held, own };
}

function json(out: string): unknown {
  return JSON.parse(out);
}

/** Defines and starts (paused) the domain on `root`; returns its uuid and QEMU pid. */
function startOn(root: string): { uuid: string; pid: number } {
  const file = join(root, 'migvm.xml');
  writeFileSync(file, XML);
  expect(virtkit(['define', file, '-c', uriOf(root)]).code).toBe(0);
  expect(virtkit(['start', 'migvm', '--paused', '-c', uriOf(root)]).code).toBe(0);
  const info = json(virtkit(['dominfo', 'migvm', '--json', '-c', uriOf(root)]).out) as {
    uuid: string;
    pid: number;
  };
  return { uuid: info.uuid, pid: info.pid };
}

describe('virtkit migrate --persistent --undefinesource', () => {
  it('moves the definition out of a held root over TLS: defined at the destination, undefined at the source', async () => {
    const { held, own } = await twoRoots();
    const creds = join(own, 'lib', 'tls');
    makeCredentials(creds, 'vk-cli-ca');
    const { uuid, pid } = startOn(held);

    const out = virtkit([
      'migrate',
      'migvm',
      uriOf(own),
      '--persistent',
      '--undefinesource',
      '--tls',
      '--tls-dir',
      creds,
      '--json',
      '-c',
      uriOf(held),
    ]);
    expect(out).toMatchObject({ code: 0, err: '' });
    expect(json(out.out)).toEqual({ name: 'migvm', uuid, destination: uriOf(own) });

    // The source's QEMU ended and its definition is gone; the application still holds the root.
    for (let i = 0; i < 600 && alive(pid); i++) await new Promise((r) => setTimeout(r, 100));
    expect(alive(pid)).toBe(false);
    expect(json(virtkit(['list', '--all', '--json', '-c', uriOf(held)]).out)).toEqual([]);
    expect(virtkit(['dominfo', 'migvm', '-c', uriOf(held)])).toMatchObject({ code: 1 });
    expect(json(virtkit(['version', '--json', '-c', uriOf(held)]).out)).toMatchObject({
      through: 'control-socket',
    });

    // The destination runs it (paused, as the source was) with a persistent definition, which
    // outlives its QEMU.
    const there = json(virtkit(['dominfo', 'migvm', '--json', '-c', uriOf(own)]).out) as {
      state: string;
      persistent: boolean;
      pid: number;
    };
    expect(there).toMatchObject({ state: 'paused', persistent: true });
    expect(alive(there.pid)).toBe(true);
    expect(virtkit(['destroy', 'migvm', '-c', uriOf(own)]).code).toBe(0);
    expect(json(virtkit(['list', '--all', '--json', '-c', uriOf(own)]).out)).toMatchObject([
      { name: 'migvm', uuid, state: 'shutoff', persistent: true },
    ]);
    expect(virtkit(['dumpxml', 'migvm', '--inactive', '-c', uriOf(own)]).out).toContain(
      `<uuid>${uuid}</uuid>`,
    );
    expect(runLeftovers(held).filter((f) => f !== 'control.sock')).toEqual([]);
  }, 300_000);

  it('moves the definition into a held root; refuses TLS options it cannot use and leaves both sides intact', async () => {
    const { held, own } = await twoRoots();
    const { uuid, pid } = startOn(own);
    const migrate = (...extra: string[]) =>
      virtkit(['migrate', 'migvm', uriOf(held), ...extra, '-c', uriOf(own)]);

    expect(migrate('--tls')).toMatchObject({
      code: 1,
      out: '',
      err: expect.stringMatching(/^error: OPERATION_INVALID: --tls needs --tls-dir/),
    });
    expect(migrate('--tls-dir', own)).toMatchObject({
      code: 1,
      err: expect.stringMatching(/^error: OPERATION_INVALID: --tls-dir and --tls-destination go with --tls/),
    });
    // No credentials in the directory: the migration fails typed and is rolled back.
    const empty = join(own, 'lib', 'no-credentials');
    mkdirSync(empty, { recursive: true });
    expect(migrate('--persistent', '--tls', '--tls-dir', empty)).toMatchObject({
      code: 1,
      out: '',
      err: expect.stringMatching(/^error: [A-Z_]+: /),
    });
    expect(json(virtkit(['domstate', 'migvm', '--json', '-c', uriOf(own)]).out)).toMatchObject({
      state: 'paused',
    });
    expect(alive(pid)).toBe(true);
    expect(json(virtkit(['list', '--all', '--json', '-c', uriOf(held)]).out)).toEqual([]);

    expect(migrate('--persistent', '--undefinesource')).toEqual({ code: 0, out: '', err: '' });
    for (let i = 0; i < 600 && alive(pid); i++) await new Promise((r) => setTimeout(r, 100));
    expect(alive(pid)).toBe(false);
    expect(json(virtkit(['list', '--all', '--json', '-c', uriOf(own)]).out)).toEqual([]);
    expect(json(virtkit(['dominfo', uuid, '--json', '-c', uriOf(held)]).out)).toMatchObject({
      name: 'migvm',
      state: 'paused',
      persistent: true,
    });
    expect(virtkit(['destroy', 'migvm', '-c', uriOf(held)]).code).toBe(0);
    expect(json(virtkit(['list', '--all', '--json', '-c', uriOf(held)]).out)).toMatchObject([
      { name: 'migvm', state: 'shutoff', persistent: true },
    ]);
  }, 300_000);
});

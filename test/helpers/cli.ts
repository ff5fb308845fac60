import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { afterEach } from 'vitest';
import { connect } from '../../src/index.js';
import { killChild } from './child.js';
import { removeRoot } from './env.js';

const CLI = join(__dirname, '..', '..', 'src', 'cli.ts');

/** What one run of the command gave. */
export interface CliRun {
  readonly code: number | null;
  readonly out: string;
  readonly err: string;
}

/** Runs the `virtkit` command as a user would: its own process (and, unless the root is held, its own driver). */
export function virtkit(args: readonly string[], env: NodeJS.ProcessEnv = {}): CliRun {
  const res = spawnSync(process.execPath, ['--import', 'tsx', CLI, ...args], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: 120_000,
  });
  return { code: res.status, out: res.stdout, err: res.stderr };
}

/** Starts the command in the background; `lines()` gives what it printed so far. */
export function virtkitBackground(args: readonly string[]) {
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    err += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, exited, out: () => out, err: () => err };
}

/**
 * Registers the clean-up of a CLI test file: after each test the holders (processes holding a root
 * with the control socket) are killed, whatever a failed test left running in the roots is
 * destroyed, and the roots removed. Push each root and holder a test makes to the returned lists.
 */
export function useCliRoots(): { readonly roots: string[]; readonly holders: ChildProcess[] } {
  const roots: string[] = [];
  const holders: ChildProcess[] = [];
  afterEach(async () => {
    for (const h of holders.splice(0)) await killChild(h);
    for (const r of roots.splice(0)) {
      const conn = await connect(`qemu:///embed?root=${encodeURIComponent(r)}`);
      for (const dom of await conn.listDomains({ state: 'active' })) await dom.destroy({ graceMs: 1000 });
      await conn.close();
      removeRoot(r);
    }
  });
  return { roots, holders };
}

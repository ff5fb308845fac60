import { chmodSync, existsSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { VirtError } from '../../src/stable/index.js';
import { processesMentioning, runLeftovers } from './env.js';

const FIXTURE = join(__dirname, '..', 'fixtures', 'hostile-emulator.mjs');

/** Writes an executable wrapper that runs the hostile emulator in `mode`; returns its path. */
export function hostileEmulator(dir: string, mode: string): string {
  const path = join(dir, `emu-${mode.replace(/[^a-z0-9-]/gi, '_')}`);
  writeFileSync(path, `#!/bin/sh\nexec '${process.execPath}' '${FIXTURE}' '${mode}' "$@"\n`);
  chmodSync(path, 0o755);
  return path;
}

/** The built-in cgroup directories of a domain that still exist (v1 cpuset and v2 unified). */
export function cgroupLeftovers(uuid: string): string[] {
  return ['/sys/fs/cgroup/cpuset', '/sys/fs/cgroup/unified', '/sys/fs/cgroup']
    .map((m) => `${m}/virtkit/vk-${uuid}`)
    .filter((d) => existsSync(d));
}

/** This process's descriptors that point into `root` (files or the domain log). */
export function fdsInto(root: string): string[] {
  const out: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (target.startsWith(root)) out.push(`${fd} -> ${target}`);
    } catch {
      // closed while listing
    }
  }
  return out;
}

/** The number of open descriptors of this process. */
export function fdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

/** Waits until `check` is true or `ms` passed; returns the last value. */
export async function eventually(check: () => boolean, ms = 10_000): Promise<boolean> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}

/** Everything a failed or stopped domain may have left: processes, run files, cgroups, fds. */
export async function leftovers(root: string, uuid: string): Promise<Record<string, string[] | number[]>> {
  // The kernel may take a moment to reap what was killed; wait for it, then report what remains.
  await eventually(() => processesMentioning(uuid).length === 0 && cgroupLeftovers(uuid).length === 0);
  return {
    processes: processesMentioning(uuid),
    run: runLeftovers(root),
    cgroups: cgroupLeftovers(uuid),
    fds: fdsInto(root).filter((f) => !f.includes('driver.lock')),
  };
}

export const NOTHING_LEFT = { processes: [], run: [], cgroups: [], fds: [] };

/** Runs `fn` and returns its VirtError; fails the test for success or any other error. */
export async function virtErrorOf(fn: () => Promise<unknown>): Promise<VirtError> {
  try {
    await fn();
  } catch (err) {
    if (VirtError.is(err)) return err;
    throw new Error(`expected a VirtError, got ${String(err)}`, { cause: err });
  }
  throw new Error('expected a VirtError, but the operation succeeded');
}

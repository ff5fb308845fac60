import { execFileSync, spawnSync } from 'node:child_process';
import { chownSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { processesMentioning, removeRoot, runLeftovers, tempRoot } from '../helpers/env.js';
import { TEST_USER } from '../setup/global.js';

const FIXTURE = join(__dirname, '..', 'fixtures', 'unprivileged-driver.ts');
const uid = Number(execFileSync('id', ['-u', TEST_USER]).toString().trim());
const gid = Number(execFileSync('id', ['-g', TEST_USER]).toString().trim());
const roots: string[] = [];
afterEach(() => {
  for (const r of roots.splice(0)) removeRoot(r);
});

/** Runs the fixture driver as the unprivileged test user and returns what it printed. */
function runAsUser(mode: string): { root: string; out: Record<string, unknown> } {
  const root = tempRoot();
  roots.push(root);
  chownSync(root, uid, gid);
  const res = spawnSync(process.execPath, ['--import', 'tsx', FIXTURE, root, mode], {
    uid,
    gid,
    cwd: join(__dirname, '..', '..'),
    env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: root },
    encoding: 'utf8',
    timeout: 60_000,
  });
  const line = res.stdout.trim().split('\n').at(-1) ?? '';
  if (!line.startsWith('{')) throw new Error(`fixture failed (${res.status}): ${res.stderr}`);
  return { root, out: JSON.parse(line) };
}

describe('a driver running as an unprivileged user with a low RLIMIT_MEMLOCK', () => {
  it('fails to start a domain needing more locked memory, naming the operation and the privilege, leaving nothing', () => {
    const { root, out } = runAsUser('no-handler');
    expect(out).toMatchObject({
      uid,
      ok: false,
      code: 'ACCESS_DENIED',
      details: { operation: 'process.setMaxMemLock', capability: 'CAP_SYS_RESOURCE', errno: 'EPERM' },
    });
    expect(String(out['message'])).toMatch(/register a handler for process\.setMaxMemLock/);
    expect(runLeftovers(root)).toEqual([]);
    expect(processesMentioning(root)).toEqual([]);
  });

  it('starts it when a handler sets the limit in pre-exec, verified in /proc', () => {
    const { out } = runAsUser('handler');
    expect(out).toMatchObject({
      uid,
      ok: true,
      calls: [`pre-exec:${4 * 1024 * 1024}`],
      soft: String(4 * 1024 * 1024),
      hard: String(4 * 1024 * 1024),
      taints: ['internal-handler'],
    });
  });
});

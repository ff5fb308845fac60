import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { connect } from '../../src/stable/index.js';
import { killChild, runChild } from '../helpers/child.js';
import { removeRoot, tempRoot } from '../helpers/env.js';

const roots: string[] = [];
afterEach(() => {
  for (const r of roots.splice(0)) removeRoot(r);
});
const newRoot = () => {
  const r = tempRoot();
  roots.push(r);
  return r;
};

describe('connect', () => {
  it.each([
    ['not a uri', 'INVALID_URI'],
    ['qemu:///embed', 'INVALID_URI'],
    ['qemu:///embed?root=relative/path', 'INVALID_URI'],
    ['qemu:///system', 'INVALID_URI'],
    ['qemu://host/embed?root=/tmp/x', 'INVALID_URI'],
    ['xen:///embed?root=/tmp/x', 'INVALID_URI'],
    ['qemu:///embed?root=/tmp/x&color=red', 'INVALID_URI'],
  ])('rejects %s with %s', async (uri, code) => {
    await expect(connect(uri)).rejects.toMatchObject({ code, name: 'VirtError' });
  });

  it('creates the root layout', async () => {
    const root = newRoot();
    const conn = await connect(`qemu:///embed?root=${root}`);
    for (const dir of ['etc', 'run', 'log', 'lib']) expect(existsSync(join(root, dir))).toBe(true);
    await conn.close();
    await expect(conn.listDomains()).rejects.toMatchObject({ code: 'CONNECTION_CLOSED' });
  });

  it('allows one driver per root in this process, and again after close', async () => {
    const root = newRoot();
    const first = await connect(`qemu:///embed?root=${root}`);
    await expect(connect(`qemu:///embed?root=${root}`)).rejects.toMatchObject({
      code: 'ROOT_LOCKED',
      details: { pid: process.pid },
    });
    await first.close();
    const again = await connect(`qemu:///embed?root=${root}/`);
    await again.close();
  });

  it('names the pid of a driver holding the root in another process', async () => {
    const root = newRoot();
    const { child, value: holder } = await runChild(join(__dirname, '..', 'fixtures', 'driver-child.ts'), [
      root,
    ]);
    try {
      const err = await connect(`qemu:///embed?root=${root}`).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'ROOT_LOCKED', details: { pid: holder } });
      expect(String((err as Error).message)).toContain(`pid ${holder}`);
    } finally {
      await killChild(child);
    }
    // The kernel drops the lock with its holder.
    const conn = await connect(`qemu:///embed?root=${root}`);
    await conn.close();
  });

  it('keeps several roots open in one process', async () => {
    const a = await connect(`qemu:///embed?root=${newRoot()}`);
    const b = await connect(`qemu:///embed?root=${newRoot()}`);
    await Promise.all([a.close(), b.close()]);
  });
});

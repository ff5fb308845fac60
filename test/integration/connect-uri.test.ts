import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { connect } from '../../src/stable/index.js';
import { pausedOnly, removeRoot, tempRoot } from '../helpers/env.js';

const bases: string[] = [];
afterEach(() => {
  for (const b of bases.splice(0)) removeRoot(b);
});

/** A root under a fresh temporary directory whose last component is `name`. */
function rootNamed(name: string): { base: string; root: string } {
  const base = tempRoot('vk-uri-');
  bases.push(base);
  const root = join(base, name);
  mkdirSync(root);
  return { base, root };
}

describe('connect with roots that need percent-encoding', () => {
  it.each([
    ['an ampersand', 'a&b=c'],
    ['a hash', 'vm#1'],
    ['a percent sign and what looks like an escape', '50%2F%41%'],
    ['spaces and a plus', 'my vms + more'],
    ['all of them and non-ASCII', 'x&y #z %25 é+ q=1?'],
  ])('opens a root containing %s at exactly that path', async (_, name) => {
    const { base, root } = rootNamed(name);
    const conn = await connect(`qemu:///embed?root=${encodeURIComponent(root)}`);
    try {
      for (const dir of ['etc', 'run', 'log', 'lib']) expect(existsSync(join(root, dir))).toBe(true);
      // Nothing was created at a truncated or half-decoded path beside it.
      expect(readdirSync(base)).toEqual([name]);
      const dom = await conn.defineDomain(pausedOnly(`uri-${process.pid}`));
      expect(readdirSync(join(root, 'etc', 'domains'))).toContain(`${dom.name}.json`);
    } finally {
      await conn.close();
    }
    // The lock is per root, whatever the spelling of the URI.
    const again = await connect(`qemu:///embed?root=${encodeURIComponent(`${root}/`)}`);
    await expect(
      (async () => {
        const c = await connect(`qemu:///embed?root=${encodeURIComponent(root)}`);
        await c.close();
      })(),
    ).rejects.toMatchObject({ code: 'ROOT_LOCKED' });
    await again.close();
  });

  it('refuses an unencoded # instead of opening a truncated root', async () => {
    const { base, root } = rootNamed('vm#1');
    await expect(connect(`qemu:///embed?root=${root}`)).rejects.toMatchObject({ code: 'INVALID_URI' });
    expect(readdirSync(base)).toEqual(['vm#1']);
    expect(readdirSync(root)).toEqual([]);
  });

  it('refuses an unencoded & that splits the root into another parameter', async () => {
    const { root } = rootNamed('a&b');
    await expect(connect(`qemu:///embed?root=${root}`)).rejects.toMatchObject({ code: 'INVALID_URI' });
    expect(readdirSync(root)).toEqual([]);
  });
});

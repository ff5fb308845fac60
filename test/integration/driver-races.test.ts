/*
 * Races between queued operations of one domain, and hostile typed input (issue 11, defects 3
 * and 11): every outcome is typed, and nothing runs for a domain that no longer exists.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Connection } from '../../src/stable/index.js';
import {
  definitionFiles,
  openRoot,
  pausedOnly,
  processesMentioning,
  removeRoot,
  runLeftovers,
  tempRoot,
} from '../helpers/env.js';
import { leftovers, NOTHING_LEFT, virtErrorOf } from '../helpers/hostile.js';

let root: string;
let conn: Connection;

beforeAll(async () => {
  root = tempRoot('vk-races-');
  conn = await openRoot(root);
});

afterAll(async () => {
  await conn.close();
  removeRoot(root);
});

describe('undefine racing start', () => {
  it('a start queued behind an undefine fails with NO_DOMAIN and runs no QEMU', async () => {
    const dom = await conn.defineDomain(pausedOnly(`race-${process.pid}`));
    const undefine = dom.undefine();
    const start = dom.start({ paused: true });
    await undefine;
    const err = await virtErrorOf(() => start);
    expect(err.code).toBe('NO_DOMAIN');
    expect(await conn.listDomains()).toEqual([]);
    expect(processesMentioning(dom.uuid)).toEqual([]);
    expect(await leftovers(root, dom.uuid)).toEqual(NOTHING_LEFT);
    expect(definitionFiles(root)).toEqual([]);
  });

  it('every operation queued behind an undefine fails with NO_DOMAIN', async () => {
    const dom = await conn.defineDomain(pausedOnly(`race2-${process.pid}`));
    const undefine = dom.undefine();
    const queued = [
      dom.start(),
      dom.suspend(),
      dom.resume(),
      dom.shutdown({ timeoutMs: 100 }),
      dom.destroy(),
      dom.undefine(),
    ];
    await undefine;
    for (const op of queued) expect((await virtErrorOf(() => op)).code).toBe('NO_DOMAIN');
    expect(processesMentioning(dom.uuid)).toEqual([]);
  });

  it('a start queued before the undefine wins: the undefine is refused while it runs', async () => {
    const dom = await conn.defineDomain(pausedOnly(`race3-${process.pid}`));
    const start = dom.start({ paused: true });
    const undefine = dom.undefine();
    await start;
    expect((await virtErrorOf(() => undefine)).code).toBe('OPERATION_INVALID');
    expect((await conn.listDomains()).map((d) => d.uuid)).toContain(dom.uuid);
    await dom.destroy();
    await dom.undefine();
    expect(await leftovers(root, dom.uuid)).toEqual(NOTHING_LEFT);
    expect(runLeftovers(root)).toEqual([]);
  });
});

describe('hostile typed definitions', () => {
  it('an object whose getter throws gets XML_ERROR, never the getter’s own error', async () => {
    class Boom extends Error {}
    const def = {
      ...pausedOnly(`getter-${process.pid}`),
      get memoryKiB(): number {
        throw new Boom('gotcha');
      },
    };
    const err = await virtErrorOf(() => conn.defineDomain(def));
    expect(err.code).toBe('XML_ERROR');
    expect(err.cause).toBeInstanceOf(Boom);
    expect(definitionFiles(root)).toEqual([]);
  });

  it('a proxy whose traps throw gets XML_ERROR', async () => {
    const def = new Proxy(pausedOnly(`proxy-${process.pid}`), {
      get() {
        throw new TypeError('trap');
      },
      ownKeys() {
        throw new TypeError('trap');
      },
    });
    const err = await virtErrorOf(() => conn.defineDomain(def));
    expect(err.code).toBe('XML_ERROR');
  });
});

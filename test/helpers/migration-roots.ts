import { afterEach, beforeEach } from 'vitest';
import type { Connection } from '../../src/stable/index.js';
import { openRoot, removeRoot, tempRoot } from './env.js';

/** A migration's two ends on this host: a fresh embedded root and connection for each, per test. */
export interface MigrationRoots {
  /** The source's root. */
  readonly rootA: string;
  /** The destination's root. */
  readonly rootB: string;
  /** The source's connection; a test that closed it (to hand root A to another process) sets the new one. */
  src: Connection;
  /** The destination's connection; settable like {@link MigrationRoots.src}. */
  dst: Connection;
}

/**
 * Registers the hooks of {@link MigrationRoots}: roots `<prefix>-a-…` and `<prefix>-b-…` opened
 * before each test; after it, the domains still active on either side destroyed, both connections
 * closed and both roots removed.
 */
export function useMigrationRoots(prefix: string): MigrationRoots {
  let ends: { rootA: string; rootB: string; src: Connection; dst: Connection } | undefined;
  const current = () => {
    if (ends === undefined) throw new Error('no migration roots outside a test');
    return ends;
  };
  beforeEach(async () => {
    const rootA = tempRoot(`${prefix}-a-`);
    const rootB = tempRoot(`${prefix}-b-`);
    ends = { rootA, rootB, src: await openRoot(rootA), dst: await openRoot(rootB) };
  });
  afterEach(async () => {
    const { rootA, rootB, src, dst } = current();
    for (const conn of [src, dst]) {
      for (const dom of await conn.listDomains({ state: 'active' })) await dom.destroy({ graceMs: 1000 });
      await conn.close();
    }
    removeRoot(rootA);
    removeRoot(rootB);
    ends = undefined;
  });
  return {
    get rootA(): string {
      return current().rootA;
    },
    get rootB(): string {
      return current().rootB;
    },
    get src(): Connection {
      return current().src;
    },
    set src(conn: Connection) {
      current().src = conn;
    },
    get dst(): Connection {
      return current().dst;
    },
    set dst(conn: Connection) {
      current().dst = conn;
    },
  };
}

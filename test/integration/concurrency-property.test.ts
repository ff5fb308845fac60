/*
 * Property-based concurrency (issue 11): random operations on several domains, all issued at once
 * from one connection. Every result is a success or a typed VirtError with a known code; afterwards
 * the state each domain reports matches /proc (an active domain is exactly its one QEMU process,
 * an inactive or undefined one has none), and nothing is orphaned.
 */
import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Connection, type Domain, ErrorCode, VirtError } from '../../src/stable/index.js';
import {
  openRoot,
  pausedOnly,
  processesMentioning,
  removeRoot,
  runLeftovers,
  tempRoot,
} from '../helpers/env.js';
import { leftovers, NOTHING_LEFT } from '../helpers/hostile.js';

const DOMAINS = 3;
const defs = Array.from({ length: DOMAINS }, (_, i) => ({
  ...pausedOnly(`prop-${i}-${process.pid}`),
  uuid: randomUUID(),
}));
const KNOWN_CODES = new Set<string>(Object.values(ErrorCode));

let root: string;
let conn: Connection;

beforeAll(async () => {
  root = tempRoot('vk-prop-');
  conn = await openRoot(root);
});

afterAll(async () => {
  for (const def of defs) for (const pid of processesMentioning(def.uuid)) process.kill(pid, 'SIGKILL');
  await conn.close();
  removeRoot(root);
});

type Op =
  | 'define'
  | 'undefine'
  | 'start'
  | 'startPaused'
  | 'suspend'
  | 'resume'
  | 'destroy'
  | 'shutdown'
  | 'info';
/** Weighted towards the operations whose interleavings matter most (start against undefine). */
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.constant<Op>('startPaused'), weight: 4 },
  { arbitrary: fc.constant<Op>('undefine'), weight: 3 },
  {
    arbitrary: fc.constantFrom<Op>('define', 'start', 'suspend', 'resume', 'destroy', 'shutdown', 'info'),
    weight: 5,
  },
);

async function handle(i: number): Promise<Domain> {
  // A stable handle even for an undefined domain: its operations then fail with NO_DOMAIN.
  try {
    return await conn.lookupDomain(defs[i]!.uuid);
  } catch {
    return (await conn.defineDomain(defs[i]!)) as Domain;
  }
}

function perform(dom: Domain, i: number, op: Op): Promise<unknown> {
  switch (op) {
    case 'define':
      return conn.defineDomain(defs[i]!);
    case 'undefine':
      return dom.undefine();
    case 'start':
      return dom.start();
    case 'startPaused':
      return dom.start({ paused: true });
    case 'suspend':
      return dom.suspend();
    case 'resume':
      return dom.resume();
    case 'destroy':
      return dom.destroy({ graceMs: 1_000 });
    case 'shutdown':
      // The firmware-only guest never powers off: a typed timeout, or NO_DOMAIN/OPERATION_INVALID.
      return dom.shutdown({ timeoutMs: 200 });
    case 'info':
      return dom.getInfo();
  }
}

/** Reported state against /proc: active exactly when its QEMU runs, with the reported pid. */
async function checkReality(): Promise<void> {
  for (const def of defs) {
    const found = (await conn.listDomains()).find((d) => d.uuid === def.uuid);
    const info = found ? await found.getInfo() : undefined;
    const procs = processesMentioning(def.uuid);
    if (info && info.state !== 'shutoff') {
      expect(procs).toEqual([info.pid]);
    } else {
      expect(procs).toEqual([]);
    }
  }
}

describe('random concurrent operations on several domains', () => {
  it('every result is typed, reported state equals /proc, nothing is orphaned', {
    timeout: 600_000,
  }, async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ dom: fc.integer({ min: 0, max: DOMAINS - 1 }), op: opArb }), {
          minLength: 3,
          maxLength: 10,
        }),
        async (steps) => {
          const handles = await Promise.all(defs.map((_, i) => handle(i)));
          // All issued in one synchronous sweep: they race exactly as an application's calls would.
          const results = await Promise.allSettled(steps.map((s) => perform(handles[s.dom]!, s.dom, s.op)));
          for (const r of results) {
            if (r.status === 'rejected') {
              expect(r.reason).toBeInstanceOf(VirtError);
              expect(KNOWN_CODES.has((r.reason as VirtError).code)).toBe(true);
            }
          }
          await checkReality();
          // Clean slate for the next run: everything destroyed, nothing left behind.
          for (const dom of await conn.listDomains({ state: 'active' }))
            await dom.destroy({ graceMs: 1_000 });
          for (const def of defs) expect(await leftovers(root, def.uuid)).toEqual(NOTHING_LEFT);
          expect(runLeftovers(root)).toEqual([]);
        },
      ),
      { numRuns: 20 },
    );
  });
});

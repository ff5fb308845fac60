import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { VirtError } from '../../src/errors.js';
import {
  attachFds,
  checkClientMessage,
  checkServerMessage,
  clientMessageSchema,
  decodePayload,
  detachFds,
  encodeFrame,
  errorFromWire,
  errorToWire,
  FrameReader,
  MAX_FRAME_BYTES,
  parseJson,
  responseSchema,
  serverMessageSchema,
  stringify,
} from '../../src/internal/privd/protocol.js';

const header = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};

describe('framing', () => {
  it('round-trips any split of a sequence of frames', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ type: fc.constant('x'), n: fc.integer(), s: fc.string() }), {
          minLength: 1,
          maxLength: 5,
        }),
        fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 10 }),
        (messages, cuts) => {
          const stream = Buffer.concat(messages.map((m) => encodeFrame(m)));
          const reader = new FrameReader();
          const out: unknown[] = [];
          let at = 0;
          for (let i = 0; at < stream.length; i++) {
            const size = cuts[i % cuts.length] as number;
            for (const p of reader.push(stream.subarray(at, at + size))) out.push(decodePayload(p));
            at += size;
          }
          expect(out).toEqual(messages);
          expect(reader.pending).toBe(false);
        },
      ),
    );
  });

  it('rejects a zero length and a length above the limit, before buffering the payload', () => {
    expect(() => new FrameReader().push(header(0))).toThrow(/outside 1\.\.65536/);
    expect(() => new FrameReader().push(header(MAX_FRAME_BYTES + 1))).toThrow(VirtError);
    expect(() => new FrameReader().push(Buffer.from([0xff, 0xff, 0xff, 0xff]))).toThrow(/frame length/);
    expect(new FrameReader().push(header(MAX_FRAME_BYTES))).toEqual([]);
  });

  it('refuses to encode a message larger than a frame', () => {
    expect(() => encodeFrame({ s: 'x'.repeat(MAX_FRAME_BYTES) })).toThrow(/exceeds the frame limit/);
  });

  it('accepts only UTF-8 JSON objects as payloads', () => {
    expect(() => decodePayload(Buffer.from('{nope'))).toThrow(/not valid JSON/);
    expect(() => decodePayload(Buffer.from('[1]'))).toThrow(/not a JSON object/);
    expect(() => decodePayload(Buffer.from('null'))).toThrow(/not a JSON object/);
    expect(() => decodePayload(Buffer.from([0x7b, 0xff, 0x7d]))).toThrow(/UTF-8/);
    expect(decodePayload(Buffer.from('{"a":1}'))).toEqual({ a: 1 });
  });
});

describe('values', () => {
  it('tags bigints explicitly and restores them', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), (n) => {
        const text = stringify({ bytes: n, unlimited: 'unlimited' });
        expect(text).toContain(`{"$bigint":"${n}"}`);
        expect(parseJson(text)).toEqual({ bytes: n, unlimited: 'unlimited' });
      }),
    );
    // A malformed tag stays an object, for the schema to reject.
    expect(parseJson('{"b":{"$bigint":"12a"}}')).toEqual({ b: { $bigint: '12a' } });
    expect(parseJson('{"b":{"$bigint":"1","x":2}}')).toEqual({ b: { $bigint: '1', x: 2 } });
    // The tag spelt with escapes is the same key to JSON, so it is the same tag.
    expect(parseJson('{"b":{"\\u0024bigint":"7"}}')).toEqual({ b: 7n });
    expect(parseJson('{"b":{"$big\\u0069nt":"8"}}')).toEqual({ b: 8n });
    // Without a bigint, the same text as with one's replacer; a value JSON cannot carry still throws.
    expect(stringify({ a: [1, 'x', null], b: { c: true } })).toBe('{"a":[1,"x",null],"b":{"c":true}}');
    const cyclic: Record<string, unknown> = { n: 1n };
    cyclic['self'] = cyclic;
    expect(() => stringify(cyclic)).toThrow(TypeError);
  });

  it('moves descriptors out of results and back in by index', () => {
    const tap = detachFds({ ifname: 'vk0', fds: [17, 18] });
    expect(tap).toEqual({ value: { ifname: 'vk0', fds: [{ $fd: 0 }, { $fd: 1 }] }, fds: [17, 18] });
    expect(attachFds(tap.value, [40, 41])).toEqual({ ifname: 'vk0', fds: [40, 41] });
    const file = detachFds({ fd: 9 });
    expect(file).toEqual({ value: { fd: { $fd: 0 } }, fds: [9] });
    expect(detachFds(undefined)).toEqual({ value: undefined, fds: [] });
    expect(() => attachFds({ fd: { $fd: 1 } }, [40])).toThrow(/names descriptor 1, but 1 came/);
  });

  it('carries errors with their code and details', () => {
    const wire = errorToWire(new VirtError('ACCESS_DENIED', 'no', { rule: 'memlock.maxBytes', bytes: 5n }));
    expect(wire).toEqual({
      code: 'ACCESS_DENIED',
      message: 'no',
      details: { rule: 'memlock.maxBytes', bytes: 5n },
    });
    const back = errorFromWire(wire);
    expect(back).toMatchObject({
      code: 'ACCESS_DENIED',
      details: { rule: 'memlock.maxBytes', via: 'virtkit-privd' },
    });
    expect(errorToWire(new Error('boom'))).toEqual({ code: 'HANDLER_FAILED', message: 'boom', details: {} });
  });
});

describe('message schemas', () => {
  const ctx = {
    domain: { uuid: 'u', name: 'n', id: null },
    phase: 'pre-exec',
    pid: null,
    deadline: 1,
  };

  it('accepts hello and well-formed requests, and nothing else', () => {
    expect(clientMessageSchema.safeParse({ type: 'hello', protocol: 1, apiVersion: '1.0' }).success).toBe(
      true,
    );
    expect(
      clientMessageSchema.safeParse({ type: 'request', id: 1, op: 'net.openTap', ctx, args: {} }).success,
    ).toBe(true);
    for (const bad of [
      { type: 'request', id: 1, op: 'process.kill', ctx, args: {} },
      { type: 'request', id: -1, op: 'net.openTap', ctx, args: {} },
      { type: 'request', id: 1, op: 'net.openTap', ctx: { ...ctx, phase: 'whenever' }, args: {} },
      { type: 'request', id: 1, op: 'net.openTap', ctx, args: {}, extra: true },
      { type: 'mystery' },
    ]) {
      expect(clientMessageSchema.safeParse(bad).success).toBe(false);
    }
  });

  it('judges a message of the helper as the union of hello, error and response would', () => {
    const error = { code: 'ACCESS_DENIED', message: 'm', details: {} };
    const hello = {
      type: 'hello',
      protocol: 1,
      apiVersion: '1.0',
      server: 's',
      peer: { pid: 1, uid: 0, gid: 0 },
    };
    const cases: [unknown, boolean][] = [
      [hello, true],
      [{ ...hello, extra: 1 }, false],
      [{ type: 'error', error }, true],
      [{ type: 'error', error, fds: 0 }, false],
      [{ type: 'response', id: 1, ok: true, fds: 0 }, true],
      [{ type: 'response', id: 1, ok: true, result: { a: 1 }, fds: 2 }, true],
      [{ type: 'response', id: 1, ok: false, error, fds: 0 }, true],
      [{ type: 'response', id: 1, ok: false, fds: 0 }, false],
      [{ type: 'response', id: 1, ok: 'yes', fds: 0 }, false],
      [{ type: 'response', id: 1, fds: 0 }, false],
      [{ type: 'mystery' }, false],
      [{}, false],
      [null, false],
      ['hello', false],
    ];
    for (const [msg, ok] of cases)
      expect([msg, serverMessageSchema(msg).safeParse(msg).success]).toEqual([msg, ok]);
  });

  it('lets an error response carry no descriptors', () => {
    const error = { code: 'ACCESS_DENIED', message: 'm', details: {} };
    expect(responseSchema.safeParse({ type: 'response', id: 1, ok: false, error, fds: 0 }).success).toBe(
      true,
    );
    expect(responseSchema.safeParse({ type: 'response', id: 1, ok: false, error, fds: 1 }).success).toBe(
      false,
    );
    expect(
      responseSchema.safeParse({
        type: 'response',
        id: 1,
        ok: false,
        error: { ...error, code: 'NOPE' },
        fds: 0,
      }).success,
    ).toBe(false);
  });
});

describe('the hand-written checks of requests and responses', () => {
  const request = {
    type: 'request',
    id: 7,
    op: 'thread.setScheduler',
    ctx: {
      domain: { uuid: '00000000-0000-4000-8000-000000000000', name: 'vm', id: 3 },
      phase: 'startup',
      pid: 42,
      deadline: 1e12,
    },
    args: { pid: 42, threads: [] },
  };
  const error = { code: 'ACCESS_DENIED', message: 'm', details: { rule: 'x' } };
  const responses = [
    { type: 'response', id: 1, ok: true, fds: 0 },
    { type: 'response', id: 2, ok: true, result: { ifname: 'vk0', fds: [{ $fd: 0 }] }, fds: 1 },
    { type: 'response', id: 3, ok: false, error, fds: 0 },
  ];

  /** A copy of `base` with the value at `path` replaced, removed (`del`), or a key added beside it. */
  function mutate(base: unknown, path: string[], how: 'set' | 'del' | 'add', value: unknown): unknown {
    const copy = structuredClone(base) as Record<string, unknown>;
    let at = copy;
    for (const k of path.slice(0, -1)) {
      const next = at[k];
      if (typeof next !== 'object' || next === null) return copy;
      at = next as Record<string, unknown>;
    }
    const last = path[path.length - 1] as string;
    if (how === 'set') at[last] = value;
    else if (how === 'del') delete at[last];
    else at[`${last}X`] = value;
    return copy;
  }

  const paths = (v: unknown, prefix: string[] = []): string[][] =>
    typeof v === 'object' && v !== null && !Array.isArray(v)
      ? Object.entries(v).flatMap(([k, x]) => [[...prefix, k], ...paths(x, [...prefix, k])])
      : [];

  const value = fc.oneof(
    fc.anything({ maxDepth: 2, maxKeys: 3 }),
    fc.constantFrom(
      -1,
      -0,
      0,
      1.5,
      2 ** 53,
      Number.MAX_SAFE_INTEGER,
      Number.NaN,
      Number.POSITIVE_INFINITY,
      null,
      'x'.repeat(65),
      'x'.repeat(1025),
      'request',
      'response',
      'hello',
      'release',
      'whenever',
      'net.openTap',
      'ACCESS_DENIED',
      'NOPE',
      true,
      false,
      [],
      {},
      Object.create(null) as object,
    ),
  );

  it('accept a request exactly when the schema does, and return what it would', () => {
    const where = paths(request);
    fc.assert(
      fc.property(
        fc.constantFrom(...where),
        fc.constantFrom('set', 'del', 'add') as fc.Arbitrary<'set' | 'del' | 'add'>,
        value,
        (path, how, v) => {
          const m = mutate(request, path, how, v);
          const zod = clientMessageSchema.safeParse(m);
          const mine = checkClientMessage(m);
          expect(mine.ok).toBe(zod.success);
          if (mine.ok && zod.success) expect(mine.message).toEqual(zod.data);
        },
      ),
      { numRuns: 1500 },
    );
    expect(checkClientMessage(request)).toEqual({ ok: true, message: request });
    expect(checkClientMessage({ type: 'hello', protocol: 1, apiVersion: '1.0' }).ok).toBe(true);
    expect(checkClientMessage({ ...request, id: -1 })).toEqual({
      ok: false,
      error: expect.stringMatching(/^id: /),
    });
  });

  it('accept a response exactly when the schema does, and return what it would', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...responses),
        fc.nat(),
        fc.constantFrom('set', 'del', 'add') as fc.Arbitrary<'set' | 'del' | 'add'>,
        value,
        (base, pick, how, v) => {
          const where = paths(base);
          const m = mutate(base, where[pick % where.length] as string[], how, v);
          const zod = serverMessageSchema(m).safeParse(m);
          const mine = checkServerMessage(m);
          expect(mine !== undefined).toBe(zod.success);
          if (mine && zod.success) expect(mine).toEqual(zod.data);
        },
      ),
      { numRuns: 1500 },
    );
    for (const r of responses) expect(checkServerMessage(r)).toEqual(r);
    expect(checkServerMessage({ type: 'response', id: 1, ok: false, error, fds: 1 })).toBeUndefined();
  });
});

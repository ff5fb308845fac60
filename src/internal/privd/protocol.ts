/**
 * The wire protocol between `delegate()` and `virtkit-privd`.
 *
 * Framing: every message is one frame, a 4-byte big-endian payload length followed by that many
 * bytes of UTF-8 JSON; a length of 0 or above {@link MAX_FRAME_BYTES} is a protocol error that
 * closes the connection. Values JSON has no type for are tagged explicitly: a bigint is
 * `{"$bigint":"<decimal>"}`, and a file descriptor in a result is `{"$fd":<index>}`, the index of
 * the descriptor among those sent with that frame (`SCM_RIGHTS`, attached to the frame's first byte).
 *
 * Conversation: the client sends `hello` (protocol version and internal API version); the helper
 * answers `hello` (with the peer credentials it saw) or `error`, then closes on a mismatch. Then
 * any number of `request`s, each answered by one `response` with the same id, in any order.
 *
 * @internal
 * @packageDocumentation
 */

import { z } from 'zod';
import { ErrorCode, VirtError } from '../../errors.js';
import { OPERATIONS, type OperationName, PHASES } from '../../privileged/operations.js';

/** The version of this protocol; both sides must speak the same. */
export const PROTOCOL_VERSION = 1;

/** The largest payload of one frame. */
export const MAX_FRAME_BYTES = 64 * 1024;

/** The length prefix of a frame. */
export const FRAME_HEADER_BYTES = 4;

/** Which ErrorCode values may cross the wire (anything else arrives as HANDLER_FAILED). */
const ERROR_CODES = Object.values(ErrorCode) as [string, ...string[]];

// ---------------------------------------------------------------------------------------------------------
// Value encoding
// ---------------------------------------------------------------------------------------------------------

const tagBigint = (_key: string, v: unknown): unknown =>
  typeof v === 'bigint' ? { $bigint: v.toString() } : v;

/** JSON.stringify with bigints tagged; anything JSON cannot carry otherwise is rejected by JSON itself. */
export function stringify(value: unknown): string {
  // A replacer takes JSON.stringify off its fast path (twice the time of a whole request's
  // encoding). Without one, a bigint throws a TypeError, and only then is the replacer needed; a
  // value that has no bigint comes out the same either way.
  try {
    return JSON.stringify(value);
  } catch (err) {
    if (!(err instanceof TypeError)) throw err;
    return JSON.stringify(value, tagBigint);
  }
}

const untagBigint = (_key: string, v: unknown): unknown => {
  if (isTagged(v, '$bigint')) {
    const s = v['$bigint'];
    if (typeof s === 'string' && /^-?\d{1,40}$/.test(s)) return BigInt(s);
  }
  return v;
};

function isTagged(value: unknown, tag: string): value is Record<string, unknown> {
  return (
    typeof value === 'object' &&
    value !== null &&
    !Array.isArray(value) &&
    Object.keys(value).length === 1 &&
    tag in value
  );
}

/**
 * JSON.parse with `{"$bigint": "…"}` turned back into bigints. A malformed tag stays an object, and
 * the schema validation that follows every decode rejects it.
 */
export function parseJson(text: string): unknown {
  // A reviver triples the cost of JSON.parse. A key "$bigint" is in the text either as is or
  // spelt with a \u escape (JSON has no other escape for "$" or a letter): without both, no tag.
  return text.includes('$bigint') || text.includes('\\u') ? JSON.parse(text, untagBigint) : JSON.parse(text);
}

/** Replaces each `{"$fd": i}` in a value by `fds[i]`; throws when an index has no descriptor. */
export function attachFds(value: unknown, fds: readonly number[]): unknown {
  if (isTagged(value, '$fd')) {
    const i = value['$fd'];
    const fd = typeof i === 'number' && Number.isInteger(i) ? fds[i] : undefined;
    if (fd === undefined) {
      throw new VirtError(
        ErrorCode.SYSTEM_ERROR,
        `the helper's response names descriptor ${String(i)}, but ${fds.length} came with it`,
      );
    }
    return fd;
  }
  if (Array.isArray(value)) return value.map((v) => attachFds(v, fds));
  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, attachFds(v, fds)]));
  }
  return value;
}

/**
 * Splits the descriptors out of an operation's result: `{fd}` and `{fds}` become `$fd` tags, in the
 * order the descriptors must be sent.
 */
export function detachFds(result: unknown): { value: unknown; fds: number[] } {
  const fds: number[] = [];
  const tag = (fd: unknown) => {
    fds.push(fd as number);
    return { $fd: fds.length - 1 };
  };
  if (typeof result !== 'object' || result === null) return { value: result, fds };
  const r = result as Record<string, unknown>;
  const value: Record<string, unknown> = { ...r };
  if (typeof r['fd'] === 'number') value['fd'] = tag(r['fd']);
  if (Array.isArray(r['fds'])) value['fds'] = r['fds'].map(tag);
  return { value, fds };
}

// ---------------------------------------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------------------------------------

/**
 * A frame that is not acceptable: the connection it came on is closed.
 *
 * @internal
 */
export class ProtocolError extends VirtError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super(ErrorCode.SYSTEM_ERROR, message, { ...details, protocol: PROTOCOL_VERSION });
    this.name = 'VirtError';
  }
}

/** One message as a frame. */
export function encodeFrame(message: object): Buffer {
  const text = stringify(message);
  const length = Buffer.byteLength(text, 'utf8');
  if (length > MAX_FRAME_BYTES) {
    throw new ProtocolError(`a message of ${length} bytes exceeds the frame limit of ${MAX_FRAME_BYTES}`);
  }
  const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + length);
  frame.writeUInt32BE(length, 0);
  frame.write(text, FRAME_HEADER_BYTES, 'utf8');
  return frame;
}

const EMPTY = Buffer.alloc(0);

/**
 * Cuts a byte stream into frame payloads. Bytes are kept only up to one frame, so a peer cannot
 * make it buffer more than {@link MAX_FRAME_BYTES} plus a chunk.
 */
export class FrameReader {
  #buffered: Buffer = EMPTY;

  /**
   * Adds bytes; returns the payloads completed by them. Throws {@link ProtocolError} on a bad length.
   * A payload may be a view of `chunk` itself (no copy is made of frames that arrive whole), so it
   * is valid only until `chunk` is reused: decode it before the next read into that buffer. Only
   * an incomplete frame's bytes are copied and kept.
   */
  push(chunk: Buffer): Buffer[] {
    // Joined with what was kept, the bytes are a new buffer of ours; alone, they are the caller's.
    const joined = this.#buffered.length !== 0;
    let data = joined ? Buffer.concat([this.#buffered, chunk]) : chunk;
    const out: Buffer[] = [];
    for (;;) {
      if (data.length >= FRAME_HEADER_BYTES) {
        const length = data.readUInt32BE(0);
        if (length === 0 || length > MAX_FRAME_BYTES) {
          this.#buffered = EMPTY;
          throw new ProtocolError(`frame length ${length} is outside 1..${MAX_FRAME_BYTES}`, { length });
        }
        if (data.length >= FRAME_HEADER_BYTES + length) {
          out.push(data.subarray(FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + length));
          data = data.subarray(FRAME_HEADER_BYTES + length);
          continue;
        }
      }
      // What is left is part of a frame: kept as a copy, since `chunk` is about to be reused.
      this.#buffered = data.length === 0 ? EMPTY : joined ? data : Buffer.from(data);
      return out;
    }
  }

  /** True while part of a frame is waiting for the rest. */
  get pending(): boolean {
    return this.#buffered.length > 0;
  }
}

/** Stateless between calls (no `stream` option), so one serves every frame. */
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Parses a payload as one JSON object, or throws {@link ProtocolError}. */
export function decodePayload(payload: Buffer): unknown {
  let text: string;
  try {
    text = utf8.decode(payload);
  } catch {
    throw new ProtocolError('a frame is not valid UTF-8');
  }
  let value: unknown;
  try {
    value = parseJson(text);
  } catch {
    throw new ProtocolError('a frame is not valid JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ProtocolError('a frame is not a JSON object');
  }
  return value;
}

// ---------------------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------------------

const wireError = z.strictObject({
  code: z.enum(ERROR_CODES),
  message: z.string(),
  details: z.record(z.string(), z.unknown()),
});

/** An error as it crosses the wire. */
export type WireError = z.infer<typeof wireError>;

/** The first message of the client. */
export const clientHelloSchema = z.strictObject({
  type: z.literal('hello'),
  protocol: z.number().int(),
  apiVersion: z.string().max(32),
  client: z.string().max(128).optional(),
});

/** The request context: the InvocationContext without its AbortSignal. */
export const wireContextSchema = z.strictObject({
  domain: z.strictObject({
    uuid: z.string().max(64),
    name: z.string().max(1024),
    id: z.number().int().nullable(),
  }),
  phase: z.enum(PHASES),
  pid: z.number().int().positive().nullable(),
  deadline: z.number().finite(),
});

/** The request context as it crosses the wire. */
export type WireContext = z.infer<typeof wireContextSchema>;

/** One invocation. `args` is validated against the operation's own schema once the op is known. */
export const requestSchema = z.strictObject({
  type: z.literal('request'),
  id: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  op: z.enum(OPERATIONS as [OperationName, ...OperationName[]]),
  ctx: wireContextSchema,
  args: z.unknown(),
});

/** Anything a client may send. */
export const clientMessageSchema = z.discriminatedUnion('type', [clientHelloSchema, requestSchema]);

/** A request, as validated. */
export type WireRequest = z.infer<typeof requestSchema>;

/** The helper's greeting. */
export const serverHelloSchema = z.strictObject({
  type: z.literal('hello'),
  protocol: z.number().int(),
  apiVersion: z.string(),
  server: z.string(),
  peer: z.strictObject({ pid: z.number().int(), uid: z.number().int(), gid: z.number().int() }),
});

/** A refusal of the whole connection (bad version, peer not allowed); the helper closes after it. */
export const connectionErrorSchema = z.strictObject({ type: z.literal('error'), error: wireError });

/** The answer to one request. `fds` counts the descriptors attached to this frame. */
export const responseSchema = z.union([
  z.strictObject({
    type: z.literal('response'),
    id: z.number().int().nonnegative(),
    ok: z.literal(true),
    result: z.unknown().optional(),
    fds: z.number().int().min(0).max(253),
  }),
  z.strictObject({
    type: z.literal('response'),
    id: z.number().int().nonnegative(),
    ok: z.literal(false),
    error: wireError,
    fds: z.literal(0),
  }),
]);

/** Anything the helper may send. */
export type ServerMessage =
  | z.infer<typeof serverHelloSchema>
  | z.infer<typeof connectionErrorSchema>
  | z.infer<typeof responseSchema>;

const responseOkSchema = responseSchema.options[0];
const responseErrorSchema = responseSchema.options[1];

/**
 * The schema of a message from the helper, picked by its `type` (and `ok`): the same verdict as
 * a union of the three, without a union's cost of building the issues of every member that does
 * not match, several microseconds per response.
 */
export function serverMessageSchema(raw: unknown): z.ZodType<ServerMessage> {
  const m = (typeof raw === 'object' && raw !== null ? raw : {}) as Record<string, unknown>;
  switch (m['type']) {
    case 'hello':
      return serverHelloSchema;
    case 'error':
      return connectionErrorSchema;
    default:
      return m['ok'] === false ? responseErrorSchema : responseOkSchema;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Checking messages on the hot path
// ---------------------------------------------------------------------------------------------------------

/*
 * Every request and every response is checked. The zod schemas above are the definition; a zod
 * parse of a request costs a few microseconds (a strict object is walked generically, every field
 * through its checks, and a new object is built), which is a visible part of a round trip of about
 * 100 µs. The functions below check the two messages of the steady state, a request and a
 * response, by hand: they accept a subset of what the schema accepts (a property test holds them
 * to that) and leave everything else, hello and anything they do not accept, to the schema, which
 * then gives the verdict and its message. So they can only be faster, never more lenient.
 */

const OPERATION_SET: ReadonlySet<string> = new Set(OPERATIONS);
const PHASE_SET: ReadonlySet<string> = new Set(PHASES);
const ERROR_CODE_SET: ReadonlySet<string> = new Set(ERROR_CODES);

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** True when every enumerable key of `v` is an own key listed in `allowed` (a strict object's rule). */
function keysWithin(v: Record<string, unknown>, allowed: ReadonlySet<string>): boolean {
  for (const k in v) if (!Object.hasOwn(v, k) || !allowed.has(k)) return false;
  return true;
}

const isInt = (v: unknown): v is number => Number.isSafeInteger(v);
const isShortString = (v: unknown, max: number): v is string => typeof v === 'string' && v.length <= max;

const REQUEST_KEYS: ReadonlySet<string> = new Set(['type', 'id', 'op', 'ctx', 'args']);
const CONTEXT_KEYS: ReadonlySet<string> = new Set(['domain', 'phase', 'pid', 'deadline']);
const DOMAIN_KEYS: ReadonlySet<string> = new Set(['uuid', 'name', 'id']);

/** A request that certainly passes {@link requestSchema} (false: let the schema judge it). */
function isPlainRequest(m: Record<string, unknown>): boolean {
  if (m['type'] !== 'request' || !('args' in m) || !keysWithin(m, REQUEST_KEYS)) return false;
  const id = m['id'];
  if (!isInt(id) || id < 0 || typeof m['op'] !== 'string' || !OPERATION_SET.has(m['op'])) return false;
  const ctx = m['ctx'];
  if (!isRecord(ctx) || !keysWithin(ctx, CONTEXT_KEYS)) return false;
  const { domain, phase, pid, deadline } = ctx;
  if (typeof phase !== 'string' || !PHASE_SET.has(phase)) return false;
  if (pid !== null && !(isInt(pid) && pid > 0)) return false;
  if (typeof deadline !== 'number' || !Number.isFinite(deadline)) return false;
  if (!isRecord(domain) || !keysWithin(domain, DOMAIN_KEYS)) return false;
  return (
    isShortString(domain['uuid'], 64) &&
    isShortString(domain['name'], 1024) &&
    (domain['id'] === null || isInt(domain['id']))
  );
}

/** A message of a client: the validated message, or what is wrong with it (path and message). */
export type ClientMessageCheck =
  | { readonly ok: true; readonly message: z.infer<typeof clientMessageSchema> }
  | { readonly ok: false; readonly error: string };

/**
 * Checks what a client sent: the verdict of {@link clientMessageSchema}, a request checked by hand
 * (the message itself is returned, not a copy).
 */
export function checkClientMessage(raw: unknown): ClientMessageCheck {
  if (isRecord(raw) && isPlainRequest(raw)) return { ok: true, message: raw as WireRequest };
  const parsed = clientMessageSchema.safeParse(raw);
  if (parsed.success) return { ok: true, message: parsed.data };
  const issue = parsed.error.issues[0];
  return { ok: false, error: `${issue?.path.join('.') || '(root)'}: ${issue?.message}` };
}

const RESPONSE_OK_KEYS: ReadonlySet<string> = new Set(['type', 'id', 'ok', 'result', 'fds']);
const RESPONSE_ERROR_KEYS: ReadonlySet<string> = new Set(['type', 'id', 'ok', 'error', 'fds']);
const WIRE_ERROR_KEYS: ReadonlySet<string> = new Set(['code', 'message', 'details']);

/** A response that certainly passes {@link responseSchema} (false: let the schema judge it). */
function isPlainResponse(m: Record<string, unknown>): boolean {
  if (m['type'] !== 'response' || !isInt(m['id']) || m['id'] < 0) return false;
  const fds = m['fds'];
  if (m['ok'] === true) return isInt(fds) && fds >= 0 && fds <= 253 && keysWithin(m, RESPONSE_OK_KEYS);
  if (m['ok'] !== false || fds !== 0 || !keysWithin(m, RESPONSE_ERROR_KEYS)) return false;
  const e = m['error'];
  return (
    isRecord(e) &&
    keysWithin(e, WIRE_ERROR_KEYS) &&
    typeof e['code'] === 'string' &&
    ERROR_CODE_SET.has(e['code']) &&
    typeof e['message'] === 'string' &&
    isRecord(e['details']) &&
    Object.getPrototypeOf(e['details']) === Object.prototype
  );
}

/**
 * Checks what the helper sent: the verdict of {@link serverMessageSchema}, a response checked by
 * hand (the message itself is returned, not a copy); undefined when it is malformed.
 */
export function checkServerMessage(raw: unknown): ServerMessage | undefined {
  if (isRecord(raw) && isPlainResponse(raw)) return raw as ServerMessage;
  const parsed = serverMessageSchema(raw).safeParse(raw);
  return parsed.success ? parsed.data : undefined;
}

/** An error as it crosses the wire: VirtErrors keep code and details, anything else is HANDLER_FAILED. */
export function errorToWire(err: unknown): WireError {
  if (VirtError.is(err)) {
    let details: Record<string, unknown> = {};
    try {
      // Plain data only (bigints survive as tags): a detail JSON cannot carry must not break the answer.
      details = parseJson(stringify(err.details ?? {})) as Record<string, unknown>;
    } catch {
      details = { unserializable: true };
    }
    return { code: err.code, message: err.message, details };
  }
  return {
    code: ErrorCode.HANDLER_FAILED,
    message: err instanceof Error ? err.message : String(err),
    details: {},
  };
}

/** Rebuilds the VirtError the helper reported. */
export function errorFromWire(error: WireError): VirtError {
  return new VirtError(error.code as ErrorCode, `virtkit-privd: ${error.message}`, {
    ...error.details,
    via: 'virtkit-privd',
  });
}

import { z } from 'zod';
import { ErrorCode, VirtError, type VirtErrorDetails } from '../../errors.js';

/*
 * The control socket's wire format: one JSON object per line in each direction. A request names
 * the protocol version, an id the client chooses and an operation of the table in operations.ts;
 * every reply carries the request's id. A subscription (`events`) is answered once and then sends
 * one `event` line per domain event with the same id until the connection closes.
 */

/** The protocol version; a request with another one is refused naming both. */
export const CONTROL_PROTOCOL_VERSION = 1;

/** The longest line either side accepts: a definition (1 MiB of XML, 2 MiB of JSON) fits twice. */
export const MAX_LINE_BYTES = 4 * 1024 * 1024;

/** The file name of the control socket under `<root>/run`. */
export const CONTROL_SOCKET_NAME = 'control.sock';

/** A request as it must arrive. */
export const requestSchema = z.strictObject({
  v: z.number().int(),
  id: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  op: z.string().min(1).max(64),
  args: z.record(z.string(), z.unknown()).optional(),
});

/** A well-formed request. */
export type ControlRequest = z.infer<typeof requestSchema>;

/** A typed error on the wire. */
export interface WireError {
  readonly code: string;
  readonly message: string;
  readonly details: Record<string, unknown>;
}

/** One line the server sends. */
export type ControlReply =
  | { readonly v: number; readonly id: number | null; readonly ok: true; readonly result: unknown }
  | { readonly v: number; readonly id: number | null; readonly ok: false; readonly error: WireError }
  | { readonly v: number; readonly id: number; readonly event: unknown };

/** A reply as the client accepts it. */
export const replySchema = z.union([
  z.strictObject({ v: z.number(), id: z.number().nullable(), ok: z.literal(true), result: z.unknown() }),
  z.strictObject({
    v: z.number(),
    id: z.number().nullable(),
    ok: z.literal(false),
    error: z.strictObject({
      code: z.string(),
      message: z.string(),
      details: z.record(z.string(), z.unknown()),
    }),
  }),
  z.strictObject({ v: z.number(), id: z.number(), event: z.unknown() }),
]);

const KNOWN_CODES = new Set<string>(Object.values(ErrorCode));

/** Any error as a wire error; what is not a VirtError is not described beyond its code. */
export function errorToWire(err: unknown): WireError {
  if (VirtError.is(err)) {
    return { code: err.code, message: err.message, details: jsonSafe(err.details) };
  }
  return {
    code: ErrorCode.INTERNAL_ERROR,
    message: 'the driver failed to serve the request; see its log',
    details: {},
  };
}

/** A wire error as a VirtError; a code this copy does not know becomes INTERNAL_ERROR. */
export function errorFromWire(error: WireError): VirtError {
  const code = KNOWN_CODES.has(error.code) ? (error.code as ErrorCode) : ErrorCode.INTERNAL_ERROR;
  return new VirtError(code, error.message, error.details as VirtErrorDetails);
}

/** The details with every bigint as a string and anything unserialisable left out. */
function jsonSafe(details: VirtErrorDetails): Record<string, unknown> {
  try {
    return JSON.parse(
      JSON.stringify(details, (_, v) => (typeof v === 'bigint' ? v.toString() : v)),
    ) as Record<string, unknown>;
  } catch {
    return {};
  }
}

/** A protocol violation by the peer. */
export function protocolError(message: string, details: VirtErrorDetails = {}): VirtError {
  return new VirtError(ErrorCode.PROTOCOL_ERROR, message, {
    ...details,
    protocol: CONTROL_PROTOCOL_VERSION,
  });
}

/**
 * Splits a byte stream into lines, refusing one longer than {@link MAX_LINE_BYTES} before it has
 * been buffered in full.
 */
export class LineReader {
  #parts: Buffer[] = [];
  #pending = 0;
  readonly #limit: number;

  constructor(limit = MAX_LINE_BYTES) {
    this.#limit = limit;
  }

  /** True while part of a line has arrived without its end. */
  get pending(): boolean {
    return this.#pending > 0;
  }

  /** The complete lines in `chunk` (with what came before); throws PROTOCOL_ERROR for an oversized one. */
  push(chunk: Buffer): string[] {
    const lines: string[] = [];
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      if (nl < 0) break;
      if (this.#pending + nl - start > this.#limit) throw this.#oversized();
      this.#parts.push(chunk.subarray(start, nl));
      lines.push(Buffer.concat(this.#parts).toString('utf8'));
      this.#parts = [];
      this.#pending = 0;
      start = nl + 1;
    }
    if (start < chunk.length) {
      this.#pending += chunk.length - start;
      if (this.#pending > this.#limit) throw this.#oversized();
      this.#parts.push(Buffer.from(chunk.subarray(start)));
    }
    return lines;
  }

  #oversized(): VirtError {
    return protocolError(`a line exceeds the limit of ${this.#limit} bytes`, { limit: this.#limit });
  }
}

/**
 * Stable error codes. A code is part of the semver contract; the message is not.
 *
 * @public
 */
export const ErrorCode = {
  /** No domain with that name or uuid is defined. */
  NO_DOMAIN: 'NO_DOMAIN',
  /** The operation is not valid in the domain's current state (e.g. resume of a running domain). */
  OPERATION_INVALID: 'OPERATION_INVALID',
  /** A definition, XML document or input value is malformed or fails validation. */
  XML_ERROR: 'XML_ERROR',
  /** The input is well-formed but asks for something virtkit does not support. */
  CONFIG_UNSUPPORTED: 'CONFIG_UNSUPPORTED',
  /** An operation did not finish before its deadline. */
  OPERATION_TIMEOUT: 'OPERATION_TIMEOUT',
  /** An operation failed (QEMU refused it, QEMU died, a command failed). */
  OPERATION_FAILED: 'OPERATION_FAILED',
  /** Another operation holds the domain and this one could not wait for it. */
  OPERATION_CONFLICT: 'OPERATION_CONFLICT',
  /** A system call or file operation failed. */
  SYSTEM_ERROR: 'SYSTEM_ERROR',
  /** The operation needs a privilege the process does not have, or a policy denied it. */
  ACCESS_DENIED: 'ACCESS_DENIED',
  /** The connection URI is malformed or names an unknown driver. */
  INVALID_URI: 'INVALID_URI',
  /** Another driver already holds the embedded root. */
  ROOT_LOCKED: 'ROOT_LOCKED',
  /** The connection is closed. */
  CONNECTION_CLOSED: 'CONNECTION_CLOSED',
  /** A domain with that name or uuid already exists. */
  DOMAIN_EXISTS: 'DOMAIN_EXISTS',
  /** A QEMU binary or another required host component is missing. */
  NO_SUPPORT: 'NO_SUPPORT',
  /** The consumer of `virtkit/internal` was written against another internal API version. */
  INTERNAL_VERSION_MISMATCH: 'INTERNAL_VERSION_MISMATCH',
  /** A privileged-operation handler threw, rejected or returned a malformed result. */
  HANDLER_FAILED: 'HANDLER_FAILED',
  /** A handler for that operation is already registered. */
  HANDLER_ALREADY_REGISTERED: 'HANDLER_ALREADY_REGISTERED',
  /** Handlers are fixed once the driver has started a domain. */
  HANDLERS_SEALED: 'HANDLERS_SEALED',
  /** A privileged operation claimed success but its effect is not visible. */
  POSTCONDITION_FAILED: 'POSTCONDITION_FAILED',
  /**
   * The caller aborted the operation (its `signal`, or `Domain.abortJob()`); what it had done was
   * rolled back.
   */
  ABORTED: 'ABORTED',
  /** A peer of the control socket broke its protocol (a malformed or oversized line, another version). */
  PROTOCOL_ERROR: 'PROTOCOL_ERROR',
  /** An invariant of virtkit itself was broken; please report it. */
  INTERNAL_ERROR: 'INTERNAL_ERROR',
} as const;

/**
 * One of the stable error codes in {@link (ErrorCode:variable)}.
 *
 * @public
 */
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/**
 * Structured details attached to a {@link VirtError}. Every field is optional; which ones are set
 * depends on the code.
 *
 * @public
 */
export interface VirtErrorDetails {
  /** The domain the error concerns. */
  readonly domain?: { readonly name: string; readonly uuid: string };
  /** The input field or XML path that was rejected, e.g. `vcpu.count` or `/domain/devices/graphics`. */
  readonly path?: string;
  /** The internal privileged operation, e.g. `process.setMaxMemLock`. */
  readonly operation?: string;
  /** The phase of the domain life cycle in which the error happened. */
  readonly phase?: string;
  /** A Linux capability the failed operation needed. */
  readonly capability?: string;
  /** The errno name of a failed system call, e.g. `EPERM`. */
  readonly errno?: string;
  /** The QMP error class, when QEMU refused a command. */
  readonly qmpClass?: string;
  /** The pid concerned, e.g. the holder of a root lock or the QEMU process. */
  readonly pid?: number;
  /** 1-based line and column of an XML error. */
  readonly line?: number;
  /** 1-based column of an XML error. */
  readonly column?: number;
  /** Any other value worth showing, e.g. the versions of a handshake. */
  readonly [key: string]: unknown;
}

/**
 * The only error class virtkit throws. Match on {@link VirtError.code}, never on the message.
 *
 * @public
 */
export class VirtError extends Error {
  /** The stable code. */
  readonly code: ErrorCode;
  /** Structured details: the domain, path, operation, errno… */
  readonly details: VirtErrorDetails;

  /**
   * @param code - the stable code
   * @param message - what went wrong and what to do next
   * @param details - structured fields
   * @param options - the underlying cause, if any
   */
  constructor(
    code: ErrorCode,
    message: string,
    details: VirtErrorDetails = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'VirtError';
    this.code = code;
    this.details = details;
  }

  /** True when `value` is a VirtError, whichever copy of virtkit created it. */
  static is(value: unknown): value is VirtError {
    return (
      value instanceof VirtError ||
      (value instanceof Error &&
        value.name === 'VirtError' &&
        typeof (value as { code?: unknown }).code === 'string')
    );
  }
}

/** Wraps anything thrown into a VirtError, keeping VirtErrors as they are. @internal */
export function toVirtError(
  err: unknown,
  code: ErrorCode,
  message: string,
  details?: VirtErrorDetails,
): VirtError {
  if (VirtError.is(err)) return err;
  return new VirtError(code, `${message}: ${errorMessage(err)}`, details, { cause: err });
}

/** The message of anything thrown. @internal */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The errno name (`ENOENT`…) of a Node system error, if it is one. @internal */
export function errnoOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^E[A-Z0-9]+$/.test(code) ? code : undefined;
}

import { ErrorCode, VirtError } from '../errors.js';
import { OPERATIONS, type OperationHandler, type OperationName } from './operations.js';

/** The default deadline of a handler invocation. */
export const DEFAULT_HANDLER_TIMEOUT_MS = 30_000;

/**
 * Options of a handler registration.
 *
 * @public
 */
export interface HandlerOptions {
  /** How long the driver waits for the handler; default 30 000 ms. */
  readonly timeoutMs?: number;
}

/** A registered handler and how it came to be registered. */
export interface HandlerEntry<Op extends OperationName = OperationName> {
  readonly handler: OperationHandler<Op>;
  readonly timeoutMs: number;
  /** `setHandler` or the plugin module that supplied it: shown in errors and logs. */
  readonly source: string;
}

/**
 * The handlers of one driver: one per operation, fixed once the driver has started a domain.
 * It belongs to the driver, not to a connection, so its lifetime is the driver's.
 */
export class HandlerTable {
  readonly #entries = new Map<OperationName, HandlerEntry>();
  #sealedBy: string | undefined;

  /** Registers the handler of `op`; throws on an unknown operation, a second handler, or after sealing. */
  set<Op extends OperationName>(
    op: Op,
    handler: OperationHandler<Op>,
    options: HandlerOptions = {},
    source = 'setHandler',
  ): void {
    if (!OPERATIONS.includes(op)) {
      throw new VirtError(
        ErrorCode.CONFIG_UNSUPPORTED,
        `unknown operation '${String(op)}'; internal API 1.0 has ${OPERATIONS.join(', ')}`,
        { operation: String(op) },
      );
    }
    if (typeof handler !== 'function') {
      throw new VirtError(ErrorCode.OPERATION_INVALID, `the handler of ${op} must be a function`, {
        operation: op,
      });
    }
    const timeoutMs = options.timeoutMs ?? DEFAULT_HANDLER_TIMEOUT_MS;
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
      throw new VirtError(ErrorCode.OPERATION_INVALID, `timeoutMs of ${op} must be a positive number of ms`, {
        operation: op,
        path: 'timeoutMs',
      });
    }
    if (this.#sealedBy) {
      throw new VirtError(
        ErrorCode.HANDLERS_SEALED,
        `handlers are fixed once the driver has started a domain (${this.#sealedBy}); register ${op} before any start, or in a plugin`,
        { operation: op },
      );
    }
    const existing = this.#entries.get(op);
    if (existing) {
      throw new VirtError(
        ErrorCode.HANDLER_ALREADY_REGISTERED,
        `a handler for ${op} is already registered (by ${existing.source}); only one handler per operation is allowed`,
        { operation: op, source: existing.source },
      );
    }
    this.#entries.set(op, { handler: handler as OperationHandler<OperationName>, timeoutMs, source });
  }

  get<Op extends OperationName>(op: Op): HandlerEntry<Op> | undefined {
    return this.#entries.get(op) as HandlerEntry<Op> | undefined;
  }

  get size(): number {
    return this.#entries.size;
  }

  get sealed(): boolean {
    return this.#sealedBy !== undefined;
  }

  /** Fixes the table: called when the driver starts its first domain. */
  seal(reason: string): void {
    this.#sealedBy ??= reason;
  }
}

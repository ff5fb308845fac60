import type { HandlerTable } from './handler-table.js';

/**
 * Whom a built-in acts for: the domain and its QEMU process. The driver passes its
 * {@link InvocationScope}; the privileged helper builds one from a request, without a handler table.
 */
export interface BuiltinScope {
  readonly domain: { readonly uuid: string; readonly name: string; readonly id: number | null };
  readonly pid: number | undefined;
  /** The start time of `pid` recorded at launch: thread ids are verified against this very process. */
  readonly startTime?: bigint;
  readonly cgroupParent: string;
}

/** Where an invocation happens: the domain, its log, and where the `internal-handler` taint goes. */
export interface InvocationScope extends BuiltinScope {
  readonly handlers: HandlerTable;
  /** Taints of the domain being started or running; `internal-handler` is added on first use. */
  readonly taints: string[];
  /** Aborted when the domain is destroyed while the operation runs: the invocation fails at once. */
  readonly signal?: AbortSignal;
  log(message: string): void;
}

import { closeSync } from 'node:fs';
import { ErrorCode, errorMessage, VirtError } from '../errors.js';
import { channels, type HandlerMessage, traceAsync, tracing } from '../stable/tracing.js';
import { builtins } from './builtins.js';
import {
  type InvocationContext,
  type OperationArgs,
  type OperationName,
  type OperationResult,
  operationSchemas,
  type Phase,
} from './operations.js';
import { postchecks } from './postchecks.js';
import type { InvocationScope } from './scope.js';

export type { BuiltinScope, InvocationScope } from './scope.js';

/** The value of an operation's result, as validated (`undefined` for operations without one). */
export type Result<Op extends OperationName> = OperationResult<Op>;

const TAINT = 'internal-handler';

/**
 * What performs an operation without a handler, and what checks its effect afterwards: the real
 * system by default; the test driver passes a simulated one.
 */
export interface OperationBackend {
  builtin<Op extends OperationName>(
    op: Op,
    args: OperationArgs<Op>,
    scope: InvocationScope,
    phase?: Phase,
  ): Result<Op> | Promise<Result<Op>>;
  postcheck<Op extends OperationName>(
    op: Op,
    args: OperationArgs<Op>,
    result: Result<Op>,
    /** The invocation's scope: its pid's recorded start time is re-checked around per-thread readings. */
    scope?: InvocationScope,
  ): void | Promise<void>;
}

const systemBackend: OperationBackend = {
  builtin: (op, args, scope, phase) => builtins[op](args as never, scope, phase) as never,
  postcheck: (op, args, result, scope) => postchecks[op](args as never, result as never, scope),
};

/**
 * Performs one privileged operation: through its registered handler (with a deadline, an
 * AbortSignal, and validation of what it returns) or, without one, through the built-in fallback;
 * then checks from outside (/proc, fstat) that the effect really happened.
 */
export function invoke<Op extends OperationName>(
  scope: InvocationScope,
  op: Op,
  phase: Phase,
  args: OperationArgs<Op>,
  backend: OperationBackend = systemBackend,
): Promise<Result<Op>> {
  if (!tracing(channels.handler)) return perform(scope, op, phase, args, backend);
  const entry = scope.handlers.get(op);
  const message: HandlerMessage = {
    operation: op,
    phase,
    domain: { ...scope.domain },
    pid: scope.pid,
    via: entry ? 'handler' : 'built-in',
    source: entry ? entry.source : 'built-in',
    arguments: args,
  };
  return traceAsync(channels.handler, message, async () => {
    try {
      return await perform(scope, op, phase, args, backend, (outcome) => {
        message.outcome = outcome;
      });
    } catch (err) {
      message.outcome ??= 'failed';
      throw err;
    }
  });
}

type Outcome = NonNullable<HandlerMessage['outcome']>;

async function perform<Op extends OperationName>(
  scope: InvocationScope,
  op: Op,
  phase: Phase,
  args: OperationArgs<Op>,
  backend: OperationBackend,
  report: (outcome: Outcome) => void = () => undefined,
): Promise<Result<Op>> {
  const schema = operationSchemas[op];
  if (!(schema.phases as readonly string[]).includes(phase)) {
    throw new VirtError(ErrorCode.INTERNAL_ERROR, `${op} is not invoked in phase ${phase}`, {
      operation: op,
      phase,
    });
  }
  const entry = scope.handlers.get(op);
  const via = entry ? entry.source : 'built-in';
  const started = performance.now();
  const record = (outcome: string) =>
    scope.log(
      `internal: ${op} phase=${phase} via=${via} ${(performance.now() - started).toFixed(2)}ms ${outcome}`,
    );
  let result: Result<Op>;
  try {
    if (entry) {
      if (!scope.taints.includes(TAINT)) scope.taints.push(TAINT);
      result = await callHandler(scope, op, phase, args, entry.handler, entry.timeoutMs);
    } else {
      result = await backend.builtin(op, args, scope, phase);
    }
  } catch (err) {
    record(`failed: ${errorMessage(err)}`);
    report('failed');
    throw err;
  }
  try {
    await backend.postcheck(op, args, result, scope);
  } catch (err) {
    closeResultFds(result);
    record(`postcondition failed: ${errorMessage(err)}`);
    report('postcondition-failed');
    throw new VirtError(
      ErrorCode.POSTCONDITION_FAILED,
      `${op} (${via}, phase ${phase}) reported success but its effect is not there: ${errorMessage(err)}`,
      { operation: op, phase, domain: scope.domain },
      { cause: err },
    );
  }
  record('ok');
  report('ok');
  return result;
}

async function callHandler<Op extends OperationName>(
  scope: InvocationScope,
  op: Op,
  phase: Phase,
  args: OperationArgs<Op>,
  handler: (ctx: InvocationContext, args: OperationArgs<Op>) => unknown,
  timeoutMs: number,
): Promise<Result<Op>> {
  const controller = new AbortController();
  const deadline = Date.now() + timeoutMs;
  const ctx: InvocationContext = {
    domain: scope.domain,
    phase,
    pid: scope.pid,
    signal: controller.signal,
    deadline,
  };
  const details = { operation: op, phase, domain: scope.domain };
  let timer: NodeJS.Timeout | undefined;
  const cancelled = () => {
    const err = new VirtError(
      ErrorCode.OPERATION_FAILED,
      `${op} (phase ${phase}) was cancelled: the domain was destroyed`,
      details,
    );
    controller.abort(err);
    return err;
  };
  let onCancel: (() => void) | undefined;
  const expired = new Promise<never>((_, reject) => {
    onCancel = () => reject(cancelled());
    if (scope.signal?.aborted) onCancel();
    else scope.signal?.addEventListener('abort', onCancel, { once: true });
    timer = setTimeout(() => {
      const err = new VirtError(
        ErrorCode.OPERATION_TIMEOUT,
        `the handler of ${op} did not finish within ${timeoutMs} ms (phase ${phase})`,
        details,
      );
      controller.abort(err);
      reject(err);
    }, timeoutMs);
  });
  // The handler gets a copy: whatever it does to its arguments cannot change the driver's state.
  const call = Promise.resolve().then(() => handler(ctx, structuredClone(args)));
  let raw: unknown;
  try {
    raw = await Promise.race([call, expired]);
  } catch (err) {
    if (controller.signal.aborted) {
      // A handler that resolves after its deadline may have opened descriptors nobody will use.
      void call.then(closeResultFds, () => undefined);
      throw err;
    }
    controller.abort();
    throw handlerError(op, phase, err, details);
  } finally {
    clearTimeout(timer);
    if (onCancel) scope.signal?.removeEventListener('abort', onCancel);
  }
  const parsed = operationSchemas[op].result.safeParse(raw);
  if (!parsed.success) {
    closeResultFds(raw);
    const issue = parsed.error.issues[0];
    throw new VirtError(
      ErrorCode.HANDLER_FAILED,
      `the handler of ${op} returned a malformed result (${issue?.path.join('.') || 'result'}: ${issue?.message})`,
      details,
    );
  }
  return parsed.data as Result<Op>;
}

/**
 * A handler's failure. Refusals and timeouts reported by a delegate keep their code, so a policy
 * denial surfaces as ACCESS_DENIED; anything else is HANDLER_FAILED. The cause is always attached.
 */
function handlerError(op: string, phase: Phase, err: unknown, details: object): VirtError {
  const keep =
    VirtError.is(err) && (err.code === ErrorCode.ACCESS_DENIED || err.code === ErrorCode.OPERATION_TIMEOUT)
      ? err.code
      : ErrorCode.HANDLER_FAILED;
  return new VirtError(
    keep,
    `the handler of ${op} failed (phase ${phase}): ${errorMessage(err)}`,
    { ...details, ...(VirtError.is(err) ? { rule: err.details['rule'] } : {}) },
    { cause: err },
  );
}

/** Closes the descriptors carried by a result that will not be used. */
export function closeResultFds(result: unknown): void {
  const r = result as { fd?: unknown; fds?: unknown } | null | undefined;
  const fds = [r?.fd, ...(Array.isArray(r?.fds) ? r.fds : [])].filter(
    (fd): fd is number => typeof fd === 'number' && Number.isInteger(fd) && fd > 2,
  );
  for (const fd of fds) {
    try {
      closeSync(fd);
    } catch {
      // not ours or already closed
    }
  }
}

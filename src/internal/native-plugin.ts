/*
 * Native plugins: shared libraries with the C ABI of native/virtkit-internal.h. Loading runs
 * virtkit_plugin_init on the driver's thread (its registration calls come back into JavaScript);
 * every handler call runs on one of koffi's worker threads, so a slow plugin never blocks the
 * event loop. The handlers they register are ordinary entries of the handler table: the driver
 * applies the same deadlines, AbortSignals, schemas and post-checks to them.
 */

import { existsSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import koffi from 'koffi';
import { ErrorCode, errorMessage, VirtError } from '../errors.js';
import type { HandlerOptions } from '../privileged/handler-table.js';
import type {
  InvocationContext,
  OperationArgs,
  OperationHandler,
  OperationName,
} from '../privileged/operations.js';
import type { InternalSeam } from '../privileged/seam.js';
import { checkInternalVersion, INTERNAL_API_VERSION } from '../privileged/version.js';
import {
  abiTypes,
  CANCELLED_OFFSET,
  CallMemory,
  checkLayout,
  contextError,
  type Encoded,
  encodeContext,
  handlerProto,
  marshals,
  REGISTRATIONS,
} from './native-abi.js';

const EPROTO = osConstants.errno.EPROTO;
const EINVAL = osConstants.errno.EINVAL;
const EEXIST = osConstants.errno.EEXIST;

/**
 * Every library loaded, for the life of the process. A koffi library object that is garbage
 * collected may be unloaded (dlclose): the code of a handler that is still running on a worker
 * thread, or that the handler table will call later, would vanish under it. Plugins are never
 * unloaded.
 */
const loadedLibraries = new Map<string, ReturnType<typeof koffi.load>>();

/** True when a plugin specifier names a shared library rather than a JavaScript module. */
export function isNativePlugin(specifier: string): boolean {
  return /\.so(\.\d+)*$/.test(specifier);
}

/** The errno name of a (positive) errno value. */
function errnoName(errno: number): string {
  for (const [name, value] of Object.entries(osConstants.errno)) if (value === errno) return name;
  return `errno ${errno}`;
}

/**
 * A failure reported by a native handler: its negative errno and the message it wrote.
 *
 * @internal
 */
export class NativeHandlerError extends Error {
  /** The errno name, e.g. `EACCES`. */
  readonly code: string;
  /** The raw (positive) errno. */
  readonly errno: number;

  constructor(message: string, errno: number) {
    super(message);
    this.name = 'NativeHandlerError';
    this.errno = errno;
    this.code = errnoName(errno);
  }
}

type AsyncFn = ((...args: unknown[]) => number) & {
  async(...args: unknown[]): void;
};

/** A loaded plugin: its path, and how many of its calls the driver gave up on but that still run. */
class NativePlugin {
  readonly path: string;
  /** Calls cancelled (deadline, destroy) that have not returned: while any, the plugin is not called. */
  abandoned = 0;

  constructor(path: string) {
    this.path = path;
  }

  /** The JavaScript handler that calls the C function `fn` of `op`. */
  handler<Op extends OperationName>(op: Op, fnPtr: bigint, userData: bigint): OperationHandler<Op> {
    const marshal = marshals[op];
    const fn = koffi.decode(
      fnPtr,
      marshal.hasResult ? handlerProto.withResult : handlerProto.withoutResult,
    ) as AsyncFn;
    return ((ctx: InvocationContext, args: OperationArgs<Op>) =>
      this.#call(op, fn, userData, ctx, args)) as OperationHandler<Op>;
  }

  #call<Op extends OperationName>(
    op: Op,
    fn: AsyncFn,
    userData: bigint,
    ctx: InvocationContext,
    args: OperationArgs<Op>,
  ): Promise<unknown> {
    if (this.abandoned > 0) {
      throw new Error(
        `native plugin ${this.path} has not yet returned from a call the driver gave up on; it is not called again until it does`,
      );
    }
    ctx.signal.throwIfAborted();
    const mem = new CallMemory();
    let encoded: Encoded;
    let ctxPtr: bigint;
    try {
      // The deadline on CLOCK_MONOTONIC, which is libuv's (and so process.hrtime's) clock on Linux.
      const deadlineNs =
        process.hrtime.bigint() + BigInt(Math.max(0, ctx.deadline - Date.now())) * 1_000_000n;
      ctxPtr = encodeContext(mem, ctx, deadlineNs);
      encoded = (marshals[op] as { encode(m: CallMemory, a: OperationArgs<Op>): Encoded }).encode(mem, args);
    } catch (err) {
      mem.free();
      throw err;
    }
    let cancelled = false;
    const cancel = () => {
      if (cancelled) return;
      cancelled = true;
      this.abandoned++;
      koffi.encode(ctxPtr, CANCELLED_OFFSET, 'int32_t', 1);
    };
    ctx.signal.addEventListener('abort', cancel, { once: true });
    return new Promise((resolve, reject) => {
      const done = (err: unknown, rc: number) => {
        ctx.signal.removeEventListener('abort', cancel);
        if (cancelled) this.abandoned--;
        try {
          if (err) reject(err);
          else if (rc === 0) resolve(encoded.decode());
          else reject(this.#failure(op, rc, contextError(ctxPtr)));
        } catch (e) {
          reject(e);
        } finally {
          mem.free();
        }
      };
      const params = marshals[op].hasResult
        ? [userData, ctxPtr, encoded.args, encoded.result]
        : [userData, ctxPtr, encoded.args];
      try {
        fn.async(...params, done);
      } catch (err) {
        // koffi's queue of asynchronous calls is full.
        ctx.signal.removeEventListener('abort', cancel);
        mem.free();
        reject(err);
      }
    });
  }

  #failure(op: OperationName, rc: number, message: string): Error {
    if (rc > 0) {
      return new Error(
        `native plugin ${this.path} returned ${rc} from ${op}; handlers return 0 or a negative errno${message ? ` (${message})` : ''}`,
      );
    }
    const errno = -rc;
    return new NativeHandlerError(
      `${message || `native plugin ${this.path} failed`} (${errnoName(errno)})`,
      errno,
    );
  }
}

/**
 * Loads one native plugin and registers its handlers in the seam's table: the version it declares
 * must be ours (INTERNAL_VERSION_MISMATCH), each operation may have one handler
 * (HANDLER_ALREADY_REGISTERED), a missing file or a library without `virtkit_plugin_init` is
 * SYSTEM_ERROR or OPERATION_INVALID naming the path.
 */
export function loadNativePlugin(seam: InternalSeam, path: string): void {
  checkLayout();
  if (!existsSync(path)) {
    throw new VirtError(ErrorCode.SYSTEM_ERROR, `native plugin ${path} does not exist`, {
      path,
      errno: 'ENOENT',
    });
  }
  let init: (reg: bigint) => number;
  try {
    const lib = loadedLibraries.get(path) ?? koffi.load(path);
    loadedLibraries.set(path, lib);
    init = lib.func('virtkit_plugin_init', 'int', ['void *']) as (reg: bigint) => number;
  } catch (err) {
    const missing = /virtkit_plugin_init/.test(errorMessage(err));
    throw new VirtError(
      missing ? ErrorCode.OPERATION_INVALID : ErrorCode.SYSTEM_ERROR,
      missing
        ? `${path} is not a virtkit native plugin: it exports no virtkit_plugin_init (see native/virtkit-internal.h)`
        : `cannot load native plugin ${path}: ${errorMessage(err)}`,
      { path },
      { cause: err },
    );
  }
  const plugin = new NativePlugin(path);
  const source = `native plugin ${path}`;
  let declared: unknown;
  let versionOk = false;
  let firstError: unknown;
  const callbacks: bigint[] = [];
  const registrar = koffi.alloc(abiTypes.registrar, 1) as bigint;
  try {
    callbacks.push(
      koffi.register((_reg: bigint, version: string | null) => {
        declared = version;
        try {
          checkInternalVersion(version);
          versionOk = true;
          return 0;
        } catch {
          return -EPROTO;
        }
      }, koffi.pointer(abiTypes.declareProto)),
    );
    const members: Record<string, bigint> = {};
    for (const [member, op] of REGISTRATIONS) {
      const cb = koffi.register(
        (_reg: bigint, fn: bigint | null, userData: bigint | null, timeoutMs: number) => {
          if (!versionOk) return -EPROTO;
          if (!fn) return -EINVAL;
          try {
            const options: HandlerOptions = timeoutMs > 0 ? { timeoutMs } : {};
            seam.handlers.set(op, plugin.handler(op, fn, userData ?? 0n), options, source);
            return 0;
          } catch (err) {
            firstError ??= err;
            return VirtError.is(err) && err.code === ErrorCode.HANDLER_ALREADY_REGISTERED ? -EEXIST : -EINVAL;
          }
        },
        koffi.pointer(abiTypes.registerProto),
      );
      callbacks.push(cb);
      members[member] = cb;
    }
    koffi.encode(registrar, abiTypes.registrar, {
      struct_size: koffi.sizeof(abiTypes.registrar),
      host_api_version: INTERNAL_API_VERSION,
      declare_api_version: callbacks[0],
      ...members,
    });
    const rc = init(registrar);
    if (!versionOk) {
      if (declared === undefined) {
        throw new VirtError(
          ErrorCode.INTERNAL_VERSION_MISMATCH,
          `native plugin ${path} declared no internal API version; call VIRTKIT_PLUGIN_DECLARE_VERSION(reg) first in virtkit_plugin_init`,
          { path, requested: null, implemented: INTERNAL_API_VERSION },
        );
      }
      try {
        checkInternalVersion(declared);
      } catch (err) {
        const e = err as VirtError;
        throw new VirtError(e.code, `native plugin ${path}: ${e.message}`, { ...e.details, path });
      }
    }
    if (firstError) throw firstError;
    if (rc !== 0) {
      throw new VirtError(
        ErrorCode.HANDLER_FAILED,
        `native plugin ${path} refused to load: virtkit_plugin_init returned ${rc}${rc < 0 ? ` (${errnoName(-rc)})` : ''}`,
        { path },
      );
    }
  } finally {
    for (const cb of callbacks) koffi.unregister(cb);
    koffi.free(registrar);
  }
}

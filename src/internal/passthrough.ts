import { z } from 'zod';
import { ErrorCode, VirtError } from '../errors.js';
import type { InternalSeam, MonitorSeam, RawMonitorEvent } from '../privileged/seam.js';

/**
 * The domain a passthrough call concerns: a `Domain` of the same connection (anything carrying
 * its uuid).
 *
 * @public
 */
export interface MonitorTarget {
  /** The domain's uuid. */
  readonly uuid: string;
}

/**
 * Options of `InternalApi.monitorCommand`.
 *
 * @public
 */
export interface MonitorCommandOptions {
  /** How long to wait for QEMU's reply; default 30 000 ms. The command may still run after that. */
  readonly timeoutMs?: number;
  /**
   * Stops waiting for the domain's job or for the reply (the command may still run in QEMU once
   * sent); a modifying command's job then fails with `ABORTED`.
   */
  readonly signal?: AbortSignal;
}

/**
 * Options of `InternalApi.monitorEvents`.
 *
 * @public
 */
export interface MonitorEventsOptions {
  /** Ends the iteration when aborted. */
  readonly signal?: AbortSignal;
  /**
   * How many events may wait for the consumer; past that the iteration fails with
   * `OPERATION_FAILED` rather than grow without bound or drop events silently. Default 4096.
   */
  readonly maxBuffered?: number;
}

/**
 * A raw QMP event of a domain, exactly as QEMU sent it. QEMU runs guest code, so nothing in it is
 * checked or to be trusted.
 *
 * @public
 */
export interface MonitorEvent {
  /** The QMP event name, e.g. `STOP`, `RESUME`, `SHUTDOWN`, `DEVICE_DELETED`. */
  readonly event: string;
  /** The event's `data`; `{}` when QEMU sent none. */
  readonly data: Record<string, unknown>;
  /** QEMU's host-clock timestamp of the event. */
  readonly timestamp: { readonly seconds: number; readonly microseconds: number };
}

const commandSchema = z.object({
  // QMP command names: letters, digits, `-` and `_` (`query-status`, `qmp_capabilities`, `x-…`).
  command: z
    .string()
    .min(1)
    .max(128)
    .regex(/^[A-Za-z][A-Za-z0-9_-]*$/, 'a QMP command name (letters, digits, - and _)'),
  args: z.record(z.string(), z.unknown()).optional(),
  timeoutMs: z.number().positive().optional(),
});

const DEFAULT_MAX_BUFFERED = 4096;

function monitorOf(seam: InternalSeam): MonitorSeam {
  if (!seam.monitor) {
    throw new VirtError(
      ErrorCode.NO_SUPPORT,
      `the ${seam.driverKind} driver has no QEMU monitor to pass commands to; use qemu:///embed`,
    );
  }
  return seam.monitor;
}

function uuidOf(target: MonitorTarget): string {
  const uuid = (target as { uuid?: unknown } | null)?.uuid;
  if (typeof uuid !== 'string') {
    throw new VirtError(ErrorCode.XML_ERROR, 'the domain must be a Domain of this connection', {
      field: 'domain',
    });
  }
  return uuid;
}

function invalid(error: z.ZodError, prefix = ''): VirtError {
  const issue = error.issues[0];
  const field = `${prefix}${issue?.path.join('.') ?? ''}`;
  return new VirtError(ErrorCode.XML_ERROR, `invalid ${field || 'argument'}: ${issue?.message}`, { field });
}

/** `InternalApi.monitorCommand`: checks the input, then hands the command to the driver. */
export async function monitorCommand(
  seam: InternalSeam,
  target: MonitorTarget,
  command: string,
  args: Record<string, unknown> | undefined,
  options: MonitorCommandOptions,
): Promise<unknown> {
  const monitor = monitorOf(seam);
  const uuid = uuidOf(target);
  const parsed = commandSchema.safeParse({ command, args, timeoutMs: options.timeoutMs });
  if (!parsed.success) throw invalid(parsed.error);
  if (args !== undefined) {
    try {
      JSON.stringify(args);
    } catch (err) {
      throw new VirtError(
        ErrorCode.XML_ERROR,
        'invalid args: not representable as JSON',
        { field: 'args' },
        { cause: err },
      );
    }
  }
  return monitor.command(uuid, command, args, { timeoutMs: options.timeoutMs, signal: options.signal });
}

/**
 * `InternalApi.monitorEvents`: subscribes at once (so nothing between the call and the first
 * `next()` is missed) and buffers until the consumer reads.
 */
export function monitorEvents(
  seam: InternalSeam,
  target: MonitorTarget,
  options: MonitorEventsOptions,
): AsyncIterableIterator<MonitorEvent> {
  const monitor = monitorOf(seam);
  const uuid = uuidOf(target);
  const max = options.maxBuffered ?? DEFAULT_MAX_BUFFERED;
  if (!Number.isInteger(max) || max < 1) {
    throw new VirtError(ErrorCode.XML_ERROR, 'invalid maxBuffered: a positive integer', {
      field: 'maxBuffered',
    });
  }
  const { signal } = options;
  const queue: RawMonitorEvent[] = [];
  let ended = false;
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  let unsubscribe: (() => void) | undefined;
  const finish = (err?: Error): void => {
    if (ended) return;
    ended = true;
    failure = err;
    unsubscribe?.();
    signal?.removeEventListener('abort', onAbort);
    wake?.();
  };
  const onAbort = (): void => finish();
  unsubscribe = monitor.events(uuid, {
    event(ev) {
      if (ended) return;
      if (queue.length >= max) {
        finish(
          new VirtError(
            ErrorCode.OPERATION_FAILED,
            `more than ${max} QMP events waited for the consumer; read faster or raise maxBuffered`,
            { limit: max },
          ),
        );
        return;
      }
      queue.push(ev);
      wake?.();
    },
    end: (err) => finish(err),
  });
  if (ended) unsubscribe();
  if (signal?.aborted) finish();
  else signal?.addEventListener('abort', onAbort, { once: true });
  const iterator: AsyncIterableIterator<MonitorEvent> = {
    async next(): Promise<IteratorResult<MonitorEvent>> {
      for (;;) {
        const ev = queue.shift();
        if (ev) return { value: ev, done: false };
        if (ended) {
          if (failure) {
            const err = failure;
            failure = undefined;
            throw err;
          }
          return { value: undefined, done: true };
        }
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        wake = undefined;
      }
    },
    async return(): Promise<IteratorResult<MonitorEvent>> {
      finish();
      queue.length = 0;
      return { value: undefined, done: true };
    },
    [Symbol.asyncIterator]() {
      return iterator;
    },
  };
  return iterator;
}

/**
 * Options of `InternalApi.attach`.
 *
 * @public
 */
export interface AttachOptions {
  /** The pid of the running QEMU (`qemu-system-*`). */
  readonly pid: number;
  /** The absolute path of its QMP socket (`-qmp unix:PATH,server=on`); no other client may be connected. */
  readonly monitor: string;
  /** The domain's name when QEMU has none (`-name`); default QEMU's name, else `qemu-<pid>`. */
  readonly name?: string;
}

/**
 * The domain `InternalApi.attach` adopted. At run time it is the connection's `Domain`; it is
 * typed by name and uuid only so that `virtkit/internal` does not restate the stable API
 * (`conn.lookupDomain(uuid)` returns it typed).
 *
 * @public
 */
export interface AttachedDomain extends MonitorTarget {
  /** The domain's name. */
  readonly name: string;
}

/** `InternalApi.attach`: the driver checks the request, adopts the QEMU and names the new domain. */
export async function attach(
  seam: InternalSeam,
  options: AttachOptions,
): Promise<{ name: string; uuid: string }> {
  return monitorOf(seam).attach(options);
}

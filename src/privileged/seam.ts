import { ErrorCode, VirtError } from '../errors.js';
import type { HandlerTable } from './handler-table.js';
import { INTERNAL_API_VERSION } from './version.js';

/**
 * How the internal entry point reaches a driver: a property under a registry symbol, so that the
 * ESM and CJS builds (or two installed copies) find the same handler table instead of each
 * silently keeping its own. The stable entry point never exports it. `Connection` hands the seam on
 * under the same registry key (stable/driver.ts names it again, so that the public API does not
 * import the contract; a unit test checks that both are one symbol).
 */
export const INTERNAL_SEAM: unique symbol = Symbol.for('virtkit.internal.seam') as never;

/** Bumped whenever the shape of {@link InternalSeam} changes; a mismatch fails loudly. */
export const SEAM_VERSION = 2;

/** What a driver that accepts handlers exposes to the internal entry point. */
export interface InternalSeam {
  readonly seamVersion: number;
  /** The internal API version of the copy of virtkit that created the driver. */
  readonly internalApiVersion: string;
  readonly driverKind: 'qemu-embed' | 'test';
  readonly handlers: HandlerTable;
  /** QMP passthrough and adoption of foreign QEMU; absent on drivers without a QEMU monitor. */
  readonly monitor?: MonitorSeam;
}

/** A raw QMP event as the passthrough hands it on: untrusted, not validated beyond its framing. */
export interface RawMonitorEvent {
  readonly event: string;
  readonly data: Record<string, unknown>;
  readonly timestamp: { readonly seconds: number; readonly microseconds: number };
}

/** Where the events of one passthrough subscription go. */
export interface MonitorEventSink {
  event(ev: RawMonitorEvent): void;
  /** The subscription ended: the domain stopped, or the driver closed (`err` says why, if not). */
  end(err?: Error): void;
}

/** What `virtkit/internal` needs for `monitorCommand`, `monitorEvents` and `attach`. */
export interface MonitorSeam {
  command(
    uuid: string,
    command: string,
    args: Record<string, unknown> | undefined,
    options: { readonly timeoutMs?: number; readonly signal?: AbortSignal },
  ): Promise<unknown>;
  /** Subscribes; returns the unsubscribe function. Throws when the domain is not running. */
  events(uuid: string, sink: MonitorEventSink): () => void;
  /** Adopts a QEMU launched elsewhere as a new (transient) domain; the request is checked there. */
  attach(request: unknown): Promise<{ readonly name: string; readonly uuid: string }>;
}

/** A value that may carry a seam (a Connection or its driver). */
export interface SeamCarrier {
  readonly [INTERNAL_SEAM]?: InternalSeam;
}

/** Finds the seam of a connection, or explains why there is none. */
export function seamOf(target: unknown): InternalSeam {
  const seam = (target as SeamCarrier | null)?.[INTERNAL_SEAM];
  if (!seam) {
    throw new VirtError(
      ErrorCode.OPERATION_INVALID,
      'openInternal needs an open connection to the embedded driver (qemu:///embed?root=…) or the test driver (test:///default); remote or closed connections take no handlers',
    );
  }
  if (seam.seamVersion !== SEAM_VERSION || seam.internalApiVersion !== INTERNAL_API_VERSION) {
    throw new VirtError(
      ErrorCode.INTERNAL_VERSION_MISMATCH,
      `two copies of virtkit disagree: the connection was made by one implementing internal API ${seam.internalApiVersion} (seam ${seam.seamVersion}), ` +
        `this virtkit/internal implements ${INTERNAL_API_VERSION} (seam ${SEAM_VERSION}); install a single virtkit version`,
      { requested: INTERNAL_API_VERSION, implemented: seam.internalApiVersion },
    );
  }
  return seam;
}

import type { HandlerTable } from '../../privileged/handler-table.js';
import type { InvocationScope } from '../../privileged/invoke.js';
import type { DomainEventType, DomainStatus } from '../../stable/events.js';
import type { Announcement } from '../domain-core.js';
import type { DomainObject } from './domain-object.js';
import type { RootLayout } from './root.js';

/** What the start-up, life-cycle and reconnect steps need from the driver that runs them. */
export interface DriverContext {
  readonly layout: RootLayout;
  /** The next domain id; ids are never reused while a driver is open. */
  allocateId(): number;
  /** Records the event and tells subscribers. */
  emit(dom: DomainObject, type: DomainEventType, reason: string): void;
  /** The one owner of state transitions (src/drivers/domain-core.ts): records and announces. */
  setState(
    dom: DomainObject,
    next: DomainStatus,
    ...announce: readonly (DomainEventType | Announcement)[]
  ): void;
  /** Moves to `next` and announces it unless the domain already is in that state. */
  changeState(dom: DomainObject, next: DomainStatus, event: DomainEventType): boolean;
  /** Appends a driver record to the domain's log. */
  log(dom: DomainObject, message: string): void;
  /** The privileged-operation handlers of this driver. */
  readonly handlers: HandlerTable;
  /** The cgroup (relative to each hierarchy's root) under which the built-in manager works. */
  readonly cgroupParent: string;
}

/** The scope of privileged operations for one domain: its identity, pid, taints and log. */
export function scopeOf(
  ctx: DriverContext,
  dom: DomainObject,
  run:
    | {
        readonly id: number;
        readonly pid: number | undefined;
        readonly startTime?: bigint;
        readonly taints: string[];
        readonly cancel?: AbortController;
      }
    | undefined,
  taints: string[] = run?.taints ?? [],
): InvocationScope {
  return {
    handlers: ctx.handlers,
    domain: { uuid: dom.def.uuid, name: dom.def.name, id: run?.id ?? null },
    pid: run?.pid,
    startTime: run?.startTime,
    taints,
    cgroupParent: ctx.cgroupParent,
    signal: run?.cancel?.signal,
    log: (message) => ctx.log(dom, message),
  };
}

/** A promise with its resolve function, for hand-offs between the exit watcher and waiters. */
export function deferred<T>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/**
 * Waits for `promise` at most `ms`. The timer is ref'd on purpose: while an operation waits for
 * QEMU to exit, that wait must keep the event loop alive (the child itself is unref'd).
 */
export async function within<T>(promise: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<'timeout'>((r) => (timer = setTimeout(r, ms, 'timeout'))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The kind of a life-cycle event.
 *
 * @public
 */
export type DomainEventType =
  | 'defined'
  | 'undefined'
  | 'started'
  | 'suspended'
  | 'resumed'
  | 'stopped'
  | 'device-added'
  | 'device-removed'
  /** Something recorded about the domain cannot be read (reason `live-unreadable`); see the domain's log. */
  | 'definition-error';

/**
 * Why a domain stopped, as in libvirt's `VIR_DOMAIN_EVENT_STOPPED_*`.
 *
 * @public
 */
export type StoppedReason = 'shutdown' | 'destroyed' | 'crashed' | 'failed' | 'migrated';

/**
 * A life-cycle event of one domain.
 *
 * @public
 */
export interface DomainEvent {
  /** What happened. */
  readonly type: DomainEventType;
  /**
   * Why: for `stopped` one of {@link StoppedReason}; for `started` `booted` (`migrated` on the
   * destination of a migration, `attached` for a QEMU adopted through `virtkit/internal`); for
   * `suspended` `user` or `starting-up`; for `resumed` `unpaused`; for `defined` `added` or `updated`; for
   * `undefined` `removed`; for `definition-error` `live-unreadable` (a new driver found the
   * recorded live definition of a running domain unreadable, and left it as found).
   */
  readonly reason: string;
  /** The domain it concerns. */
  readonly domain: { readonly name: string; readonly uuid: string };
  /** When it happened, in milliseconds since the epoch. */
  readonly timestamp: number;
}

/**
 * The state of a domain, as in libvirt's `virDomainState`.
 *
 * @public
 */
export type DomainState = 'running' | 'paused' | 'shutdown' | 'shutoff';

/**
 * What `Domain.getInfo()` reports.
 *
 * @public
 */
export interface DomainInfo {
  /** The current state. */
  readonly state: DomainState;
  /** Why it is in that state (`booted`, `user`, `starting-up`, `shutdown`, `destroyed`, `crashed`, `failed`…). */
  readonly reason: string;
  /** The driver's id of the running domain; null while shut off. */
  readonly id: number | null;
  /** The QEMU process id; null while shut off. */
  readonly pid: number | null;
  /** Number of vCPUs. */
  readonly vcpus: number;
  /** Guest memory in KiB. */
  readonly memoryKiB: number;
  /** CPU time the QEMU process used, in nanoseconds; 0 while shut off. */
  readonly cpuTimeNs: bigint;
  /** Taints of the running domain, e.g. `custom-argv`, `internal-handler`. */
  readonly taints: readonly string[];
  /**
   * False for a transient domain ({@link Connection.createDomain}, or one adopted through
   * `virtkit/internal`): it has no persistent definition and is gone once it stops.
   */
  readonly persistent: boolean;
}

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
  /**
   * The guest was reset (libvirt's `VIR_DOMAIN_EVENT_ID_REBOOT`, from QEMU's `RESET`): reason
   * `guest` when the guest rebooted itself, `host` for a `reset()`, the reset that ends a
   * `reboot()` or a guest power-off with `on_poweroff='restart'`. The domain keeps running.
   */
  | 'rebooted'
  /**
   * The guest panicked (libvirt's `VIR_DOMAIN_EVENT_CRASHED`, reason `panicked`): a panic device
   * told QEMU; the domain's `on_crash` action follows (a `stopped`, `resumed` or nothing more).
   */
  | 'crashed'
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
   * `suspended` the {@link PausedReason} (`user`, `migration`, `ioerror`, `watchdog`, `crashed`,
   * `shutting-down`…); for `resumed` the {@link RunningReason} (`unpaused`, `migration-cancelled`…); for `defined` `added` or `updated`; for
   * `undefined` `removed`; for `rebooted` `guest` or `host`; for `definition-error` `live-unreadable` (a new driver found the
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
export type DomainState = 'running' | 'paused' | 'shutdown' | 'shutoff' | 'crashed';

/**
 * Why a domain runs, as in libvirt's `virDomainRunningReason`.
 *
 * @public
 */
export type RunningReason =
  | 'unknown'
  | 'booted'
  | 'migrated'
  | 'restored'
  | 'from-snapshot'
  | 'unpaused'
  | 'migration-cancelled'
  | 'save-cancelled'
  | 'wakeup'
  | 'crashed'
  | 'postcopy'
  | 'postcopy-failed';

/**
 * Why a domain is paused, as in libvirt's `virDomainPausedReason`: `user` after `suspend()` or a
 * paused start, `migration` while a migration holds it, `ioerror` after a disk error with
 * `error_policy='stop'`, `watchdog`, `crashed` after a guest panic, `shutting-down` after the guest
 * powered off, `starting-up` while the start sequence runs; `migrated` on the destination of a
 * migration whose source was paused (libvirt reports `user` there).
 *
 * @public
 */
export type PausedReason =
  | 'unknown'
  | 'user'
  | 'migration'
  | 'migrated'
  | 'save'
  | 'dump'
  | 'ioerror'
  | 'watchdog'
  | 'from-snapshot'
  | 'shutting-down'
  | 'snapshot'
  | 'crashed'
  | 'starting-up'
  | 'postcopy'
  | 'postcopy-failed'
  | 'api-error';

/**
 * Why a domain is shutting down, as in libvirt's `virDomainShutdownReason`.
 *
 * @public
 */
export type ShutdownReason = 'unknown' | 'user';

/**
 * Why a domain is shut off, as in libvirt's `virDomainShutoffReason`: every {@link StoppedReason},
 * or `unknown` for a domain that has not shut off since it was defined. The embedded driver keeps
 * the last reason of a persistent domain for the drivers that open its root later.
 *
 * @public
 */
export type ShutoffReason = StoppedReason | 'unknown' | 'saved' | 'from-snapshot' | 'daemon';

/**
 * Why a domain is crashed, as in libvirt's `virDomainCrashedReason`: `panicked` after a guest
 * panic with `on_crash='preserve'` (QEMU keeps the guest stopped where it panicked; destroy it).
 *
 * @public
 */
export type CrashedReason = 'unknown' | 'panicked';

/**
 * A state with its reason, typed per state (libvirt's `virDomainGetState`): narrowing on `state`
 * narrows `reason`.
 *
 * @public
 */
export type DomainStatus =
  | { readonly state: 'running'; readonly reason: RunningReason }
  | { readonly state: 'paused'; readonly reason: PausedReason }
  | { readonly state: 'shutdown'; readonly reason: ShutdownReason }
  | { readonly state: 'shutoff'; readonly reason: ShutoffReason }
  | { readonly state: 'crashed'; readonly reason: CrashedReason };

/**
 * The figures `Domain.getInfo()` reports besides the state.
 *
 * @public
 */
export interface DomainFigures {
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

/**
 * What `Domain.getInfo()` reports: the state with its reason ({@link DomainStatus}, typed per
 * state) and the domain's figures.
 *
 * @public
 */
export type DomainInfo = DomainStatus & DomainFigures;

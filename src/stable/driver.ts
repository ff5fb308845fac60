import type { Capabilities, DomainCapabilities, DomainCapabilitiesOptions } from './capabilities.js';
import type { DomainDefinition } from './definition/schema.js';
import type { DetachDeviceOptions, DeviceChangeOptions, DeviceDefinition, DeviceMatch } from './devices.js';
import type { DomainEvent, DomainInfo, DomainStatus } from './events.js';
import type { JobInfo, OperationOptions } from './jobs.js';
import type {
  MigratePerformOptions,
  MigratePrepareOptions,
  MigrationEndOptions,
  PreparedIncoming,
  ResolvedOffer,
} from './migration.js';

/*
 * The seam between the public API and a hypervisor driver, in the manner of Kysely's
 * Dialect/Driver: `Connection` and `Domain` hold no driver logic, every back-end implements this.
 * `Driver` and `DomainRef` are exported from `virtkit` as types only, tagged `@internal`, because
 * the declarations of `Connection` and `Domain` name them; no value of it is exported.
 */

/**
 * The key under which a driver that accepts privileged-operation handlers carries its seam for
 * `virtkit/internal`: the registry symbol of privileged/seam.ts, named here again so that the public
 * API need not import the seam's shape. The stable entry point never exports it.
 *
 * @internal
 */
export const INTERNAL_SEAM: unique symbol = Symbol.for('virtkit.internal.seam') as never;

/** A defined domain as the driver reports it. @internal */
export interface DomainRef {
  /** The domain's name. */
  readonly name: string;
  /** The domain's uuid. */
  readonly uuid: string;
  /** True while the domain runs (running or paused). */
  readonly active: boolean;
}

/** Options of `Domain.start`. @public */
export interface StartOptions extends OperationOptions {
  /** Leave the vCPUs paused after start-up (libvirt's `VIR_DOMAIN_START_PAUSED`). */
  readonly paused?: boolean;
}

/** Options of `Domain.shutdown`. @public */
export interface ShutdownOptions extends OperationOptions {
  /** How long to wait for the guest to power off; default 60 000 ms. */
  readonly timeoutMs?: number;
  /** When the guest does not power off in time, destroy it instead of failing with OPERATION_TIMEOUT. */
  readonly fallbackToDestroy?: boolean;
}

/** Options of `Domain.reboot`. @public */
export interface RebootOptions extends OperationOptions {
  /** How long to wait for the guest to power off and be reset; default 60 000 ms. */
  readonly timeoutMs?: number;
}

/** Options of `Domain.destroy`. @public */
export interface DestroyOptions {
  /** How long to wait after SIGTERM before SIGKILL (or, `graceful`, before failing); default 10 000 ms. */
  readonly graceMs?: number;
  /**
   * Only SIGTERM, never SIGKILL (virsh `destroy --graceful`, libvirt's
   * `VIR_DOMAIN_DESTROY_GRACEFUL`): when QEMU has not exited after `graceMs`, the domain is left
   * running and the call fails with `OPERATION_TIMEOUT`. A job under way is not aborted first (it
   * fails if QEMU exits). A domain still starting is refused with `OPERATION_INVALID`.
   */
  readonly graceful?: boolean;
}

/** Where and for whom a driver serves its control socket. @internal */
export interface ControlSocketSettings {
  /** The socket path: `<root>/run/control.sock`. */
  readonly path: string;
  /** Peer uids allowed besides the driver's own and root. */
  readonly uids: readonly number[];
}

/** What the source's driver reports when a migration begins. @internal */
export interface OutgoingMigration {
  /** The persistent definition. */
  readonly definition: DomainDefinition;
  /** The live definition. */
  readonly live: DomainDefinition;
  /** Whether the vCPUs run. */
  readonly running: boolean;
  /** The running domain's taints. */
  readonly taints: readonly string[];
}

/** The hypervisor driver behind a connection. @internal */
export interface Driver {
  /** The URI the driver was opened with. */
  readonly uri: string;
  /** Set when the driver was asked to serve a control socket on its root. */
  readonly controlSocket?: ControlSocketSettings | undefined;
  /** Records a line in the driver's own log, if it keeps one. */
  record?(message: string): void;
  /** Writes a resolved definition persistently (a new domain or an update of one). */
  defineDomain(def: DomainDefinition): Promise<DomainRef>;
  /**
   * Starts a transient domain (libvirt's `virDomainCreateXML`): no persistent definition, gone once
   * it stops; a start that fails leaves nothing behind.
   */
  createDomain(def: DomainDefinition, options: StartOptions): Promise<DomainRef>;
  /** Removes the persistent definition of an inactive domain. */
  undefineDomain(uuid: string, options?: OperationOptions): Promise<void>;
  /** The domain with that name or uuid, if one is defined. */
  findDomain(nameOrUuid: string): DomainRef | undefined;
  /** Every defined domain, sorted by name. */
  listDomains(): DomainRef[];
  /** The persistent definition, or the live one of a running domain when `live` is set. */
  getDefinition(uuid: string, live: boolean): DomainDefinition;
  /** State and resource figures of a domain. */
  getInfo(uuid: string): Promise<DomainInfo>;
  /** The state of a domain with its reason; never waits for a job. */
  getState(uuid: string): DomainStatus;
  /** Starts a domain. */
  start(uuid: string, options: StartOptions): Promise<void>;
  /** Pauses every vCPU of a running domain. */
  suspend(uuid: string, options?: OperationOptions): Promise<void>;
  /** Resumes a paused domain. */
  resume(uuid: string, options?: OperationOptions): Promise<void>;
  /** Asks the guest to reboot (ACPI power button, then a reset once it has powered off). */
  reboot(uuid: string, options?: RebootOptions): Promise<void>;
  /** Resets the machine at once, like its reset button. */
  reset(uuid: string, options?: OperationOptions): Promise<void>;
  /** Asks the guest to power off. */
  shutdown(uuid: string, options: ShutdownOptions): Promise<void>;
  /** Stops the domain's QEMU process at once. */
  destroy(uuid: string, options: DestroyOptions): Promise<void>;
  /** The job under way on the domain; never waits for it. */
  getJobInfo(uuid: string): JobInfo;
  /** Aborts the job under way (it rolls back and fails with ABORTED); OPERATION_INVALID without one. */
  abortJob(uuid: string): void;
  /** Calls `listener` with every domain event; returns the unsubscribe function. */
  subscribe(listener: (event: DomainEvent) => void): () => void;
  /** Releases the driver (its root lock, QMP connections); running domains keep running. */
  close(): Promise<void>;
  /** Migration, source side, step 1: the definitions and state the destination needs. */
  migrateBegin?(uuid: string): Promise<OutgoingMigration>;
  /** Migration, destination side, step 2: starts QEMU waiting for the stream. */
  migratePrepare?(offer: ResolvedOffer, options: MigratePrepareOptions): Promise<PreparedIncoming>;
  /** Migration, source side, step 3: sends the stream and waits for it to complete. */
  migratePerform?(uuid: string, uri: string, options: MigratePerformOptions): Promise<void>;
  /** Migration, destination side, step 4: waits for the stream, then resumes or rolls back. */
  migrateFinish?(uuid: string, options: MigrationEndOptions): Promise<void>;
  /** Migration, source side, step 5: ends the source QEMU, or resumes it when cancelled. */
  migrateConfirm?(uuid: string, options: MigrationEndOptions): Promise<void>;
  /** Attaches a device (hotplug and/or persistent); absent for a driver that cannot. */
  attachDevice?(uuid: string, device: DeviceDefinition, options: DeviceChangeOptions): Promise<void>;
  /** Detaches a device (hot-unplug and/or persistent); absent for a driver that cannot. */
  detachDevice?(uuid: string, match: DeviceMatch, options: DetachDeviceOptions): Promise<void>;
  /** Sets the number of online vCPUs (hotplug and/or persistent); absent for a driver that cannot. */
  setVcpus?(uuid: string, count: number, options: DeviceChangeOptions): Promise<void>;
  /** Host and guest capabilities; a driver without them leaves this out (`NO_SUPPORT`). */
  getCapabilities?(): Promise<Capabilities>;
  /** What the driver supports with one emulator; a driver without it leaves this out. */
  getDomainCapabilities?(options: DomainCapabilitiesOptions): Promise<DomainCapabilities>;
}

import type { DomainDefinition } from './definition/schema.js';
import type { DomainEvent, DomainInfo } from './events.js';

/*
 * The seam between the public API and a hypervisor driver, in the manner of Kysely's
 * Dialect/Driver: `Connection` and `Domain` hold no driver logic, every back-end implements this.
 * None of it is exported from the package entry points.
 */

/** A defined domain as the driver reports it. @internal */
export interface DomainRef {
  readonly name: string;
  readonly uuid: string;
  readonly active: boolean;
}

/** Options of `Domain.start`. @public */
export interface StartOptions {
  /** Leave the vCPUs paused after start-up (libvirt's `VIR_DOMAIN_START_PAUSED`). */
  readonly paused?: boolean;
}

/** Options of `Domain.shutdown`. @public */
export interface ShutdownOptions {
  /** How long to wait for the guest to power off; default 60 000 ms. */
  readonly timeoutMs?: number;
  /** When the guest does not power off in time, destroy it instead of failing with OPERATION_TIMEOUT. */
  readonly fallbackToDestroy?: boolean;
}

/** Options of `Domain.destroy`. @public */
export interface DestroyOptions {
  /** How long to wait after SIGTERM before SIGKILL; default 10 000 ms. */
  readonly graceMs?: number;
}

/** The hypervisor driver behind a connection. @internal */
export interface Driver {
  readonly uri: string;
  defineDomain(def: DomainDefinition): Promise<DomainRef>;
  undefineDomain(uuid: string): Promise<void>;
  findDomain(nameOrUuid: string): DomainRef | undefined;
  listDomains(): DomainRef[];
  getDefinition(uuid: string, live: boolean): DomainDefinition;
  getInfo(uuid: string): Promise<DomainInfo>;
  start(uuid: string, options: StartOptions): Promise<void>;
  suspend(uuid: string): Promise<void>;
  resume(uuid: string): Promise<void>;
  shutdown(uuid: string, options: ShutdownOptions): Promise<void>;
  destroy(uuid: string, options: DestroyOptions): Promise<void>;
  subscribe(listener: (event: DomainEvent) => void): () => void;
  close(): Promise<void>;
}

import type { DomainDefinition } from './definition/schema.js';
import { formatDomainXml } from './definition/xml.js';
import type { DestroyOptions, Driver, ShutdownOptions, StartOptions } from './driver.js';
import type { DomainInfo } from './events.js';
import type { JobInfo, OperationOptions } from './jobs.js';

/**
 * A handle on a defined domain. It names the domain by uuid; every method asks the driver, so a
 * handle never holds stale state. Operations that change a domain run as its job, one at a time
 * (the others wait their turn); queries ({@link Domain.getInfo}, {@link Domain.toXML},
 * {@link Domain.getJobInfo}) never wait for a job, and {@link Domain.destroy} never waits either:
 * it ends the job under way, which rolls back.
 *
 * @public
 */
export class Domain {
  readonly #driver: Driver;
  /** The domain's uuid. */
  readonly uuid: string;
  /** The domain's name. */
  readonly name: string;

  /** @internal */
  constructor(driver: Driver, name: string, uuid: string) {
    this.#driver = driver;
    this.name = name;
    this.uuid = uuid;
  }

  /** Starts the domain; with `paused`, QEMU runs but no vCPU does until {@link Domain.resume}. */
  async start(options: StartOptions = {}): Promise<void> {
    return await this.#driver.start(this.uuid, options);
  }

  /** Pauses every vCPU of a running domain. */
  async suspend(options: OperationOptions = {}): Promise<void> {
    return this.#driver.suspend(this.uuid, options);
  }

  /** Resumes a paused domain. */
  async resume(options: OperationOptions = {}): Promise<void> {
    return this.#driver.resume(this.uuid, options);
  }

  /** Asks the guest to power off (ACPI) and waits until QEMU has exited. */
  async shutdown(options: ShutdownOptions = {}): Promise<void> {
    return this.#driver.shutdown(this.uuid, options);
  }

  /** Stops the domain at once: SIGTERM, then SIGKILL after a grace period. */
  async destroy(options: DestroyOptions = {}): Promise<void> {
    return this.#driver.destroy(this.uuid, options);
  }

  /** Removes the persistent definition of an inactive domain. */
  async undefine(options: OperationOptions = {}): Promise<void> {
    return this.#driver.undefineDomain(this.uuid, options);
  }

  /** The job under way (operation, phase, elapsed time, progress), or `operation: 'none'`. */
  async getJobInfo(): Promise<JobInfo> {
    return this.#driver.getJobInfo(this.uuid);
  }

  /**
   * Aborts the job under way: it rolls back and fails with `ABORTED`. Resolves once the abort is
   * requested, not when the rollback is done. `OPERATION_INVALID` when no job runs.
   */
  async abortJob(): Promise<void> {
    this.#driver.abortJob(this.uuid);
  }

  /** State, reason, ids, size, CPU time and taints. */
  async getInfo(): Promise<DomainInfo> {
    return this.#driver.getInfo(this.uuid);
  }

  /** The definition: the live one while running (with defaults and aliases filled in), else the persistent one. */
  getDefinition(): DomainDefinition {
    return this.#driver.getDefinition(this.uuid, true);
  }

  /**
   * The definition as libvirt domain XML (see {@link formatDomainXml}): the live one while the
   * domain runs (with defaults and aliases filled in), else the persistent one.
   *
   * @returns the XML document
   */
  toXML(): string {
    return formatDomainXml(this.getDefinition());
  }
}

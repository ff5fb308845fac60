import type { DomainDefinition } from './definition/schema.js';
import { formatDomainXml } from './definition/xml.js';
import type { DestroyOptions, Driver, ShutdownOptions, StartOptions } from './driver.js';
import type { DomainInfo } from './events.js';

/**
 * A handle on a defined domain. It names the domain by uuid; every method asks the driver, so a
 * handle never holds stale state. Operations on one domain are serialised by the driver.
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
  async suspend(): Promise<void> {
    return this.#driver.suspend(this.uuid);
  }

  /** Resumes a paused domain. */
  async resume(): Promise<void> {
    return this.#driver.resume(this.uuid);
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
  async undefine(): Promise<void> {
    return this.#driver.undefineDomain(this.uuid);
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

import { ErrorCode, VirtError } from '../errors.js';
import type { DomainDefinition } from './definition/schema.js';
import { formatDomainXml } from './definition/xml.js';
import {
  type DetachDeviceOptions,
  type DeviceChangeOptions,
  type DeviceMatch,
  parseDeviceXml,
} from './devices.js';
import type { DestroyOptions, Driver, RebootOptions, ShutdownOptions, StartOptions } from './driver.js';
import type { DomainInfo, DomainStatus } from './events.js';
import type { JobInfo, OperationOptions } from './jobs.js';

/**
 * Options of `Domain.toXML` and `Domain.getDefinition`.
 *
 * @public
 */
export interface DefinitionOptions {
  /**
   * The persistent definition even while the domain runs (virsh `dumpxml --inactive`); without
   * it a running domain shows its live definition, and refuses with `OPERATION_FAILED` when that
   * was found unreadable.
   */
  readonly inactive?: boolean;
}

import type {
  MigratePerformOptions,
  MigratePrepareOptions,
  MigrateToOptions,
  MigrationConfirmOptions,
  MigrationEndOptions,
  MigrationIncomingCookie,
  MigrationOffer,
  PreparedIncoming,
} from './migration.js';

/**
 * Anything that can receive a migration: a `Connection` to the destination.
 *
 * @public
 */
export interface MigrationDestination {
  /** Step 2 of a migration; see `Connection.migratePrepare`. */
  migratePrepare(offer: MigrationOffer, options: MigratePrepareOptions): Promise<IncomingMigration>;
}

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

  /**
   * Reboots the guest the way libvirt does without a guest agent: presses the ACPI power button and,
   * once the guest has powered off, resets the machine and lets it run again instead of ending QEMU
   * (libvirt's "fake reboot"; the process, its id and its devices stay). Resolves once the guest
   * has been reset and runs again. A {@link Domain.destroy} meanwhile wins.
   *
   * @throws {@link VirtError} `OPERATION_INVALID` when the domain is not running;
   *   `OPERATION_TIMEOUT` when the guest did not power off within `timeoutMs` (it ignores the
   *   button, or is paused): it then runs on as before, and powers off as its definition says
   */
  async reboot(options: RebootOptions = {}): Promise<void> {
    return this.#driver.reboot(this.uuid, options);
  }

  /**
   * Resets the machine at once, like pressing its reset button (QMP `system_reset`): the guest gets
   * no warning and boots again in the same QEMU process. A paused domain stays paused.
   *
   * @throws {@link VirtError} `OPERATION_INVALID` when the domain is not running
   */
  async reset(options: OperationOptions = {}): Promise<void> {
    return this.#driver.reset(this.uuid, options);
  }

  /**
   * Stops the domain at once: SIGTERM, then SIGKILL after a grace period. With `graceful`, SIGTERM
   * only (virsh `destroy --graceful`).
   *
   * @throws {@link VirtError} `OPERATION_INVALID` when the domain is not running (or, `graceful`,
   * still starting); `OPERATION_TIMEOUT` when, `graceful`, QEMU did not exit within the grace
   * period: the domain is then still running
   */
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

  /**
   * The state and why the domain is in it (libvirt's `virDomainGetState`), typed per state:
   * `{ state: 'paused', reason: 'user' }`. Never waits for a job and reads nothing but memory.
   */
  async getState(): Promise<DomainStatus> {
    return this.#driver.getState(this.uuid);
  }

  /**
   * Migration step 1 (source): the offer for the destination, carrying the live definition and
   * whether the vCPUs run. The domain must be running or paused.
   *
   * @throws {@link VirtError} `OPERATION_INVALID` when the domain is not running or already migrating
   */
  async migrateBegin(): Promise<MigrationOffer> {
    const out = await this.#migration('migrateBegin').call(this.#driver, this.uuid);
    return {
      xml: formatDomainXml(out.live),
      cookie: {
        version: 1,
        uuid: this.uuid,
        name: this.name,
        inactiveXml: formatDomainXml(out.definition),
        running: out.running,
        taints: [...out.taints],
      },
    };
  }

  /**
   * Migration step 3 (source): sends the domain to the destination's `uri` and waits until the
   * stream completed. The source is then paused (reason `migration`) until {@link Domain.migrateConfirm}.
   *
   * @throws {@link VirtError} `OPERATION_FAILED` when the stream fails or is cancelled; the source then
   *   runs as before
   */
  async migratePerform(uri: string, options: MigratePerformOptions = {}): Promise<void> {
    return this.#migration('migratePerform').call(this.#driver, this.uuid, uri, options);
  }

  /**
   * Migration step 5 (source): the source QEMU ends (shut off, reason `migrated`), and with
   * `undefineSource` its persistent definition goes too; with `cancelled` the source resumes
   * instead if it ran before.
   */
  async migrateConfirm(options: MigrationConfirmOptions = {}): Promise<void> {
    const { undefineSource, ...end } = options;
    await this.#migration('migrateConfirm').call(this.#driver, this.uuid, end);
    if (undefineSource && !end.cancelled) await this.undefine();
  }

  /**
   * All five steps of a live migration to `dest`, rolling back at every step: on failure the domain
   * runs here as before and nothing is left at the destination.
   *
   * @returns the domain at the destination
   */
  async migrateTo(dest: MigrationDestination, options: MigrateToOptions = {}): Promise<Domain> {
    const { listen = 'tcp:127.0.0.1:0', persist, undefineSource, ...perform } = options;
    const confirm = undefineSource ? { undefineSource } : {};
    const offer = await this.migrateBegin();
    let incoming: IncomingMigration;
    try {
      incoming = await dest.migratePrepare(offer, {
        listen,
        ...(perform.signal ? { signal: perform.signal } : {}),
        ...(persist !== undefined ? { persist } : {}),
        ...(perform.tls ? { tls: perform.tls } : {}),
      });
    } catch (err) {
      await this.migrateConfirm({ cancelled: true }).catch(() => undefined);
      throw err;
    }
    // The destination waits for its stream from now on, so its vCPUs resume the moment the stream
    // completes there, not after the source has noticed and returned: the guest's pause stays
    // QEMU's own (bench/migration.ts measures it).
    const giveUp = new AbortController();
    const finished = incoming.finish({ signal: giveUp.signal }).then(
      (domain) => ({ ok: true as const, domain }),
      (error: unknown) => ({ ok: false as const, error }),
    );
    try {
      await this.migratePerform(incoming.uri, { ...perform, cookie: incoming.cookie });
    } catch (err) {
      giveUp.abort();
      const outcome = await finished;
      // Only a source that died after sending everything gets here with a destination that ran:
      // the guest lives on there.
      if (outcome.ok) {
        await this.migrateConfirm(confirm).catch(() => undefined);
        return outcome.domain;
      }
      await this.migrateConfirm({ cancelled: true }).catch(() => undefined);
      throw err;
    }
    const outcome = await finished;
    if (!outcome.ok) {
      await this.migrateConfirm({ cancelled: true }).catch(() => undefined);
      throw outcome.error;
    }
    await this.migrateConfirm(confirm);
    return outcome.domain;
  }

  #migration<K extends 'migrateBegin' | 'migratePerform' | 'migrateConfirm'>(
    name: K,
  ): NonNullable<Driver[K]> {
    const fn = this.#driver[name];
    if (!fn) throw new VirtError(ErrorCode.NO_SUPPORT, 'this driver cannot migrate domains');
    return fn as NonNullable<Driver[K]>;
  }

  /**
   * Attaches a `<disk>` or `<interface>` (libvirt's `virDomainAttachDeviceFlags`): to the running
   * domain (`live`, hotplug: the guest sees it at once), to the persistent definition (`config`), or
   * both. The device gets its alias and PCI address as at define time; event `device-added` names
   * the alias. A failure leaves the domain as it was.
   *
   * @param xml - one `<disk>` or `<interface>` element
   * @throws {@link VirtError} `OPERATION_INVALID` for `live` on an inactive domain, `XML_ERROR` or
   *   `CONFIG_UNSUPPORTED` for the device, `HANDLER_FAILED` when a privileged handler fails
   */
  async attachDevice(xml: string, options: DeviceChangeOptions = {}): Promise<void> {
    const device = parseDeviceXml(xml);
    const fn = this.#driver.attachDevice;
    if (!fn) throw new VirtError(ErrorCode.NO_SUPPORT, 'this driver cannot attach devices');
    return fn.call(this.#driver, this.uuid, device, options);
  }

  /**
   * Detaches a device, named by its alias or given as a `<disk>`/`<interface>` element. `live` asks
   * the guest and waits (`timeoutMs`) for it to let go (`DEVICE_DELETED`); event `device-removed`
   * names the alias.
   *
   * @throws {@link VirtError} `OPERATION_TIMEOUT` when the guest does not let go in time (the
   *   device stays attached), `OPERATION_INVALID` when the domain has no such device
   */
  async detachDevice(xmlOrAlias: string, options: DetachDeviceOptions = {}): Promise<void> {
    const match: DeviceMatch = xmlOrAlias.trimStart().startsWith('<')
      ? { device: parseDeviceXml(xmlOrAlias) }
      : { alias: xmlOrAlias };
    const fn = this.#driver.detachDevice;
    if (!fn) throw new VirtError(ErrorCode.NO_SUPPORT, 'this driver cannot detach devices');
    return fn.call(this.#driver, this.uuid, match, options);
  }

  /**
   * Sets how many vCPUs are online (libvirt's `virDomainSetVcpusFlags`), within the definition's
   * `<vcpu current='…'>max</vcpu>`: `live` hot-plugs vCPUs into the running domain (or unplugs
   * them), `config` changes `current` in the persistent definition, both are allowed together.
   * A new vCPU thread is verified, placed and scheduled as at start (phase `hotplug`) before the
   * guest can online it; a failure removes it again and leaves the domain as it was.
   *
   * @param count - the number of vCPUs, 1 to the definition's maximum
   * @throws {@link VirtError} `OPERATION_INVALID` for a count outside 1…maximum or `live` on an
   *   inactive domain, `CONFIG_UNSUPPORTED` when the machine cannot hot-plug vCPUs,
   *   `HANDLER_FAILED` when a privileged handler fails
   */
  async setVcpus(count: number, options: DeviceChangeOptions = {}): Promise<void> {
    if (!Number.isSafeInteger(count) || count < 1) {
      throw new VirtError(
        ErrorCode.OPERATION_INVALID,
        `a vCPU count must be a positive integer, not ${count}`,
        {
          path: 'count',
        },
      );
    }
    const fn = this.#driver.setVcpus;
    if (!fn) throw new VirtError(ErrorCode.NO_SUPPORT, 'this driver cannot change the number of vCPUs');
    return fn.call(this.#driver, this.uuid, count, options);
  }

  /** The definition: the live one while running (with defaults and aliases filled in), else the persistent one. */
  getDefinition(options: DefinitionOptions = {}): DomainDefinition {
    return this.#driver.getDefinition(this.uuid, options.inactive !== true);
  }

  /**
   * The definition as libvirt domain XML (see {@link formatDomainXml}): the live one while the
   * domain runs (with defaults and aliases filled in), else the persistent one.
   *
   * @returns the XML document
   */
  toXML(options: DefinitionOptions = {}): string {
    return formatDomainXml(this.getDefinition(options));
  }
}

/**
 * The destination of a live migration, returned by `Connection.migratePrepare`: QEMU runs there with
 * every vCPU paused, waiting for the stream at {@link IncomingMigration.uri}.
 *
 * @public
 */
export class IncomingMigration {
  readonly #driver: Driver;
  /** Where the source connects: pass it to {@link Domain.migratePerform}. */
  readonly uri: string;
  /** The destination's cookie: pass it to {@link Domain.migratePerform}. */
  readonly cookie: MigrationIncomingCookie;
  /** The destination domain (paused, reason `migration`, until finished). */
  readonly domain: Domain;

  /** @internal */
  constructor(driver: Driver, prepared: PreparedIncoming) {
    this.#driver = driver;
    this.uri = prepared.uri;
    this.cookie = prepared.cookie;
    this.domain = new Domain(driver, prepared.name, prepared.uuid);
  }

  /**
   * Migration step 4 (destination): waits for the stream to complete and resumes the vCPUs if the
   * source ran. With `cancelled`, or when the stream failed, destroys the destination instead (and
   * undefines it if prepare defined it).
   *
   * @returns the destination domain, running (or paused when the source was)
   * @throws {@link VirtError} `OPERATION_FAILED` when the stream failed (the destination is then
   *   rolled back)
   */
  async finish(options: MigrationEndOptions = {}): Promise<Domain> {
    if (!this.#driver.migrateFinish)
      throw new VirtError(ErrorCode.NO_SUPPORT, 'this driver cannot migrate domains');
    await this.#driver.migrateFinish(this.domain.uuid, options);
    return this.domain;
  }
}

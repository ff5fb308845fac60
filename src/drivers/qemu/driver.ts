import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCode, errorMessage, toVirtError, VirtError } from '../../errors.js';
import { controlSocketFromConfig, loadPlugins, pluginsFromConfig } from '../../internal/plugins.js';
import { HandlerTable } from '../../privileged/handler-table.js';
import { INTERNAL_SEAM, type InternalSeam, SEAM_VERSION } from '../../privileged/seam.js';
import { INTERNAL_API_VERSION } from '../../privileged/version.js';
import type {
  Capabilities,
  DomainCapabilities,
  DomainCapabilitiesOptions,
} from '../../stable/capabilities.js';
import type { ParsedUri } from '../../stable/connect.js';
import type { DomainDefinition } from '../../stable/definition/schema.js';
import type {
  DetachDeviceOptions,
  DeviceChangeOptions,
  DeviceDefinition,
  DeviceMatch,
  PciDeviceMatch,
} from '../../stable/devices.js';
import type {
  ControlSocketSettings,
  DestroyOptions,
  DomainRef,
  Driver,
  OutgoingMigration,
  RebootOptions,
  ShutdownOptions,
  StartOptions,
} from '../../stable/driver.js';
import type { DomainEvent, DomainInfo, ShutoffReason } from '../../stable/events.js';
import type { OperationOptions } from '../../stable/jobs.js';
import type {
  MigratePerformOptions,
  MigratePrepareOptions,
  MigrationEndOptions,
  PreparedIncoming,
  ResolvedOffer,
} from '../../stable/migration.js';
import { faultPoint } from '../../util/fault-points.js';
import { ProcStatFile } from '../../util/proc.js';
import { DriverCore, gracefulDestroyRefused } from '../domain-core.js';
import { type Job, traceJob } from '../jobs.js';
import {
  checkRequest,
  connectMonitor,
  EXTERNAL_LAUNCH_TAINT,
  type Inspection,
  inspect,
  wasAttached,
} from './attach.js';
import { buildCapabilities, buildDomainCapabilities, capabilityCache } from './capabilities/capabilities.js';
import type { DriverContext } from './context.js';
import { prepareDefinition } from './devices/define.js';
import { DomainObject } from './domain-object.js';
import { emulatorOf, signalEmulator } from './emulator-kill.js';
import { attachDevice, detachDevice } from './hotplug.js';
import { attachMemory, detachMemory, isMemoryMatchOf } from './hotplug-memory.js';
import { setVcpus } from './hotplug-vcpus.js';
import {
  destroyDomain,
  rebootDomain,
  resetDomain,
  resumeDomain,
  shutdownDomain,
  suspendDomain,
} from './lifecycle.js';
import { presentableLive } from './live-definition.js';
import { appendLog } from './log.js';
import { checkDisksPresent, checkSameDefinition } from './migration/compat.js';
import { finishIncoming, prepareIncoming } from './migration/destination.js';
import { arrivedTransient, migrationOf } from './migration/record.js';
import { beginMigration, confirmMigration, heldOutgoing, performMigration } from './migration/source.js';
import { checkTls } from './migration/tls.js';
import { parseMigrationUri } from './migration/uri.js';
import { modifiesDomain, monitorCommand, monitorEvents } from './passthrough.js';
import { reconnectDomain } from './reconnect.js';
import { domainPaths, lockRoot, type RootLayout, type RootLock, rootLayout } from './root.js';
import { recordJob, saveState } from './runtime-status.js';
import { readShutoffRecord, shutoffRecordPath, writeShutoffRecord } from './shutoff-record.js';
import { DEFAULT_EMULATOR, startDomain } from './start.js';
import { writeStatus } from './status.js';
import { loadDefinitions, removeIfPresent, saveDefinition } from './store.js';
import { sweepCgroups, sweepRootLeftovers, sweepTransientMarkers, transientMarker } from './sweep.js';

/** Options the embedded driver takes from `connect()`. */
export interface QemuDriverOptions {
  readonly plugins?: readonly string[];
  /** Serve the control socket: given by `connect()`, else as `<root>/etc/virtkit.json` says. */
  readonly controlSocket?: boolean | { readonly uids?: readonly number[] } | undefined;
}

/** Opens the embedded QEMU driver for `qemu:///embed?root=…`: layout, lock, definitions, reconnect. */
export async function openQemuDriver(
  uri: string,
  parsed: ParsedUri,
  options: QemuDriverOptions,
): Promise<Driver> {
  if (parsed.path !== '/embed') {
    throw new VirtError(
      ErrorCode.INVALID_URI,
      `unsupported QEMU URI path '${parsed.path}' in '${uri}': only the embedded driver 'qemu:///embed?root=/abs/path' exists`,
    );
  }
  for (const key of parsed.params.keys()) {
    if (key !== 'root')
      throw new VirtError(ErrorCode.INVALID_URI, `unknown URI parameter '${key}' in '${uri}'`);
  }
  const layout = rootLayout(parsed.params.get('root'));
  const lock = lockRoot(layout);
  const driver = new QemuDriver(uri, layout, lock);
  try {
    const control = options.controlSocket ?? controlSocketFromConfig(layout.etc) ?? false;
    if (control !== false) {
      driver.controlSocket = {
        path: join(layout.run, 'control.sock'),
        uids: control === true ? [] : [...(control.uids ?? [])],
      };
    }
    // Plugins register before reconnect, so even the release of a domain found dead uses them.
    await loadPlugins(driver[INTERNAL_SEAM], [...pluginsFromConfig(layout.etc), ...(options.plugins ?? [])]);
    await driver.load();
  } catch (err) {
    await driver.close();
    throw err;
  }
  return driver;
}

/** The embedded QEMU driver: owns one root and every domain defined in it. */
export class QemuDriver extends DriverCore<DomainObject> implements Driver, DriverContext {
  readonly uri: string;
  readonly layout: RootLayout;
  readonly handlers = new HandlerTable();
  readonly cgroupParent = 'virtkit';
  controlSocket: ControlSocketSettings | undefined;
  /** The narrow door through which `virtkit/internal` reaches this driver's handler table. */
  readonly [INTERNAL_SEAM]: InternalSeam = {
    seamVersion: SEAM_VERSION,
    internalApiVersion: INTERNAL_API_VERSION,
    driverKind: 'qemu-embed',
    handlers: this.handlers,
    monitor: {
      command: (uuid, command, args, options) => this.#monitorCommand(uuid, command, args, options),
      events: (uuid, sink) => monitorEvents(this, this.domain(uuid), sink),
      attach: (request) => this.#track(this.#attach(request)),
    },
  };
  readonly #lock: RootLock;
  #nextId = 1;
  /** Every operation under way; close() lets them finish before it lets go of the domains. */
  readonly #inflight = new Set<Promise<unknown>>();
  /**
   * Transient domains, removed once they stop: adopted with attach, or brought in by a migration
   * without `persist`.
   */
  readonly #attached = new Set<string>();
  /**
   * The `/proc/<pid>/stat` kept open per running domain (by uuid) once `getInfo` asked for its CPU
   * time, so a listing of many domains reads each with one system call; closed when the domain
   * stops (or its run changes) and when the driver closes.
   */
  readonly #statFiles = new Map<string, ProcStatFile>();
  /** New definitions are checked and added one at a time, so two cannot claim one name. */
  #defining: Promise<unknown> = Promise.resolve();

  constructor(uri: string, layout: RootLayout, lock: RootLock) {
    // Events raised while opening wait until `connect()` has returned and callers can listen.
    super({ holdEvents: true });
    this.uri = uri;
    this.layout = layout;
    this.#lock = lock;
  }

  /** Loads the persistent definitions and reconnects to the domains still running. */
  async load(): Promise<void> {
    const defs = loadDefinitions(this.layout, (file, err) => {
      appendLog(
        `${this.layout.log}/driver.log`,
        `ignoring unreadable definition ${file}: ${errorMessage(err)}`,
      );
    });
    for (const def of defs) this.domains.set(new DomainObject(def));
    for (const def of defs)
      if (
        wasAttached(this.layout, def) ||
        arrivedTransient(this.layout, def) ||
        existsSync(transientMarker(this.layout, def.name))
      )
        this.#attached.add(def.uuid);
    await Promise.all(this.domains.values().map((dom) => reconnectDomain(this, dom)));
    // A transient domain found shut off (its QEMU ended while no driver watched) is gone.
    for (const dom of this.domains.values())
      if (!dom.active && this.#attached.delete(dom.def.uuid)) await this.#forget(dom);
    for (const dom of this.domains.values()) this.#recallShutoff(dom);
    for (const path of sweepTransientMarkers(this.layout, this.domains.values()))
      appendLog(`${this.layout.log}/driver.log`, `removed ${path}, left by a driver that was killed`);
    for (const path of sweepRootLeftovers(this, this.domains.values()))
      appendLog(`${this.layout.log}/driver.log`, `removed ${path}, left by a driver that was killed`);
    sweepCgroups(this, this.domains.values());
    for (const dom of this.domains.values())
      if (dom.run) this.#nextId = Math.max(this.#nextId, dom.run.id + 1);
    this.releaseEvents();
  }

  allocateId(): number {
    return this.#nextId++;
  }

  /** A domain adopted with attach is transient, as in libvirt: it ends with its QEMU. */
  protected override afterEvent(dom: DomainObject, event: DomainEvent): void {
    if (event.type === 'stopped' && this.#attached.delete(dom.def.uuid)) void this.#forget(dom);
  }

  /**
   * A passthrough command: one that can change the domain runs as its job (`monitor-command`,
   * libvirt's QEMU_JOB_MODIFY), so it never interleaves with a start, a migration or a device
   * change, and a destroy or abortJob ends it; a query runs at once.
   */
  #monitorCommand(
    uuid: string,
    command: string,
    args: Record<string, unknown> | undefined,
    options: { readonly timeoutMs?: number; readonly signal?: AbortSignal },
  ): Promise<unknown> {
    const dom = this.domain(uuid);
    if (!modifiesDomain(command)) return this.#track(monitorCommand(this, dom, command, args, options));
    return this.#track(
      this.job(dom, 'monitor-command', options.signal, (job) =>
        monitorCommand(this, dom, command, args, { timeoutMs: options.timeoutMs, signal: job.signal }),
      ),
    );
  }

  /** Removes a transient domain once it has stopped. */
  async #forget(dom: DomainObject): Promise<void> {
    await dom.jobs.run(
      'undefine',
      () => dom.ident,
      undefined,
      async () => {
        if (dom.active || this.domains.find(dom.def.uuid) !== dom) return;
        removeIfPresent(domainPaths(this.layout, dom.def.name, dom.def.uuid).definition);
        removeIfPresent(transientMarker(this.layout, dom.def.name));
        removeIfPresent(shutoffRecordPath(this.layout, dom.def.name));
        this.domains.delete(dom.def.uuid);
        this.emit(dom, 'undefined', 'removed');
      },
    );
  }

  /**
   * Adopts a QEMU launched outside virtkit (libvirt's `qemu-attach`): checks that the pid runs QEMU
   * and the socket is its monitor, builds the domain from QMP, records it like a domain this driver
   * started (definition and status, tainted `external-launch`), then adopts it exactly as a new
   * driver adopts a running domain, so from here on it is managed like any other.
   */
  async #attach(request: unknown): Promise<DomainRef> {
    this.checkOpen();
    const checked = checkRequest(request);
    const qmp = await connectMonitor(checked.pid, checked.monitor);
    let inspection: Inspection;
    try {
      inspection = await inspect(qmp, checked);
    } finally {
      // QEMU serves one client per socket: the adoption below connects anew.
      qmp.close();
    }
    const { def } = inspection;
    const add = async (): Promise<DomainRef> => {
      const taken = this.domains.find(def.name) ?? this.domains.find(def.uuid);
      if (taken) {
        throw new VirtError(
          ErrorCode.DOMAIN_EXISTS,
          `a domain named '${taken.def.name}' (uuid ${taken.def.uuid}) already exists; pass another name to attach`,
          { domain: { name: taken.def.name, uuid: taken.def.uuid } },
        );
      }
      const dom = new DomainObject(def);
      const paths = domainPaths(this.layout, def.name, def.uuid);
      await saveDefinition(paths.definition, def);
      await writeStatus(paths.status, { ...inspection.status, id: this.allocateId() });
      this.domains.set(dom);
      this.#attached.add(def.uuid);
      this.log(
        dom,
        `attach: QEMU pid ${checked.pid} (${checked.emulator}) launched outside virtkit, monitor ${checked.monitor}`,
      );
      this.log(dom, `domain is tainted: ${EXTERNAL_LAUNCH_TAINT}`);
      for (const why of inspection.skipped) this.log(dom, `attach: not in the definition: ${why}`);
      this.emit(dom, 'defined', 'added');
      await dom.jobs.run(
        'define',
        () => dom.ident,
        undefined,
        () => reconnectDomain(this, dom),
      );
      if (!dom.run) {
        throw new VirtError(
          ErrorCode.OPERATION_FAILED,
          `QEMU pid ${checked.pid} could not be adopted; see ${paths.log}`,
          { pid: checked.pid, domain: { name: def.name, uuid: def.uuid } },
        );
      }
      this.emit(dom, 'started', 'attached');
      return { name: def.name, uuid: def.uuid, active: true };
    };
    const result = this.#defining.then(add, add);
    this.#defining = result.catch(() => undefined);
    return result;
  }

  record(message: string): void {
    appendLog(`${this.layout.log}/driver.log`, message);
  }

  override log(dom: DomainObject, message: string): void {
    appendLog(domainPaths(this.layout, dom.def.name, dom.def.uuid).log, message);
  }

  /**
   * The state of a started domain is kept in its status file (libvirt's status XML), so a new
   * driver keeps the reasons QEMU cannot tell it. A failed write is logged: the state itself changed.
   */
  protected override stateChanged(dom: DomainObject): void {
    const run = dom.run;
    if (run?.pid !== this.#statFiles.get(dom.def.uuid)?.pid || dom.state === 'shutoff')
      this.#dropStatFile(dom.def.uuid);
    if (dom.status.state === 'shutoff') this.#keepShutoff(dom, dom.status.reason);
    if (!run) return;
    try {
      saveState(dom, run);
    } catch (err) {
      this.log(dom, `cannot record the state in ${run.paths.status}: ${errorMessage(err)}`);
    }
  }

  /**
   * Keeps why a persistent domain shut off (shutoff-record.ts), so the next driver of the root
   * (the next `virtkit` command) still tells it. A transient domain leaves nothing.
   */
  #keepShutoff(dom: DomainObject, reason: ShutoffReason): void {
    if (this.#attached.has(dom.def.uuid) || dom.recordedShutoff === reason) return;
    try {
      writeShutoffRecord(this.layout, dom.def.name, dom.def.uuid, reason);
      dom.recordedShutoff = reason;
    } catch (err) {
      this.log(dom, `cannot record why the domain shut off (${reason}): ${errorMessage(err)}`);
    }
  }

  /** A persistent domain found shut off for no known reason gets the one its record keeps. */
  #recallShutoff(dom: DomainObject): void {
    if (dom.active || dom.status.state !== 'shutoff' || dom.status.reason !== 'unknown') return;
    const reason = readShutoffRecord(shutoffRecordPath(this.layout, dom.def.name), dom.def.uuid);
    if (reason === undefined) return;
    dom.recordedShutoff = reason;
    this.setState(dom, { state: 'shutoff', reason });
  }

  /** A job on a running domain is recorded in its status file while it runs. */
  protected override async runJob<T>(dom: DomainObject, job: Job, fn: (job: Job) => Promise<T>): Promise<T> {
    const run = dom.run;
    if (run) await recordJob(dom, run, job);
    try {
      return await fn(job);
    } finally {
      if (run) await recordJob(dom, run, undefined);
    }
  }

  #track<T>(operation: Promise<T>): Promise<T> {
    this.#inflight.add(operation);
    const done = () => this.#inflight.delete(operation);
    operation.then(done, done);
    return operation;
  }

  getCapabilities(): Promise<Capabilities> {
    this.checkOpen();
    return buildCapabilities(capabilityCache(this.layout), [DEFAULT_EMULATOR]);
  }

  getDomainCapabilities(options: DomainCapabilitiesOptions): Promise<DomainCapabilities> {
    this.checkOpen();
    return buildDomainCapabilities(
      capabilityCache(this.layout),
      options.emulator ?? DEFAULT_EMULATOR,
      options,
    );
  }

  defineDomain(given: DomainDefinition): Promise<DomainRef> {
    return this.#define(given, true);
  }

  /**
   * `durable`: the definition is fsync'd. Not for the domain an incoming migration defines without
   * `persist`: it goes when its QEMU stops, so a host crash that loses it loses nothing, and the
   * fsync would lengthen every migration's set-up.
   */
  async #define(given: DomainDefinition, durable: boolean): Promise<DomainRef> {
    this.checkOpen();
    const define = async (): Promise<DomainRef> => {
      const def = await prepareDefinition(
        capabilityCache(this.layout),
        given.emulator ?? DEFAULT_EMULATOR,
        given,
      );
      const existing = this.domains.existingFor(def);
      const dom = existing ?? new DomainObject(def);
      return dom.jobs.run(
        'define',
        () => dom.ident,
        undefined,
        async () => {
          await saveDefinition(domainPaths(this.layout, def.name, def.uuid).definition, def, durable);
          // Defined, a transient domain becomes persistent, as in libvirt.
          if (this.#attached.delete(def.uuid)) removeIfPresent(transientMarker(this.layout, def.name));
          faultPoint('define:saved');
          dom.def = def;
          this.domains.set(dom);
          this.emit(dom, 'defined', existing ? 'updated' : 'added');
          return { name: def.name, uuid: def.uuid, active: dom.active };
        },
      );
    };
    const result = this.#defining.then(define, define);
    this.#defining = result.catch(() => undefined);
    return this.#track(result);
  }

  async createDomain(given: DomainDefinition, options: StartOptions): Promise<DomainRef> {
    this.checkOpen();
    const create = async (): Promise<DomainObject> => {
      const def = await prepareDefinition(
        capabilityCache(this.layout),
        given.emulator ?? DEFAULT_EMULATOR,
        given,
      );
      const taken = this.domains.find(def.name) ?? this.domains.find(def.uuid);
      if (taken) {
        throw new VirtError(
          ErrorCode.DOMAIN_EXISTS,
          `a domain named '${taken.def.name}' (uuid ${taken.def.uuid}) already exists; start it, or give the new one another name and uuid`,
          { domain: { name: taken.def.name, uuid: taken.def.uuid } },
        );
      }
      const dom = new DomainObject(def);
      const marker = transientMarker(this.layout, def.name);
      // The marker before the definition: a definition without one would be adopted as persistent.
      writeFileSync(marker, `${def.uuid}\n`, { mode: 0o600 });
      try {
        await saveDefinition(domainPaths(this.layout, def.name, def.uuid).definition, def);
      } catch (err) {
        removeIfPresent(marker);
        throw err;
      }
      this.domains.set(dom);
      this.#attached.add(def.uuid);
      this.emit(dom, 'defined', 'added');
      return dom;
    };
    const result = this.#defining.then(create, create);
    this.#defining = result.catch(() => undefined);
    const dom = await this.#track(result);
    try {
      await this.start(dom.def.uuid, options);
    } catch (err) {
      this.#attached.delete(dom.def.uuid);
      await this.#forget(dom);
      throw err;
    }
    return { name: dom.def.name, uuid: dom.def.uuid, active: dom.active };
  }

  async undefineDomain(uuid: string, options: OperationOptions = {}): Promise<void> {
    const dom = this.domain(uuid);
    await this.job(dom, 'undefine', options.signal, async () => {
      if (dom.active) {
        throw new VirtError(
          ErrorCode.OPERATION_INVALID,
          `domain '${dom.def.name}' is running; destroy it first`,
        );
      }
      removeIfPresent(domainPaths(this.layout, dom.def.name, dom.def.uuid).definition);
      faultPoint('undefine:removed');
      removeIfPresent(shutoffRecordPath(this.layout, dom.def.name));
      this.domains.delete(uuid);
      this.emit(dom, 'undefined', 'removed');
    });
  }

  getDefinition(uuid: string, live: boolean): DomainDefinition {
    const dom = this.domain(uuid);
    return structuredClone(live && dom.run ? presentableLive(dom, dom.run) : dom.def);
  }

  async getInfo(uuid: string): Promise<DomainInfo> {
    const dom = this.domain(uuid);
    const run = dom.run;
    if (!run) this.#dropStatFile(uuid);
    return this.info(dom, run?.live ?? dom.def, {
      id: run?.started ? run.id : null,
      pid: run?.started ? run.pid : null,
      cpuTimeNs: run ? this.#cpuTimeNs(uuid, run.pid) : 0n,
      taints: run ? [...run.taints] : [],
      persistent: !this.#attached.has(uuid),
    });
  }

  /** utime + stime of the whole process; 0 when it cannot be read (it is gone, or /proc failed). */
  #cpuTimeNs(uuid: string, pid: number): bigint {
    let file = this.#statFiles.get(uuid);
    if (file?.pid !== pid) {
      this.#dropStatFile(uuid);
      file = new ProcStatFile(pid);
      this.#statFiles.set(uuid, file);
    }
    try {
      return file.cpuTimeNs() ?? 0n;
    } catch {
      this.#dropStatFile(uuid);
      return 0n;
    }
  }

  #dropStatFile(uuid: string): void {
    const file = this.#statFiles.get(uuid);
    if (!file) return;
    this.#statFiles.delete(uuid);
    try {
      file.close();
    } catch {
      // Nothing to keep: the descriptor is forgotten either way.
    }
  }

  start(uuid: string, options: StartOptions): Promise<void> {
    const dom = this.domain(uuid);
    return this.#track(
      this.job(dom, 'start', options.signal, (job) =>
        startDomain(this, dom, job, { paused: options.paused }),
      ),
    );
  }

  attachDevice(uuid: string, device: DeviceDefinition, options: DeviceChangeOptions): Promise<void> {
    const dom = this.domain(uuid);
    return this.#track(
      this.job(dom, 'device-change', options.signal, () =>
        'memory' in device
          ? attachMemory(this, dom, device.memory, options)
          : attachDevice(this, dom, device, options),
      ),
    );
  }

  detachDevice(uuid: string, match: DeviceMatch, options: DetachDeviceOptions): Promise<void> {
    const dom = this.domain(uuid);
    return this.#track(
      this.job(dom, 'device-change', options.signal, () =>
        isMemoryMatchOf(dom, match)
          ? detachMemory(this, dom, match, options)
          : // isMemoryMatchOf is false for every match of a memory element, so this one is a disk's or NIC's.
            detachDevice(this, dom, match as PciDeviceMatch, options),
      ),
    );
  }

  setVcpus(uuid: string, count: number, options: DeviceChangeOptions): Promise<void> {
    const dom = this.domain(uuid);
    return this.#track(
      this.job(dom, 'device-change', options.signal, () => setVcpus(this, dom, count, options)),
    );
  }

  suspend(uuid: string, options: OperationOptions = {}): Promise<void> {
    const dom = this.domain(uuid);
    return this.#track(this.job(dom, 'suspend', options.signal, (job) => suspendDomain(this, dom, job)));
  }

  resume(uuid: string, options: OperationOptions = {}): Promise<void> {
    const dom = this.domain(uuid);
    return this.#track(this.job(dom, 'resume', options.signal, (job) => resumeDomain(this, dom, job)));
  }

  reboot(uuid: string, options: RebootOptions = {}): Promise<void> {
    const dom = this.domain(uuid);
    return this.#track(
      this.job(dom, 'reboot', options.signal, (job) => rebootDomain(this, dom, options, job)),
    );
  }

  reset(uuid: string, options: OperationOptions = {}): Promise<void> {
    const dom = this.domain(uuid);
    return this.#track(this.job(dom, 'reset', options.signal, (job) => resetDomain(this, dom, job)));
  }

  shutdown(uuid: string, options: ShutdownOptions): Promise<void> {
    const dom = this.domain(uuid);
    return this.#track(
      this.job(dom, 'shutdown', options.signal, (job) => shutdownDomain(this, dom, options, job)),
    );
  }

  /**
   * Takes the domain's job slot for the whole migration (`migration-out`, begin to confirm), so
   * no other job changes the domain under it; perform and confirm run in that job.
   */
  async migrateBegin(uuid: string): Promise<OutgoingMigration> {
    const dom = this.domain(uuid);
    const held = await dom.jobs.hold('migration-out', () => dom.ident, undefined);
    try {
      this.checkStillDefined(dom);
      return await this.#track(beginMigration(this, dom, held));
    } catch (err) {
      held.end(err);
      throw held.job.failure(err);
    }
  }

  migratePerform(uuid: string, uri: string, options: MigratePerformOptions): Promise<void> {
    const dom = this.domain(uuid);
    return this.#track(performMigration(this, dom, uri, options));
  }

  migrateConfirm(uuid: string, options: MigrationEndOptions): Promise<void> {
    const dom = this.domain(uuid);
    if (heldOutgoing(dom)) return this.#track(confirmMigration(this, dom, options));
    // A source adopted from a dead manager has no job yet: the confirm is one.
    return this.#track(
      this.job(dom, 'migration-out', options.signal, () => confirmMigration(this, dom, options)),
    );
  }

  /**
   * Everything that can be refused is refused before anything is defined or started: the listen
   * address, missing disks, a domain of that uuid that differs or is already active here.
   */
  async migratePrepare(offer: ResolvedOffer, options: MigratePrepareOptions): Promise<PreparedIncoming> {
    this.checkOpen();
    const address = parseMigrationUri(options.listen, 'listen');
    const def = offer.definition;
    if (options.tls) checkTls(options.tls, 'server', 'tls');
    checkDisksPresent(def);
    const existing = this.domains.existingFor(def);
    if (existing?.active)
      throw new VirtError(
        ErrorCode.OPERATION_INVALID,
        `domain '${def.name}' is already active at the destination`,
        {
          domain: { name: def.name, uuid: def.uuid },
        },
      );
    if (existing) checkSameDefinition(existing.def, def);
    else await this.#define(def, options.persist === true);
    const dom = this.domains.get(def.uuid);
    try {
      // The job holds the domain from prepare to finish; prepare's signal only reaches prepare.
      const held = await dom.jobs.hold('migration-in', () => dom.ident, options.signal);
      let uri: string;
      try {
        this.checkStillDefined(dom);
        const transient = !existing && options.persist !== true;
        uri = await this.#track(
          prepareIncoming(this, dom, held, offer, address, !existing, transient, options.tls),
        );
        if (transient) this.#attached.add(dom.def.uuid);
      } catch (err) {
        held.end(err);
        throw toVirtError(
          held.job.failure(err),
          ErrorCode.OPERATION_FAILED,
          `cannot prepare the incoming migration of '${def.name}'; the destination was rolled back`,
          { domain: { name: def.name, uuid: def.uuid } },
        );
      } finally {
        held.job.end();
      }
      return { uri, cookie: { version: 1, uuid: def.uuid, uri }, name: def.name, uuid: def.uuid };
    } catch (err) {
      if (!existing) await this.#undefineAfterMigration(dom);
      throw err;
    }
  }

  async migrateFinish(uuid: string, options: MigrationEndOptions): Promise<void> {
    const dom = this.domain(uuid);
    const record = migrationOf(dom);
    const definedHere = record?.role === 'in' && record.definedHere;
    try {
      // Runs in the migration-in job that prepare took (finishIncoming refuses without one).
      await this.#track(finishIncoming(this, dom, options));
    } catch (err) {
      if (definedHere) await this.#undefineAfterMigration(dom);
      throw err;
    }
    if (options.cancelled && definedHere) await this.#undefineAfterMigration(dom);
  }

  /** A domain that prepare defined leaves nothing behind when its migration did not happen. */
  async #undefineAfterMigration(dom: DomainObject): Promise<void> {
    if (dom.active) return;
    await this.undefineDomain(dom.def.uuid).catch((err) =>
      this.log(dom, `migration: cannot undefine after rollback: ${errorMessage(err)}`),
    );
  }

  /**
   * Destroy does not queue behind a running job: it must be able to end a hung shutdown, or a start
   * stuck in a handler. A start in progress is ended by killing its process; the start sequence
   * then rolls itself back (and fails), and destroy returns once it has.
   */
  async destroy(uuid: string, options: DestroyOptions): Promise<void> {
    const dom = this.domain(uuid);
    // Graceful may fail and leave the domain as it was: nothing under way is aborted first.
    if (options.graceful) {
      if (!dom.run?.started) {
        const job = dom.jobs.current?.operation;
        throw gracefulDestroyRefused(dom.ident, !!dom.run || job === 'start' || job === 'migration-in');
      }
      return this.#track(
        traceJob(
          'destroy',
          () => dom.ident,
          () => destroyDomain(this, dom, options),
        ),
      );
    }
    const run = dom.run;
    const job = dom.jobs.current;
    const starting = job?.operation === 'start' || job?.operation === 'migration-in';
    if (run || starting) this.abortForDestroy(dom);
    if (run?.started)
      return this.#track(
        traceJob(
          'destroy',
          () => dom.ident,
          () => destroyDomain(this, dom, options),
        ),
      );
    if (run) {
      run.stopIntent = 'destroy';
      run.cancel.abort();
      this.log(dom, `destroy during start-up: SIGKILL to process group ${run.pid}`);
      try {
        process.kill(run.pid, 'SIGKILL');
      } catch {
        // already gone: the start is failing by itself
      }
      signalEmulator(emulatorOf(this, dom, run), 'SIGKILL');
      return this.#track(
        dom.jobs.run(
          'destroy',
          () => dom.ident,
          undefined,
          async () => undefined,
        ),
      );
    }
    // A start that has no process yet rolls back by itself; once it has, the domain is shut off.
    if (starting) {
      return this.#track(
        dom.jobs.run(
          'destroy',
          () => dom.ident,
          undefined,
          async () => {
            if (dom.run?.started) await destroyDomain(this, dom, options);
          },
        ),
      );
    }
    return this.#track(this.job(dom, 'destroy', undefined, () => destroyDomain(this, dom, options)));
  }

  /**
   * Lets the operations under way finish, then lets go of every domain (their QEMU keeps running)
   * and releases the root's lock.
   */
  async close(): Promise<void> {
    if (!this.markClosed()) return;
    await Promise.allSettled([...this.#inflight]);
    for (const dom of this.domains.values()) {
      const run = dom.run;
      if (!run) continue;
      run.detached = true;
      run.forgetExit?.();
      run.qmp?.close();
    }
    this.dropListeners();
    for (const uuid of [...this.#statFiles.keys()]) this.#dropStatFile(uuid);
    this.#lock.release();
  }
}

import { ErrorCode, toVirtError, VirtError } from '../../errors.js';
import { loadPlugins } from '../../internal/plugins.js';
import { HandlerTable } from '../../privileged/handler-table.js';
import { INTERNAL_SEAM, SEAM_VERSION } from '../../privileged/seam.js';
import type { SimulationSeam } from '../../privileged/simulation.js';
import { INTERNAL_API_VERSION } from '../../privileged/version.js';
import type { ParsedUri } from '../../stable/connect.js';
import type { DomainDefinition, MemoryDeviceDefinition } from '../../stable/definition/schema.js';
import type {
  DetachDeviceOptions,
  DeviceChangeOptions,
  DeviceDefinition,
  DeviceMatch,
  PciDeviceMatch,
} from '../../stable/devices.js';
import type {
  DestroyOptions,
  DomainRef,
  Driver,
  OutgoingMigration,
  RebootOptions,
  ShutdownOptions,
  StartOptions,
} from '../../stable/driver.js';
import type { DomainEvent, DomainInfo } from '../../stable/events.js';
import type { OperationOptions } from '../../stable/jobs.js';
import type {
  MigratePerformOptions,
  MigratePrepareOptions,
  MigrationEndOptions,
  PreparedIncoming,
  ResolvedOffer,
} from '../../stable/migration.js';
import { withDeviceAliases } from '../device-aliases.js';
import {
  type Affect,
  affect,
  aliasOf,
  checkHotpluggable,
  checkVcpuCount,
  findDevice,
  findDimm,
  isMemory,
  isMemoryMatch,
  noSuchDevice,
  noSuchDimm,
  tcgReplugRefused,
  tcgUnplugRefused,
  withDimm,
  withoutDevice,
  withoutDimm,
  withVcpus,
} from '../device-change.js';
import { DriverCore, gracefulDestroyRefused } from '../domain-core.js';
import type { Job } from '../jobs.js';
import { checkClientTls, checkTls } from '../migration-tls.js';
import { TestDomain, type TestRuntime } from './domain.js';
import { PrivilegedSimulation, type SimRun, type StartAttempt } from './handlers.js';
import { addTo } from './hotplug.js';
import {
  checkSameDefinition,
  connectTo,
  listen,
  type MigrationRecord,
  migrationAborted,
  parseAddress,
  tlsHandshake,
  unlisten,
} from './migration.js';
import { Simulation } from './simulation.js';

/** Options the test driver takes from `connect()`. */
export interface TestDriverOptions {
  readonly plugins?: readonly string[];
  /** Refused: the test driver has no root to serve a control socket on. */
  readonly controlSocket?: unknown;
}

/**
 * Opens the in-memory test driver for `test:///default`: a fresh, empty driver per call, with no
 * files, no processes and no lock. Any other path, or any URI parameter, is `INVALID_URI`.
 */
export async function openTestDriver(
  uri: string,
  parsed: ParsedUri,
  options: TestDriverOptions = {},
): Promise<Driver> {
  if (options.controlSocket) {
    throw new VirtError(
      ErrorCode.CONFIG_UNSUPPORTED,
      'test:///default has no root to serve a control socket on; use qemu:///embed',
      { path: 'controlSocket' },
    );
  }
  if (parsed.path !== '/default') {
    throw new VirtError(
      ErrorCode.INVALID_URI,
      `unsupported test URI path '${parsed.path}' in '${uri}': only the in-memory driver 'test:///default' exists`,
    );
  }
  for (const key of parsed.params.keys())
    throw new VirtError(ErrorCode.INVALID_URI, `unknown URI parameter '${key}' in '${uri}'`);
  const driver = new TestDriver(uri);
  try {
    await loadPlugins(driver[INTERNAL_SEAM], options.plugins ?? []);
  } catch (err) {
    await driver.close();
    throw err;
  }
  return driver;
}

/**
 * The in-memory test driver behind `test:///default`, for consumers' own unit tests. It follows the
 * embedded QEMU driver's rules (the same `DOMAIN_EXISTS`, `NO_DOMAIN` and `OPERATION_INVALID`
 * errors, per-domain serialisation, states, reasons and events) without running anything:
 *
 * - `getInfo()` reports a driver id (1, 2, … per driver) and a synthetic pid (see
 *   `SIMULATED_PID_BASE` of `virtkit/internal`) while active, `cpuTimeNs: 0n`, and the taint
 *   `internal-handler` once a handler was used.
 * - Disks, interfaces and DIMMs get the embedded driver's stable aliases at define (`virtio-disk0`,
 *   `sata0-0-1`, `net0`, `dimm0`); no addresses. The live definition is the persistent one as it was at start, plus
 *   the devices attached or detached live since.
 * - `shutdown()` of a running domain stops it at once (`stopped shutdown`); a paused guest never
 *   sees the power button, as with QEMU, so it waits `timeoutMs` and then fails with
 *   `OPERATION_TIMEOUT` or, with `fallbackToDestroy`, destroys the domain.
 * - `destroy({ graceful: true })` of a running domain stops it (`stopped destroyed`): the simulated
 *   QEMU always exits on SIGTERM, so it never fails with the embedded driver's `OPERATION_TIMEOUT`.
 * - `reboot()` and `reset()` of an active domain keep its id and state; each emits `rebooted` (`host`).
 * - `createDomain()` makes a transient domain, removed (`undefined removed`) once it stops.
 * - Everything lives in memory: `close()` forgets every domain.
 *
 * It exposes the internal seam (`driverKind: 'test'`) with its own handler table, so
 * `openInternal(conn, { apiVersion: '1.0' })` works and the table is sealed on the first start
 * (`HANDLERS_SEALED`) exactly as in the embedded driver. It invokes registered handlers at the
 * embedded driver's phases, in its order, with its arguments, deadlines, AbortSignals and result
 * schemas, against a simulated process (`simulatedHost(conn)`), whose limits, scheduling and
 * cgroups the post-checks read back; without a handler, a simulated built-in does the work. A
 * failing handler fails the start with the embedded driver's code and rolls the domain back.
 * Device changes (phase `hotplug`) and live migration between test drivers of one process (phase
 * `migration-in` on the destination) follow the embedded driver's rules too: `persist` and
 * `undefineSource` as there, and `tls` credentials checked as there, with the handshake simulated
 * on the real certificate files (same CA, valid now, the destination's certificate naming the host).
 */
export class TestDriver extends DriverCore<TestDomain> implements Driver {
  readonly uri: string;
  readonly handlers = new HandlerTable();
  readonly #simulation = new Simulation();
  readonly #privileged = new PrivilegedSimulation(this.handlers, this.#simulation);
  readonly #simRuns = new WeakMap<TestRuntime, SimRun>();
  readonly #starting = new Map<TestDomain, StartAttempt>();
  /** The door through which `virtkit/internal` reaches this driver's handler table and simulation. */
  readonly [INTERNAL_SEAM]: SimulationSeam = {
    seamVersion: SEAM_VERSION,
    internalApiVersion: INTERNAL_API_VERSION,
    driverKind: 'test',
    handlers: this.handlers,
    simulation: this.#simulation,
  };
  #nextId = 1;

  constructor(uri: string) {
    super();
    this.uri = uri;
  }

  /** A domain a migration brought in without `persist` is removed once it stops, as in the embedded driver. */
  protected override afterEvent(dom: TestDomain, event: DomainEvent): void {
    if (event.type === 'stopped' && this.#transient.delete(dom.def.uuid)) void this.#forget(dom);
  }

  /** Domains a migration brought in without `persist`: removed once they stop, as in the embedded driver. */
  readonly #transient = new Set<string>();

  async #forget(dom: TestDomain): Promise<void> {
    await this.job(dom, 'undefine', undefined, () => {
      if (dom.active || this.closed || this.domains.find(dom.def.uuid) !== dom) return;
      this.domains.delete(dom.def.uuid);
      this.#simulation.forgetLog(dom.def.uuid);
      this.emit(dom, 'undefined', 'removed');
    }).catch(() => undefined);
  }

  async defineDomain(def: DomainDefinition): Promise<DomainRef> {
    this.checkOpen();
    const byUuid = this.domains.existingFor(def);
    const dom = byUuid ?? new TestDomain(def);
    return dom.jobs.run(
      'define',
      () => dom.ident,
      undefined,
      () => {
        // The device model's define-time step: the embedded driver's stable aliases.
        dom.def = withDeviceAliases(structuredClone(def));
        // Defined, a transient domain becomes persistent, as in libvirt.
        this.#transient.delete(def.uuid);
        this.domains.set(dom);
        this.emit(dom, 'defined', byUuid ? 'updated' : 'added');
        return this.ref(dom);
      },
    );
  }

  async createDomain(def: DomainDefinition, options: StartOptions): Promise<DomainRef> {
    this.checkOpen();
    const taken = this.domains.find(def.name) ?? this.domains.find(def.uuid);
    if (taken) {
      throw new VirtError(
        ErrorCode.DOMAIN_EXISTS,
        `a domain named '${taken.def.name}' (uuid ${taken.def.uuid}) already exists; start it, or give the new one another name and uuid`,
        { domain: taken.ident },
      );
    }
    const dom = new TestDomain(withDeviceAliases(structuredClone(def)));
    this.domains.set(dom);
    this.#transient.add(def.uuid);
    this.emit(dom, 'defined', 'added');
    try {
      await this.start(def.uuid, options);
    } catch (err) {
      this.#transient.delete(dom.def.uuid);
      await this.#forget(dom);
      throw err;
    }
    return this.ref(dom);
  }

  async undefineDomain(uuid: string, options: OperationOptions = {}): Promise<void> {
    const dom = this.domain(uuid);
    await this.job(dom, 'undefine', options.signal, () => {
      if (dom.active) {
        throw new VirtError(
          ErrorCode.OPERATION_INVALID,
          `domain '${dom.def.name}' is running; destroy it first`,
        );
      }
      this.domains.delete(uuid);
      this.#simulation.forgetLog(uuid);
      this.emit(dom, 'undefined', 'removed');
    });
  }

  getDefinition(uuid: string, live: boolean): DomainDefinition {
    const dom = this.domain(uuid);
    return structuredClone(live && dom.run ? dom.run.live : dom.def);
  }

  async getInfo(uuid: string): Promise<DomainInfo> {
    const dom = this.domain(uuid);
    const sim = dom.run && this.#simRuns.get(dom.run);
    return this.info(dom, dom.run?.live ?? dom.def, {
      id: dom.run ? dom.run.id : null,
      // The simulated process's synthetic pid.
      pid: sim ? sim.pid : null,
      cpuTimeNs: 0n,
      taints: sim ? [...sim.taints] : [],
      persistent: !this.#transient.has(uuid),
    });
  }

  start(uuid: string, options: StartOptions): Promise<void> {
    const dom = this.domain(uuid);
    return this.job(dom, 'start', options.signal, async (job) => {
      await this.#launch(dom, job, structuredClone(dom.def), false);
      if (options.paused)
        this.setState(dom, { state: 'paused', reason: 'user' }, ['started', 'booted'], 'suspended');
      else this.setState(dom, { state: 'running', reason: 'booted' }, 'started');
    });
  }

  /**
   * The simulated process of a start, or of the destination of a migration (`incoming`: the
   * privileged operations in phase `migration-in`); a failure leaves the domain shut off (`failed`).
   */
  async #launch(dom: TestDomain, job: Job, live: DomainDefinition, incoming: boolean): Promise<void> {
    this.checkOpen();
    if (dom.run)
      throw new VirtError(ErrorCode.OPERATION_INVALID, `domain '${dom.def.name}' is already running`);
    this.handlers.seal(`domain '${dom.def.name}' was started`);
    const attempt: StartAttempt = {
      cancel: job.controller,
      spawned: false,
      // As the embedded driver: paused/starting-up from the spawn until the start finishes.
      onSpawn: () => this.setState(dom, { state: 'paused', reason: 'starting-up' }),
    };
    this.#starting.set(dom, attempt);
    let sim: SimRun;
    try {
      sim = await this.#privileged.start(live, () => this.#nextId++, attempt, incoming);
    } catch (err) {
      this.setState(
        dom,
        { state: 'shutoff', reason: 'failed' },
        ...(attempt.spawned ? (['stopped'] as const) : []),
      );
      throw toVirtError(err, ErrorCode.OPERATION_FAILED, `cannot start domain '${dom.def.name}'`, {
        domain: dom.ident,
      });
    } finally {
      this.#starting.delete(dom);
    }
    let markStopped!: (how: 'stopped' | 'closed') => void;
    const stopped = new Promise<'stopped' | 'closed'>((resolve) => {
      markStopped = resolve;
    });
    dom.run = { id: sim.id, live, stopped, markStopped };
    this.#simRuns.set(dom.run, sim);
  }

  suspend(uuid: string, options: OperationOptions = {}): Promise<void> {
    const dom = this.domain(uuid);
    return this.job(dom, 'suspend', options.signal, () => {
      dom.requireActive();
      if (dom.state === 'paused')
        throw new VirtError(ErrorCode.OPERATION_INVALID, `domain '${dom.def.name}' is already paused`);
      this.changeState(dom, { state: 'paused', reason: 'user' }, 'suspended');
    });
  }

  resume(uuid: string, options: OperationOptions = {}): Promise<void> {
    const dom = this.domain(uuid);
    return this.job(dom, 'resume', options.signal, () => {
      dom.requireActive();
      if (dom.state !== 'paused')
        throw new VirtError(ErrorCode.OPERATION_INVALID, `domain '${dom.def.name}' is not paused`);
      this.changeState(dom, { state: 'running', reason: 'unpaused' }, 'resumed');
    });
  }

  /**
   * The simulated guest reboots at once and goes on running (a paused one stays paused): the
   * domain keeps its id and state, as with QEMU's reset.
   */
  reboot(uuid: string, options: RebootOptions = {}): Promise<void> {
    const dom = this.domain(uuid);
    return this.job(dom, 'reboot', options.signal, () => {
      dom.requireActive();
      this.emit(dom, 'rebooted', 'host');
    });
  }

  /** As {@link TestDriver.reboot}: the domain keeps its id and state. */
  reset(uuid: string, options: OperationOptions = {}): Promise<void> {
    const dom = this.domain(uuid);
    return this.job(dom, 'reset', options.signal, () => {
      dom.requireActive();
      this.emit(dom, 'rebooted', 'host');
    });
  }

  /** The definitions a change affects (drivers/device-change.ts). */
  #affect(dom: TestDomain, options: DeviceChangeOptions): Affect {
    return affect(dom.def.name, { active: dom.active, running: dom.active }, options);
  }

  /**
   * A device change with the embedded driver's rules and privileged calls: a live attach invokes
   * `storage.openFile` (disk) or `net.openTap` (ethernet) in phase `hotplug` on the simulated
   * process, a DIMM's `process.setMaxMemLock` when its limit does not cover the new need, and a
   * failure leaves both definitions as they were.
   */
  attachDevice(uuid: string, input: DeviceDefinition, options: DeviceChangeOptions): Promise<void> {
    const dom = this.domain(uuid);
    return this.job(dom, 'device-change', options.signal, async (job) => {
      const { live, config } = this.#affect(dom, options);
      if (isMemory(input)) return this.#attachMemory(dom, job, input.memory, { live, config });
      let persistent: DomainDefinition | undefined;
      let chosen = input;
      if (config) ({ def: persistent, device: chosen } = addTo(dom.def, input));
      const run = dom.run;
      const sim = run && this.#simRuns.get(run);
      if (live && run && sim) {
        checkHotpluggable(chosen, false);
        const added = addTo(run.live, chosen);
        await this.#privileged.hotplug(run.live, sim, added.device, job.signal);
        job.checkAborted();
        run.live = added.def;
        this.emit(dom, 'device-added', aliasOf(added.device));
      }
      if (persistent) dom.def = persistent;
    });
  }

  async #attachMemory(
    dom: TestDomain,
    job: Job,
    dimm: MemoryDeviceDefinition,
    affects: Affect,
  ): Promise<void> {
    // Each definition gets its own free slot (libvirt assigns live and config separately).
    const persistent = affects.config ? withDimm(dom.def, dimm).def : undefined;
    const run = dom.run;
    const sim = run && this.#simRuns.get(run);
    if (affects.live && run && sim) {
      const added = withDimm(run.live, dimm);
      await this.#privileged.hotplugMemory(added.def, sim, job.signal);
      job.checkAborted();
      run.live = added.def;
      this.emit(dom, 'device-added', added.dimm.alias as string);
    }
    if (persistent) dom.def = persistent;
  }

  /**
   * A live detach: a running guest lets go at once (`device-removed`); a paused one never answers
   * the unplug request, as with QEMU, so the call waits `timeoutMs` (default 10 000) and fails with
   * `OPERATION_TIMEOUT`, the device still attached. DIMMs likewise.
   */
  detachDevice(uuid: string, input: DeviceMatch, options: DetachDeviceOptions): Promise<void> {
    const dom = this.domain(uuid);
    return this.job(dom, 'device-change', options.signal, async (job) => {
      const affects = this.#affect(dom, options);
      if (isMemoryMatch([dom.run?.live, dom.def], input))
        return this.#detachMemory(dom, job, input, affects, options);
      const match = input as PciDeviceMatch;
      const { live, config } = affects;
      const run = dom.run;
      const liveDevice = live && run ? findDevice(run.live, match) : undefined;
      const configDevice = config ? findDevice(dom.def, match) : undefined;
      if ((live && !liveDevice) || (config && !configDevice))
        throw noSuchDevice(dom.def.name, match, live && !liveDevice ? 'running' : 'persistent');
      if (liveDevice && run) {
        checkHotpluggable(liveDevice, true);
        const alias = aliasOf(liveDevice);
        await this.#guestLetsGo(dom, job, alias, options.timeoutMs);
        run.live = withoutDevice(run.live, liveDevice);
        this.emit(dom, 'device-removed', alias);
      }
      if (configDevice) dom.def = withoutDevice(dom.def, configDevice);
    });
  }

  async #detachMemory(
    dom: TestDomain,
    job: Job,
    match: DeviceMatch,
    affects: Affect,
    options: DetachDeviceOptions,
  ): Promise<void> {
    const run = dom.run;
    const liveDimm = affects.live && run ? findDimm(run.live, match) : undefined;
    const configDimm = affects.config ? findDimm(dom.def, match) : undefined;
    if ((affects.live && !liveDimm) || (affects.config && !configDimm))
      throw noSuchDimm(dom.def.name, affects.live && !liveDimm ? 'running' : 'persistent');
    if (liveDimm && run) {
      const alias = liveDimm.alias as string;
      await this.#guestLetsGo(dom, job, alias, options.timeoutMs);
      run.live = withoutDimm(run.live, liveDimm);
      this.emit(dom, 'device-removed', alias);
    }
    if (configDimm) dom.def = withoutDimm(dom.def, configDimm);
  }

  /** A running guest lets go at once; a paused one never does: `OPERATION_TIMEOUT` after `timeoutMs`. */
  async #guestLetsGo(dom: TestDomain, job: Job, alias: string, timeoutMs = 10_000): Promise<void> {
    if (dom.state !== 'paused') return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      const onAbort = () => {
        clearTimeout(timer);
        resolve();
      };
      job.signal.addEventListener('abort', onAbort, { once: true });
    });
    job.checkAborted();
    throw new VirtError(
      ErrorCode.OPERATION_TIMEOUT,
      `the guest did not release ${alias} within ${timeoutMs} ms; it is still attached`,
      { alias, timeoutMs },
    );
  }

  /**
   * Sets the number of online vCPUs with the embedded driver's rules (`drivers/qemu/hotplug-vcpus.ts`):
   * each vCPU added gets a thread at its documented tid, placed and scheduled in phase `hotplug`
   * before the guest onlines it (a failure removes it again); unplugging is refused for TCG (`qemu`)
   * domains, and after a TCG rollback removed a vCPU, as QEMU 7.2 crashes on the next hotplug.
   */
  setVcpus(uuid: string, count: number, options: DeviceChangeOptions): Promise<void> {
    const dom = this.domain(uuid);
    return this.job(dom, 'device-change', options.signal, async (job) => {
      const { live, config } = this.#affect(dom, options);
      if (config) checkVcpuCount(dom.def, count, 'persistent');
      const run = dom.run;
      const sim = run && this.#simRuns.get(run);
      if (live && run && sim) {
        checkVcpuCount(run.live, count, 'running');
        let current = run.live.vcpu.current ?? run.live.vcpu.count;
        while (current < count) {
          if (sim.vcpuUnplugged) throw tcgReplugRefused(dom.def.name);
          const online = this.#privileged.vcpuIndexes(sim);
          const index = Array.from({ length: run.live.vcpu.count }, (_, i) => i).find(
            (i) => !online.includes(i),
          );
          await this.#privileged.hotplugVcpu(run.live, sim, index as number, job.signal);
          run.live = withVcpus(run.live, ++current);
        }
        if (current > count && run.live.type === 'qemu') throw tcgUnplugRefused(dom.def.name, current, count);
        while (current > count) {
          const last = this.#privileged
            .vcpuIndexes(sim)
            .filter((i) => i !== 0)
            .at(-1);
          if (last === undefined)
            throw new VirtError(ErrorCode.OPERATION_INVALID, 'vCPU 0 cannot be unplugged', { path: 'count' });
          await this.#privileged.unplugVcpu(run.live, sim, last);
          run.live = withVcpus(run.live, --current);
        }
      }
      if (config) dom.def = withVcpus(dom.def, count);
    });
  }

  /**
   * A running guest powers off at once; a paused one never sees the power button, so the call
   * waits `timeoutMs` (default 60 000) for a destroy, then destroys or fails as asked.
   */
  shutdown(uuid: string, options: ShutdownOptions): Promise<void> {
    const dom = this.domain(uuid);
    return this.job(dom, 'shutdown', options.signal, async (job) => {
      const run = dom.requireActive();
      if (dom.state !== 'paused') return this.#stop(dom, 'shutdown');
      const timeoutMs = options.timeoutMs ?? 60_000;
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), timeoutMs);
      });
      const aborted = new Promise<'aborted'>((resolve) => {
        if (job.aborted) resolve('aborted');
        else job.signal.addEventListener('abort', () => resolve('aborted'), { once: true });
      });
      const outcome = await Promise.race([run.stopped, timedOut, aborted]);
      clearTimeout(timer);
      job.checkAborted();
      if (outcome === 'stopped') return;
      this.checkOpen();
      if (options.fallbackToDestroy) return this.#stop(dom, 'destroyed');
      throw new VirtError(
        ErrorCode.OPERATION_TIMEOUT,
        `domain '${dom.def.name}' did not power off within ${timeoutMs} ms; destroy it or pass fallbackToDestroy`,
        { domain: dom.ident },
      );
    });
  }

  /**
   * Destroy does not queue behind a running job: it must be able to end a hung shutdown, or a start
   * stuck in a handler once its (simulated) process exists: that handler's AbortSignal fires, the
   * start rolls back and fails, and destroy returns once it has.
   */
  async destroy(uuid: string, options: DestroyOptions): Promise<void> {
    const dom = this.domain(uuid);
    // The simulated QEMU always exits on SIGTERM, so a graceful destroy is a destroy once running.
    if (options.graceful && !dom.run) throw gracefulDestroyRefused(dom.ident, this.#starting.has(dom));
    const destroy = () => {
      if (!dom.run) {
        throw new VirtError(ErrorCode.OPERATION_INVALID, `domain '${dom.def.name}' is not running`, {
          domain: dom.ident,
        });
      }
      return this.#stop(dom, 'destroyed');
    };
    if (dom.run) {
      this.abortForDestroy(dom);
      return destroy();
    }
    const attempt = this.#starting.get(dom);
    if (attempt?.spawned) {
      dom.jobs.current?.abort('destroy');
      return this.job(dom, 'destroy', undefined, async () => undefined);
    }
    return this.job(dom, 'destroy', undefined, destroy);
  }

  readonly #migrations = new WeakMap<TestDomain, MigrationRecord>();

  /** The migration of `dom` is over: an incoming one stops listening (and learns it failed unless `ok`). */
  #endMigration(dom: TestDomain, ok: boolean): void {
    const record = this.#migrations.get(dom);
    if (record?.role === 'in') {
      unlisten(record.uri);
      record.settle(ok);
    }
    this.#migrations.delete(dom);
  }

  #outgoing(dom: TestDomain, what: string): Extract<MigrationRecord, { role: 'out' }> {
    const record = this.#migrations.get(dom);
    if (record?.role !== 'out')
      throw new VirtError(
        ErrorCode.OPERATION_INVALID,
        `domain '${dom.def.name}' has no outgoing migration to ${what}; call migrateBegin first`,
        { domain: dom.ident },
      );
    return record;
  }

  /** Step 1 (source): the domain must run or be paused; it is migrating out until confirm. */
  migrateBegin(uuid: string): Promise<OutgoingMigration> {
    const dom = this.domain(uuid);
    return this.job(dom, 'migration-out', undefined, () => {
      const run = dom.requireActive();
      if (this.#migrations.has(dom))
        throw new VirtError(ErrorCode.OPERATION_INVALID, `domain '${dom.def.name}' is already migrating`, {
          domain: dom.ident,
        });
      const running = dom.state === 'running';
      this.#migrations.set(dom, { role: 'out', phase: 'begun', wasRunning: running });
      return {
        definition: structuredClone(dom.def),
        live: structuredClone(run.live),
        running,
        taints: [...(this.#simRuns.get(run)?.taints ?? [])],
      };
    });
  }

  /**
   * Step 2 (destination): the simulated process starts with the privileged operations in phase
   * `migration-in` (memlock, placement, scheduling; descriptors in `pre-exec`), paused (reason
   * `migration`), then listens at `listen` for the stream of a test driver of this process. A domain
   * prepare defined without `persist` is transient: it is removed once it stops.
   */
  async migratePrepare(offer: ResolvedOffer, options: MigratePrepareOptions): Promise<PreparedIncoming> {
    this.checkOpen();
    parseAddress(options.listen, 'listen');
    if (options.tls) checkTls(options.tls, 'server', 'tls');
    const def = offer.definition;
    const existing = this.domains.existingFor(def);
    if (existing?.active)
      throw new VirtError(
        ErrorCode.OPERATION_INVALID,
        `domain '${def.name}' is already active at the destination`,
        { domain: { name: def.name, uuid: def.uuid } },
      );
    if (existing) checkSameDefinition(existing.def, def);
    else await this.defineDomain(def);
    const dom = this.domains.get(def.uuid);
    try {
      return await this.job(dom, 'migration-in', options.signal, async (job) => {
        await this.#launch(dom, job, structuredClone(offer.live), true);
        this.setState(dom, { state: 'paused', reason: 'migration' });
        try {
          if (job.aborted) throw migrationAborted('prepare', dom.ident);
          let settle!: (ok: boolean) => void;
          const outcome = new Promise<boolean>((resolve) => {
            settle = resolve;
          });
          const uri = listen(options.listen, {
            uuid: def.uuid,
            tls: options.tls,
            deliver: () => settle(true),
          });
          if (!existing && options.persist !== true) this.#transient.add(def.uuid);
          this.#migrations.set(dom, {
            role: 'in',
            uri,
            running: offer.cookie.running,
            definedHere: !existing,
            outcome,
            settle,
          });
          return { uri, cookie: { version: 1, uuid: def.uuid, uri }, name: def.name, uuid: def.uuid };
        } catch (err) {
          await this.#stop(dom, 'destroyed');
          throw err;
        }
      });
    } catch (err) {
      if (!existing) await this.#undefineAfterMigration(dom);
      throw err;
    }
  }

  /**
   * Step 3 (source): "streams" to the destination listening at `uri` (none: `OPERATION_FAILED`, the
   * source runs as before). The source is then paused (reason `migration`) until confirm.
   */
  migratePerform(uuid: string, uri: string, options: MigratePerformOptions): Promise<void> {
    const dom = this.domain(uuid);
    return this.job(dom, 'migration-out', options.signal, (job) => {
      const record = this.#outgoing(dom, 'perform');
      const run = dom.requireActive();
      const address = parseAddress(uri, 'uri');
      const hostname = options.tls ? checkClientTls(options.tls, address) : undefined;
      if (options.cookie && options.cookie.uuid !== dom.def.uuid)
        throw new VirtError(ErrorCode.OPERATION_INVALID, 'the destination cookie belongs to another domain', {
          field: 'cookie.uuid',
        });
      if (record.phase !== 'begun')
        throw new VirtError(
          ErrorCode.OPERATION_INVALID,
          `the migration of '${dom.def.name}' was already performed`,
        );
      if (job.aborted) throw migrationAborted('perform', dom.ident);
      record.wasRunning = dom.state === 'running';
      const dest = connectTo(uri);
      if (dest?.uuid !== dom.def.uuid)
        throw new VirtError(
          ErrorCode.OPERATION_FAILED,
          `migration of '${dom.def.name}' failed: no destination for it listens at ${uri}`,
          { domain: dom.ident, status: 'failed' },
        );
      // As QEMU, the destination drops a stream that fails the handshake and keeps waiting.
      const refused = tlsHandshake(dest.tls, options.tls, hostname);
      if (refused)
        throw new VirtError(
          ErrorCode.OPERATION_FAILED,
          `migration of '${dom.def.name}' failed: TLS handshake: ${refused}`,
          { domain: dom.ident, status: 'failed' },
        );
      const bytes = (run.live.memoryKiB ?? 0) * 1024;
      try {
        options.onProgress?.({
          status: 'completed',
          elapsedMs: 0,
          dataTotal: bytes,
          dataProcessed: bytes,
          dataRemaining: 0,
          dirtyPagesRate: 0,
        });
      } catch {
        // a throwing observer does not decide the migration
      }
      // The vCPUs stop for the end of the stream, as QEMU's STOP reports it.
      const ran = dom.state === 'running';
      this.setState(dom, { state: 'paused', reason: 'migration' }, ...(ran ? (['suspended'] as const) : []));
      dest.deliver();
      record.phase = 'performed';
    });
  }

  /**
   * Step 4 (destination): waits for the stream, then runs (or stays paused, as the source was) with
   * event `started migrated`. Cancelled, or when the source gave up, it is destroyed instead (and
   * undefined if prepare defined it).
   */
  async migrateFinish(uuid: string, options: MigrationEndOptions): Promise<void> {
    const dom = this.domain(uuid);
    const first = this.#migrations.get(dom);
    const definedHere = first?.role === 'in' && first.definedHere;
    try {
      await this.job(dom, 'migration-in', options.signal, async (job) => {
        const record = this.#migrations.get(dom);
        if (record?.role !== 'in')
          throw new VirtError(
            ErrorCode.OPERATION_INVALID,
            `domain '${dom.def.name}' has no incoming migration to finish`,
            { domain: dom.ident },
          );
        const aborted = new Promise<false>((resolve) => {
          if (job.aborted) resolve(false);
          job.signal.addEventListener('abort', () => resolve(false), { once: true });
        });
        const ok = options.cancelled ? false : await Promise.race([record.outcome, aborted]);
        if (!ok) {
          await this.#stop(dom, 'destroyed');
          if (options.cancelled) return;
          if (job.aborted) throw migrationAborted('finish', dom.ident);
          throw new VirtError(
            ErrorCode.OPERATION_FAILED,
            `incoming migration of '${dom.def.name}' failed: the stream did not arrive; the destination was rolled back`,
            { domain: dom.ident },
          );
        }
        this.#endMigration(dom, true);
        this.setState(
          dom,
          record.running ? { state: 'running', reason: 'migrated' } : { state: 'paused', reason: 'migrated' },
          'started',
        );
      });
    } catch (err) {
      if (definedHere) await this.#undefineAfterMigration(dom);
      throw err;
    }
    if (options.cancelled && definedHere) await this.#undefineAfterMigration(dom);
  }

  /**
   * Step 5 (source): after a completed stream the simulated process exits (`stopped migrated`,
   * `cgroup.release` in phase release); with `cancelled` the source resumes if it ran.
   */
  migrateConfirm(uuid: string, options: MigrationEndOptions): Promise<void> {
    const dom = this.domain(uuid);
    return this.job(dom, 'migration-out', options.signal, async () => {
      const record = this.#outgoing(dom, 'confirm');
      if (options.cancelled || record.phase !== 'performed') {
        if (!options.cancelled)
          throw new VirtError(
            ErrorCode.OPERATION_INVALID,
            `the migration of '${dom.def.name}' has not completed; confirm it with { cancelled: true }`,
          );
        this.#migrations.delete(dom);
        if (dom.run && record.wasRunning) {
          const paused = dom.state !== 'running';
          this.setState(
            dom,
            { state: 'running', reason: 'migration-cancelled' },
            ...(paused ? [['resumed', 'unpaused'] as const] : []),
          );
        }
        return;
      }
      this.#migrations.delete(dom);
      await this.#stop(dom, 'migrated');
    });
  }

  /** A domain that prepare defined leaves nothing behind when its migration did not happen. */
  async #undefineAfterMigration(dom: TestDomain): Promise<void> {
    if (dom.active || this.closed) return;
    await this.undefineDomain(dom.def.uuid).catch(() => undefined);
  }

  readonly #stopping = new WeakSet<TestRuntime>();

  /** The simulated QEMU exits, `cgroup.release` runs (phase release), then the domain is shut off. */
  async #stop(dom: TestDomain, reason: 'shutdown' | 'destroyed' | 'migrated'): Promise<void> {
    const run = dom.run;
    if (!run || this.#stopping.has(run)) return;
    this.#stopping.add(run);
    this.#endMigration(dom, false);
    const sim = this.#simRuns.get(run);
    if (sim) await this.#privileged.release(dom.run?.live ?? dom.def, sim);
    if (dom.run !== run) return;
    dom.run = undefined;
    this.setState(dom, { state: 'shutoff', reason }, 'stopped');
    run.markStopped('stopped');
  }

  /** Forgets every domain: nothing of a test driver outlives its connection. */
  async close(): Promise<void> {
    if (!this.markClosed()) return;
    this.dropListeners();
    for (const dom of this.domains.values()) {
      this.#endMigration(dom, false);
      dom.run?.markStopped('closed');
    }
    this.domains.clear();
  }
}

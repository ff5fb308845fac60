import { errorMessage } from '../../errors.js';
import type { HandlerTable } from '../../privileged/handler-table.js';
import { closeResultFds, type InvocationScope, invoke } from '../../privileged/invoke.js';
import { limitCovers, memLockNeed } from '../../privileged/memlock.js';
import type { OperationArgs, Phase } from '../../privileged/operations.js';
import type { DomainDefinition } from '../../stable/definition/schema.js';
import type { PciDeviceDefinition } from '../../stable/devices.js';
import { placementCpusets, placesThreads, schedulingOf } from '../thread-tuning.js';
import type { SimProcess, Simulation } from './simulation.js';

type Placements = OperationArgs<'cgroup.release'>['placements'];

/** The privileged side of a simulated running domain: what release must give back. */
export interface SimRun {
  readonly id: number;
  readonly pid: number;
  readonly taints: string[];
  placements: Placements;
  placementAttempted: boolean;
  /** A vCPU was unplugged from a TCG domain: QEMU 7.2 would crash on the next hotplug. */
  vcpuUnplugged?: boolean;
}

/** A start in progress: destroy aborts it once the process exists, as in the embedded driver. */
export interface StartAttempt {
  readonly cancel: AbortController;
  spawned: boolean;
  /** Called once the simulated process exists (the domain reads paused/starting-up from then on). */
  readonly onSpawn?: () => void;
}

/** The cgroup parent the simulated built-in places threads under (as the embedded driver's default). */
const CGROUP_PARENT = 'virtkit';

/**
 * Runs the embedded driver's privileged operations against a {@link Simulation}: the same
 * operations, phases, order, arguments, deadlines, AbortSignals, result schemas and taint, through
 * the same `invoke()`; only the built-in fallbacks and the post-checks act on the simulated process.
 */
export class PrivilegedSimulation {
  readonly #handlers: HandlerTable;
  readonly #sim: Simulation;

  constructor(handlers: HandlerTable, sim: Simulation) {
    this.#handlers = handlers;
    this.#sim = sim;
  }

  #scope(
    def: DomainDefinition,
    id: number | null,
    pid: number | undefined,
    taints: string[],
    signal?: AbortSignal,
  ): InvocationScope {
    return {
      handlers: this.#handlers,
      domain: { uuid: def.uuid, name: def.name, id },
      pid,
      taints,
      cgroupParent: CGROUP_PARENT,
      signal,
      log: (line) => this.#sim.appendLog(def.uuid, line),
    };
  }

  #invoke<Op extends Parameters<typeof invoke>[1]>(
    scope: InvocationScope,
    op: Op,
    phase: Phase,
    args: OperationArgs<Op>,
  ): ReturnType<typeof invoke<Op>> {
    return invoke(scope, op, phase, args, this.#sim.backend);
  }

  /**
   * The start sequence of `drivers/qemu/start.ts`, simulated: pre-exec descriptors (no pid), the
   * "spawn" (id and synthetic pid), memlock on the not-yet-exec'd process, then startup placement
   * and scheduling with every vCPU paused. A failure rolls back what was done (release of
   * placements, the simulated process, descriptors) and rethrows the operation's error. For the
   * destination of a migration (`incoming`), memlock, placement and scheduling run in phase
   * `migration-in`, as in the embedded driver; the descriptors are still opened in `pre-exec`.
   */
  async start(
    def: DomainDefinition,
    allocateId: () => number,
    attempt: StartAttempt,
    incoming = false,
  ): Promise<SimRun> {
    const taints: string[] = [];
    const signal = attempt.cancel.signal;
    const fds: number[] = [];
    let run: SimRun | undefined;
    try {
      const preScope = this.#scope(def, null, undefined, taints, signal);
      for (const disk of def.disks) {
        if (disk.source === undefined) continue; // an empty CD-ROM: nothing to open
        const { fd } = await this.#invoke(preScope, 'storage.openFile', 'pre-exec', {
          path: disk.source,
          mode: disk.readonly ? 'r' : 'rw',
        });
        fds.push(fd);
      }
      for (const nic of def.interfaces) {
        if (nic.type !== 'ethernet') continue;
        const { fds: tapFds } = await this.#invoke(preScope, 'net.openTap', 'pre-exec', {
          ifname: nic.target?.dev,
          queues: nic.queues ?? 1,
          vnetHdr: nic.model.startsWith('virtio'),
          managed: nic.target?.managed !== false,
        });
        fds.push(...tapFds);
      }
      const id = allocateId();
      const proc = this.#sim.spawn(def, id);
      attempt.spawned = true;
      attempt.onSpawn?.();
      run = { id, pid: proc.pid, taints, placements: [], placementAttempted: false };
      // QEMU inherited the descriptors; the driver's copies go.
      closeResultFds({ fds: fds.splice(0) });
      const scope = this.#scope(def, id, proc.pid, taints, signal);
      await this.#raiseMemLock(scope, def, proc, incoming ? 'migration-in' : 'pre-exec');
      await this.#configureThreads(scope, def, proc, run, incoming ? 'migration-in' : 'startup');
      signal.throwIfAborted();
      return run;
    } catch (err) {
      closeResultFds({ fds });
      if (run) await this.release(def, run);
      throw err;
    }
  }

  async #raiseMemLock(
    scope: InvocationScope,
    def: DomainDefinition,
    proc: SimProcess,
    phase: 'pre-exec' | 'migration-in' | 'hotplug',
  ): Promise<void> {
    const need = memLockNeed(def);
    if (!need) return;
    const current = { ...proc.memlock };
    if (limitCovers(current.soft, need.bytes) && limitCovers(current.hard, need.bytes)) {
      scope.log(
        `internal: process.setMaxMemLock skipped: limit ${current.soft}/${current.hard} covers ${need.bytes} (${need.breakdown.explanation})`,
      );
      return;
    }
    await this.#invoke(scope, 'process.setMaxMemLock', phase, {
      pid: proc.pid,
      bytes: need.bytes,
      current,
      breakdown: need.breakdown,
    });
  }

  async #configureThreads(
    scope: InvocationScope,
    def: DomainDefinition,
    proc: SimProcess,
    run: SimRun,
    phase: 'startup' | 'migration-in',
  ): Promise<void> {
    const tune = def.cputune;
    if (!tune) return;
    const vcpus = proc.threads.filter((t) => t.role === 'vcpu');
    const iothreads = proc.threads.filter((t) => t.role === 'iothread');
    if (placesThreads(def)) {
      run.placementAttempted = true;
      ({ placements: run.placements } = await this.#invoke(scope, 'cgroup.placeThreads', phase, {
        pid: proc.pid,
        threads: [...vcpus, ...iothreads, ...proc.threads.filter((t) => t.role === 'emulator')].map((t) => ({
          tid: t.tid,
          role: t.role,
          index: t.index,
        })),
        cpusets: placementCpusets(tune),
      }));
    }
    const sched = schedulingOf(tune, vcpus, iothreads);
    if (sched.length > 0)
      await this.#invoke(scope, 'thread.setScheduler', phase, { pid: proc.pid, threads: sched });
  }

  /**
   * The privileged part of a live attach (`drivers/qemu/hotplug.ts`), simulated: a disk's
   * `storage.openFile`, an ethernet interface's `net.openTap`, in phase `hotplug`, on the running
   * simulated process. The descriptors went to QEMU (`add-fd`/`getfd`): the driver's copies are closed.
   */
  async hotplug(
    def: DomainDefinition,
    run: SimRun,
    device: PciDeviceDefinition,
    signal: AbortSignal,
  ): Promise<void> {
    const scope = this.#scope(def, run.id, run.pid, run.taints, signal);
    if ('disk' in device) {
      if (device.disk.source === undefined) return; // an empty CD-ROM: nothing to open
      const { fd } = await this.#invoke(scope, 'storage.openFile', 'hotplug', {
        path: device.disk.source,
        mode: device.disk.readonly ? 'r' : 'rw',
      });
      closeResultFds({ fds: [fd] });
      return;
    }
    const nic = device.interface;
    if (nic.type !== 'ethernet') return;
    const { fds } = await this.#invoke(scope, 'net.openTap', 'hotplug', {
      ifname: nic.target?.dev,
      queues: nic.queues ?? 1,
      vnetHdr: nic.model.startsWith('virtio'),
      managed: nic.target?.managed !== false,
    });
    closeResultFds({ fds });
  }

  /**
   * A vCPU hot-plugged (`drivers/qemu/hotplug-vcpus.ts`), simulated: its new thread is placed with
   * the domain's cpusets and scheduled by its `vcpusched` entry in phase `hotplug`, before the guest
   * could online it; a failure removes the vCPU again and rethrows.
   */
  async hotplugVcpu(def: DomainDefinition, run: SimRun, index: number, signal: AbortSignal): Promise<void> {
    const scope = this.#scope(def, run.id, run.pid, run.taints, signal);
    const tid = this.#sim.addVcpu(run.pid, index);
    try {
      const tune = def.cputune;
      if (!tune) return;
      const thread = { tid, role: 'vcpu' as const, index };
      if (placesThreads(def)) {
        run.placementAttempted = true;
        const { placements } = await this.#invoke(scope, 'cgroup.placeThreads', 'hotplug', {
          pid: run.pid,
          threads: [thread],
          cpusets: placementCpusets(tune),
        });
        run.placements = [...run.placements, ...placements];
      }
      const sched = schedulingOf(tune, [thread]);
      if (sched.length > 0) {
        await this.#invoke(scope, 'thread.setScheduler', 'hotplug', { pid: run.pid, threads: sched });
      }
    } catch (err) {
      this.#sim.removeVcpu(run.pid, index);
      if (def.type === 'qemu') run.vcpuUnplugged = true;
      await this.#releaseVcpuThread(def, run, tid);
      throw err;
    }
  }

  /**
   * A vCPU's thread has ended: `cgroup.release` in phase `hotplug` with just its placements, as
   * `releaseVcpuThreads` of the embedded driver. Never throws; a failed release keeps them for the
   * domain's release.
   */
  async #releaseVcpuThread(def: DomainDefinition, run: SimRun, tid: number): Promise<void> {
    const gone = run.placements.filter((p) => p.tid === tid);
    if (gone.length === 0) return;
    try {
      await this.#invoke(this.#scope(def, run.id, run.pid, run.taints), 'cgroup.release', 'hotplug', {
        pid: run.pid,
        placements: gone,
      });
      run.placements = run.placements.filter((p) => !gone.includes(p));
    } catch (err) {
      this.#sim.appendLog(def.uuid, `release of vCPU thread ${tid} failed: ${errorMessage(err)}`);
    }
  }

  /**
   * A DIMM hot-plugged (`drivers/qemu/hotplug-memory.ts`), simulated: the memlock need of `def`
   * (the definition with the DIMM) is recomputed and, when the simulated process's limit does not
   * cover it, raised through `process.setMaxMemLock` in phase `hotplug` before the memory exists.
   */
  async hotplugMemory(def: DomainDefinition, run: SimRun, signal: AbortSignal): Promise<void> {
    const scope = this.#scope(def, run.id, run.pid, run.taints, signal);
    await this.#raiseMemLock(scope, def, this.#sim.running(run.pid), 'hotplug');
  }

  /** An unplugged vCPU's thread ends (the guest let go at once); its placements are given back. */
  async unplugVcpu(def: DomainDefinition, run: SimRun, index: number): Promise<void> {
    const tid = run.pid + 10 + index;
    this.#sim.removeVcpu(run.pid, index);
    if (def.type === 'qemu') run.vcpuUnplugged = true;
    await this.#releaseVcpuThread(def, run, tid);
  }

  /** The vCPU indexes the simulated process runs. */
  vcpuIndexes(run: SimRun): number[] {
    return this.#sim.vcpuIndexes(run.pid);
  }

  /** The simulated QEMU exits; then `cgroup.release` (phase release) gives back its placements. Never throws. */
  async release(def: DomainDefinition, run: SimRun): Promise<void> {
    this.#sim.exit(run.pid);
    if (!run.placementAttempted && run.placements.length === 0) return;
    try {
      await this.#invoke(this.#scope(def, run.id, run.pid, run.taints), 'cgroup.release', 'release', {
        pid: run.pid,
        placements: run.placements,
      });
    } catch (err) {
      // invoke() logged it; the domain is shut off either way.
      this.#sim.appendLog(def.uuid, `release failed: ${errorMessage(err)}`);
    }
  }
}

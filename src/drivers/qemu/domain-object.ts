import type { DomainDefinition } from '../../stable/definition/schema.js';
import type { DomainStatus, PausedReason, ShutoffReason } from '../../stable/events.js';
import { CoreDomain } from '../domain-core.js';
import type { Job } from '../jobs.js';
import type { ExitInfo } from './exit-info.js';
import type { QmpClient } from './qmp/client.js';
import type { DomainPaths } from './root.js';
import type { JobRecord, Placement, ThreadIds } from './status.js';

/** Why the driver itself is stopping a domain; decides the `stopped` reason. */
export type StopIntent = 'destroy' | 'shutdown' | 'migrated';

/** What exists only while a domain's QEMU process does. */
export interface Runtime {
  readonly id: number;
  readonly pid: number;
  readonly startTime: bigint;
  readonly emulator: string;
  readonly paths: DomainPaths;
  /**
   * The live definition (src/drivers/qemu/live-definition.ts): changed only through `setLive`,
   * which validates it, bumps {@link Runtime.liveVersion} and rewrites the status file.
   */
  live: DomainDefinition;
  /** Version of the live definition: 1 at start, +1 with every change. */
  liveVersion: number;
  /**
   * Set when a new driver found the recorded live definition unreadable: the raw record (kept in
   * the status file as it was) and why. `live` then holds the persistent definition for the
   * driver's own needs only; the public API refuses to present it as the live one.
   */
  liveUnreadable?: { readonly reason: string; readonly raw: unknown };
  readonly taints: string[];
  /**
   * Stops reporting the exit of our own child (the driver lets go of the domain); absent for a
   * process adopted on reconnect.
   */
  readonly forgetExit?: () => void;
  /** Resolves when the process is gone. */
  readonly exited: Promise<ExitInfo>;
  /** Resolves when the driver has cleaned up after the exit and recorded the new state. */
  readonly finalized: Promise<void>;
  qmp?: QmpClient;
  threads?: ThreadIds;
  /** Where `startup` placed the threads; given back in `release`. */
  placements: Placement[];
  /** `cgroup.placeThreads` was invoked: release even when it failed before reporting placements. */
  placementAttempted: boolean;
  /** The signal of the job that owns the runtime (the start's while it runs): ends any handler it waits for. */
  cancel: AbortController;
  /** How QEMU ended, once it has: lets the start sequence see a death that no QMP call noticed. */
  exitInfo?: ExitInfo;
  /** True once start-up completed; until then the start sequence owns clean-up. */
  started: boolean;
  stopIntent?: StopIntent;
  /** A migration of this domain is under way, as its source (`out`) or destination (`in`). */
  migrating?: 'out' | 'in';
  /**
   * Why the vCPUs stop next (libvirt's `pausedReason`): set by the driver before it sends `stop`
   * itself (`user`, `migration`), or by the event QEMU sends before its `STOP` (`BLOCK_IO_ERROR`
   * → `ioerror`, `GUEST_PANICKED` → `crashed`, `WATCHDOG` → `watchdog`); the `STOP` consumes it.
   */
  pausing?: PausedReason;
  /**
   * The guest panicked (QEMU's `GUEST_PANICKED`) and QEMU paused it (`pause`) or is powering it off
   * (`poweroff`): an exit from here on is a crash. Cleared when on_crash restarts the guest.
   */
  panicked?: 'pause' | 'poweroff';
  /** The guest powered off and the driver resets it (on_poweroff=restart, or a reboot): its pause is not shown. */
  fakeReboot?: boolean;
  /**
   * A reboot under way (libvirt's fake reboot): QEMU pauses instead of exiting when the guest
   * powers off, and the driver resets and continues it. `asked` until the guest powers off,
   * `resetting` until QEMU runs again (that pause is no suspend of the domain); `done` tells the
   * reboot job.
   */
  reboot?: { phase: 'asked' | 'resetting'; readonly done: () => void } | undefined;
  /**
   * The domain ends with this QEMU: an incoming migration without `persist` defined it here only
   * for this run (libvirt's transient domain). Kept in the status file.
   */
  transient?: boolean;
  /** QEMU reported SHUTDOWN: the guest (or a signal to QEMU) asked it to stop. */
  sawShutdown: boolean;
  /**
   * A vCPU was unplugged from this TCG QEMU (a hotplug rolled back): QEMU's TCG crashes on the next
   * vCPU `device_add` after that, so vCPU hotplug is refused until the domain restarts.
   */
  vcpuUnplugged?: boolean;
  /** Set when the driver closes: the process lives on, nothing is cleaned up. */
  detached: boolean;
  /**
   * The job the status file records (runtime-status.ts): the one holding the domain, or the
   * interrupted one a new driver found until it has settled it.
   */
  statusJob?: Job | JobRecord;
  /** The state the status file records, so an unchanged state is not written again. */
  statusState?: DomainStatus;
  /** Durable status writes under way; a record written meanwhile is rewritten after them. */
  statusWrites: number;
  /** A record was written while a durable write was under way, which will land after it. */
  statusStale: boolean;
}

/** One defined domain: its persistent definition, its state and, while active, its runtime. */
export class DomainObject extends CoreDomain {
  run: Runtime | undefined;
  /** The reason the shut-off record holds (shutoff-record.ts), so an unchanged one is not written again. */
  recordedShutoff: ShutoffReason | undefined;

  get active(): boolean {
    return this.run !== undefined;
  }
}

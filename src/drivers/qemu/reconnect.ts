import { realpathSync } from 'node:fs';
import { errorMessage } from '../../errors.js';
import { readProcExe, readProcStartTime } from '../../util/proc.js';
import { type DriverContext, deferred, scopeOf } from './context.js';
import { listeningSockets } from './devices/serial.js';
import type { DomainObject, Runtime } from './domain-object.js';
import { emulatorOf, reapEmulator, signalEmulator } from './emulator-kill.js';
import { settleInterruptedJob } from './job-recovery.js';
import { finalizeExit, settleInterruptedReboot, watchMonitor } from './lifecycle.js';
import { readLive } from './live-definition.js';
import { type MigrationRecovery, recoverMigration } from './migration/recover.js';
import { releaseThreads } from './privileged/phases.js';
import { waitAdoptedExit } from './process.js';
import { QmpClient } from './qmp/client.js';
import { domainPaths } from './root.js';
import { reconcileStatus, recordedStatus } from './run-state.js';
import { recordJob } from './runtime-status.js';
import { readStatus, type StatusRecord } from './status.js';
import { removeIfPresent } from './store.js';

const RECONNECT_TIMEOUT_MS = 10_000;

const realpath = (path: string): string | undefined => {
  try {
    return realpathSync(path);
  } catch {
    return undefined;
  }
};

/** True only for the very process the status describes: same pid, same start time, same binary. */
function isSameProcess(status: StatusRecord): boolean {
  const startTime = readProcStartTime(status.pid);
  if (startTime === undefined || startTime.toString() !== status.startTime) return false;
  const exe = readProcExe(status.pid);
  return exe !== undefined && exe === realpath(status.emulator);
}

/**
 * Adopts the QEMU process of a domain that a previous driver started, after checking it is the
 * same process (a reused pid is never adopted). A domain whose QEMU is gone is recorded as
 * crashed and its leftovers are removed; one that never finished starting is killed.
 */
export async function reconnectDomain(ctx: DriverContext, dom: DomainObject): Promise<void> {
  const paths = domainPaths(ctx.layout, dom.def.name, dom.def.uuid);
  let status: StatusRecord | undefined;
  try {
    status = readStatus(paths.status);
  } catch (err) {
    ctx.log(dom, `reconnect: corrupt status file ${paths.status} removed: ${errorMessage(err)}`);
  }
  if (!status) {
    removeIfPresent(paths.status);
    return;
  }
  const gone = async (reason: 'crashed' | 'failed' | 'migrated', why: string) => {
    const placements = status?.placements ?? [];
    const leftover = { id: status?.id ?? 0, pid: status?.pid, taints: status?.taints ?? [] };
    const record = {
      pid: status?.pid ?? 0,
      placements,
      placementAttempted: placements.length > 0 || status?.placementAttempted === true,
    };
    if (status) {
      // Children the emulator forked may outlive it; its cgroup must be empty before release.
      const id = emulatorOf(ctx, dom, { ...record, startTime: BigInt(status.startTime) });
      const survivors = await reapEmulator(id);
      if (survivors.length > 0) ctx.log(dom, `reconnect: processes ${survivors.join(', ')} survive SIGKILL`);
    }
    await releaseThreads(scopeOf(ctx, dom, leftover), record, 'reconnect');
    // QEMU killed cannot unlink the sockets it listened on; after a migration on this host they
    // are the destination's (as in finalizeExit).
    const sockets =
      status && reason !== 'migrated'
        ? listeningSockets(readLive(status.live, dom).live, ctx.layout.run)
        : [];
    for (const path of [paths.monitor, paths.status, ...sockets]) removeIfPresent(path);
    ctx.log(dom, `reconnect: ${why}; domain marked shut off (${reason})`);
    ctx.setState(dom, { state: 'shutoff', reason }, 'stopped');
  };
  if (!isSameProcess(status)) return gone('crashed', `QEMU pid ${status.pid} is no longer running`);
  const emulator = { pid: status.pid, startTime: BigInt(status.startTime) };
  if (status.phase === 'starting') {
    signalEmulator(emulator, 'SIGKILL');
    await waitAdoptedExit(status.pid, BigInt(status.startTime));
    return gone('failed', `QEMU pid ${status.pid} never finished starting; killed`);
  }
  const settlement = status.job && settleInterruptedJob(status.job);
  if (settlement?.action === 'kill') {
    signalEmulator(emulator, 'SIGKILL');
    await waitAdoptedExit(status.pid, BigInt(status.startTime));
    return gone('failed', `${settlement.why}; QEMU pid ${status.pid} killed`);
  }
  let qmp: QmpClient;
  try {
    qmp = await QmpClient.connect(status.monitor, {
      timeoutMs: RECONNECT_TIMEOUT_MS,
      domain: { name: dom.def.name, uuid: dom.def.uuid },
    });
  } catch (err) {
    // A QEMU we cannot monitor cannot be managed; libvirt kills it too rather than orphan it.
    signalEmulator(emulator, 'SIGKILL');
    await waitAdoptedExit(status.pid, BigInt(status.startTime));
    return gone('crashed', `cannot reconnect to the monitor (${errorMessage(err)}); QEMU killed`);
  }
  const exit = deferred<void>();
  // A driver that closes drops the monitor on purpose: QEMU lives on, nobody waits for its exit.
  qmp.onDisconnect(() => {
    if (!run.detached) exit.resolve();
  });
  const exited = exit.promise.then(() => waitAdoptedExit(status.pid, BigInt(status.startTime)));
  const finalized = deferred<void>();
  const live = readLive(status.live, dom);
  const recorded = recordedStatus(status.state);
  const run: Runtime = {
    id: status.id,
    pid: status.pid,
    startTime: BigInt(status.startTime),
    emulator: status.emulator,
    // The monitor the status names: a QEMU adopted with attach serves its own socket, and every
    // later rewrite of the status file must keep pointing there.
    paths: { ...paths, monitor: status.monitor },
    live: live.live,
    liveVersion: status.liveVersion,
    liveUnreadable: live.unreadable,
    taints: status.taints,
    exited,
    finalized: finalized.promise,
    qmp,
    threads: status.threads,
    placements: status.placements,
    placementAttempted: status.placements.length > 0 || status.placementAttempted,
    ...(status.transient ? { transient: true } : {}),
    cancel: new AbortController(),
    started: true,
    sawShutdown: false,
    detached: false,
    // Kept as found until settled: a driver killed during this reconnect leaves the same record.
    statusJob: status.job,
    statusState: recorded,
    statusWrites: 0,
    statusStale: false,
  };
  dom.run = run;
  if (live.ignored)
    ctx.log(
      dom,
      `reconnect: the live definition has fields this version does not know, left aside: ${live.ignored.join(', ')}`,
    );
  if (live.unreadable) {
    // Reported, never replaced: the record stays as found, the domain is still adopted.
    ctx.log(
      dom,
      `reconnect: the live definition in ${paths.status} is unreadable (${live.unreadable.reason}); kept as found, the domain is adopted, toXML() refuses until it is restarted`,
    );
    ctx.emit(dom, 'definition-error', 'live-unreadable');
  }
  watchMonitor(ctx, dom, run);
  void exited.then(async (info) => {
    await finalizeExit(ctx, dom, run, info);
    finalized.resolve();
  });
  // Until QEMU answers, the state the status file recorded (paused/unknown without one).
  ctx.setState(dom, recorded ?? { state: 'paused', reason: 'unknown' });
  let qemuStatus: string;
  let running: boolean;
  try {
    ({ status: qemuStatus, running } = await qmp.command('query-status'));
  } catch (err) {
    // QEMU went away between adoption and this question: the exit watcher records it as stopped.
    // One dying domain must not fail the connect() of every other.
    ctx.log(dom, `reconnect: query-status failed (${errorMessage(err)}); waiting for the exit`);
    return;
  }
  // Read as libvirt reads it: `paused` → user, `io-error` → ioerror, `postmigrate` → migration…,
  // keeping the recorded reason where QEMU cannot tell it (`booted`, `migrated`…).
  const found = reconcileStatus(recorded, qemuStatus, running);
  // A source whose stream completed (postmigrate) or a destination still waiting for one
  // (inmigrate): never resumed here, since the guest may run on the other side; the application
  // decides (migrateConfirm, or destroy).
  if (qemuStatus === 'postmigrate' || qemuStatus === 'inmigrate')
    run.migrating = qemuStatus === 'postmigrate' ? 'out' : 'in';
  ctx.setState(dom, found);
  if (settlement?.action === 'adopt' && settlement.finishReboot) {
    try {
      if ((await settleInterruptedReboot(ctx, dom, qmp, qemuStatus)) === 'running') {
        ctx.setState(dom, { state: 'running', reason: 'booted' });
      }
    } catch (err) {
      ctx.log(dom, `reconnect: cannot finish the interrupted reboot: ${errorMessage(err)}`);
    }
  }
  const job = status.job;
  if (job && (job.operation === 'migration-out' || job.operation === 'migration-in')) {
    let recovery: MigrationRecovery;
    try {
      recovery = await recoverMigration(ctx, dom, run as Runtime & { qmp: QmpClient }, job, qemuStatus);
    } catch (err) {
      recovery = { kill: false, why: `its rule failed (${errorMessage(err)}); adopted as QEMU reports it` };
    }
    const why = `settled an interrupted ${job.operation} job in phase ${job.phase}: ${recovery.why}`;
    if (recovery.kill) {
      // Detached first: the exit watcher leaves the clean-up to gone(), which records the reason.
      run.detached = true;
      qmp.close();
      dom.run = undefined;
      signalEmulator(emulator, 'SIGKILL');
      await waitAdoptedExit(status.pid, BigInt(status.startTime));
      return gone(recovery.reason, why);
    }
    ctx.log(dom, `reconnect: ${why}`);
    await recordJob(dom, run, undefined);
  } else if (settlement) {
    if (dom.state === 'paused' && settlement.keepPaused)
      ctx.setState(dom, { state: 'paused', reason: settlement.keepPaused });
    ctx.log(dom, `reconnect: settled an interrupted ${status.job?.operation} job: ${settlement.why}`);
    await recordJob(dom, run, undefined);
  }
  ctx.log(dom, `reconnected to QEMU pid ${run.pid} (${qemuStatus})`);
}

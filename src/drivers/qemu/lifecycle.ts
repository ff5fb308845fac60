import { ErrorCode, errorMessage, VirtError } from '../../errors.js';
import type { DestroyOptions, RebootOptions, ShutdownOptions } from '../../stable/driver.js';
import type { PausedReason, StoppedReason } from '../../stable/events.js';
import { faultPoint } from '../../util/fault-points.js';
import type { Job } from '../jobs.js';
import { type DriverContext, scopeOf, within } from './context.js';
import { onGuestPanic } from './crash.js';
import { listeningSockets } from './devices/serial.js';
import type { DomainObject, Runtime } from './domain-object.js';
import { emulatorOf, reapEmulator, signalEmulator } from './emulator-kill.js';
import { onDeviceDeleted } from './hotplug.js';
import { releaseThreads } from './privileged/phases.js';
import type { ExitInfo } from './process.js';
import type { QmpClient, QmpEvent } from './qmp/client.js';
import { pauseCauseOfEvent } from './run-state.js';
import { removeIfPresent, removeIfPresentAsync } from './store.js';

/** The runtime of an active domain, or OPERATION_INVALID naming what the caller must do. */
export function requireActive(dom: DomainObject): Runtime & { qmp: QmpClient } {
  const run = dom.run;
  if (!run?.qmp || !run.started) {
    throw new VirtError(
      ErrorCode.OPERATION_INVALID,
      `domain '${dom.def.name}' is not running; start it first`,
      {
        domain: { name: dom.def.name, uuid: dom.def.uuid },
      },
    );
  }
  return run as Runtime & { qmp: QmpClient };
}

/** Follows QMP events of a running domain: pauses (by their cause), resumes, resets, guest power-off, devices QEMU deleted. */
export function watchMonitor(ctx: DriverContext, dom: DomainObject, run: Runtime): void {
  const qmp = run.qmp as QmpClient;
  qmp.onEvent((ev: QmpEvent) => {
    if (run.detached) return;
    switch (ev.event) {
      case 'STOP':
        onStop(ctx, dom, run, qmp);
        break;
      case 'RESUME':
        run.fakeReboot = false;
        if (run.reboot?.phase === 'resetting') {
          run.reboot.done();
          run.reboot = undefined;
          break;
        }
        // A guest restarted by on_crash runs with reason crashed, as in libvirt.
        if (run.started)
          ctx.changeState(
            dom,
            { state: 'running', reason: dom.state === 'crashed' ? 'crashed' : 'unpaused' },
            'resumed',
          );
        break;
      case 'GUEST_PANICKED': {
        const action = ev.data['action'];
        if (action === 'pause' || action === 'poweroff') run.panicked = action;
        const cause = pauseCauseOfEvent(ev.event, action);
        if (cause) run.pausing = cause;
        // A QEMU powering itself off may exit before it reports its STOP: the crash is told now.
        if (action === 'poweroff' && run.started) onGuestPanic(ctx, dom, run, qmp);
        break;
      }
      case 'BLOCK_IO_ERROR':
      case 'WATCHDOG': {
        const cause = pauseCauseOfEvent(ev.event, ev.data['action']);
        if (cause) run.pausing = cause;
        break;
      }
      case 'RESET':
        // QEMU's word on who reset it is only told apart, never trusted further.
        if (run.started) ctx.emit(dom, 'rebooted', ev.data['guest'] === true ? 'guest' : 'host');
        break;
      case 'SHUTDOWN':
        run.sawShutdown = true;
        onShutdownEvent(ctx, dom, run, qmp, ev);
        break;
      case 'DEVICE_DELETED':
        if (typeof ev.data['device'] === 'string') onDeviceDeleted(ctx, dom, run, ev.data['device']);
        break;
    }
  });
}

/**
 * A `STOP` is mapped by its cause, as libvirt's `qemuProcessHandleStop` does: the reason the driver
 * set before its own `stop` or an event QEMU sent just before (I/O error, panic, watchdog); else a
 * migration under way, a guest that powered off, or `user`: QEMU's run state is then `paused`, which
 * libvirt's table reads as `user` (e.g. a `stop` through passthrough).
 */
function onStop(ctx: DriverContext, dom: DomainObject, run: Runtime, qmp: QmpClient): void {
  const cause = run.pausing;
  run.pausing = undefined;
  // A guest rebooting through power-off is paused for an instant (libvirt's fake reboot): not a
  // state worth showing.
  if (!run.started || run.fakeReboot || run.reboot?.phase === 'resetting' || dom.state === 'crashed') return;
  const reason: PausedReason =
    cause ?? (run.migrating === 'out' ? 'migration' : run.sawShutdown ? 'shutting-down' : 'user');
  ctx.changeState(dom, { state: 'paused', reason }, 'suspended');
  // QEMU paused the panicked guest and waits for the driver to apply on_crash.
  if (cause === 'crashed' && run.panicked === 'pause') onGuestPanic(ctx, dom, run, qmp);
}

/**
 * With `-no-shutdown` (on_poweroff=restart), or while a reboot is under way (`set-action
 * shutdown=pause`), QEMU stays alive after the guest powers off, so the driver applies the action
 * itself: reset and continue, or quit when a shutdown or destroy was asked for.
 */
function onShutdownEvent(
  ctx: DriverContext,
  dom: DomainObject,
  run: Runtime,
  qmp: QmpClient,
  ev: QmpEvent,
): void {
  const reboot = run.reboot?.phase === 'asked' ? run.reboot : undefined;
  if (run.live.onPoweroff !== 'restart' && !reboot) return;
  const again = ev.data['guest'] === true && run.stopIntent === undefined;
  if (again) {
    run.sawShutdown = false;
    run.fakeReboot = true;
  }
  if (again && reboot) {
    reboot.phase = 'resetting';
    ctx.log(dom, 'reboot: the guest powered off; resetting it');
  }
  const request = again ? resetAndContinue(run) : ['quit'];
  void (async () => {
    for (const [command, args] of request.map((r) => (Array.isArray(r) ? r : [r, undefined]))) {
      await qmp.execute(command as 'quit', args as undefined);
    }
  })().catch((err) => ctx.log(dom, `after the guest powered off: ${errorMessage(err)}`));
}

/** What a guest power-off is in QEMU's terms: `pause` with `-no-shutdown`, else `poweroff`. */
function shutdownAction(run: Runtime): 'pause' | 'poweroff' {
  return run.live.onPoweroff === 'restart' ? 'pause' : 'poweroff';
}

/** The QMP commands that boot a guest which powered off (QEMU paused) again, and undo a reboot's setting. */
function resetAndContinue(run: Runtime): Array<string | [string, unknown]> {
  return ['system_reset', ['set-action', { shutdown: shutdownAction(run) }], 'cont'];
}

/**
 * Finishes a reboot that a driver killed meanwhile left behind: a guest that powered off (QEMU
 * paused in `shutdown`) is reset and continued; either way a guest power-off ends QEMU again.
 */
export async function settleInterruptedReboot(
  ctx: DriverContext,
  dom: DomainObject,
  qmp: QmpClient,
  qemuStatus: string,
): Promise<'running' | 'unchanged'> {
  const run = dom.run as Runtime;
  if (qemuStatus !== 'shutdown') {
    await qmp.execute('set-action', { shutdown: shutdownAction(run) });
    return 'unchanged';
  }
  ctx.log(dom, 'reconnect: the guest powered off during a reboot; resetting it');
  await qmp.execute('system_reset');
  await qmp.execute('set-action', { shutdown: shutdownAction(run) });
  await qmp.execute('cont');
  return 'running';
}

/** A hard reset of the machine (`system_reset`), as the reset button; the guest gets no warning. */
export async function resetDomain(ctx: DriverContext, dom: DomainObject, job: Job): Promise<void> {
  const run = requireActive(dom);
  ctx.log(dom, 'reset: system_reset');
  await run.qmp.execute('system_reset', undefined, { signal: job.signal });
}

/**
 * Reboots through ACPI as libvirt does without a guest agent: QEMU is told to pause instead of
 * exiting when the guest powers off, the power button is pressed, and once the guest has powered
 * off the driver resets and continues it (libvirt's "fake reboot"). Waits for that, up to
 * `timeoutMs`; a guest that ignores the button meanwhile keeps running and its power-off action is
 * restored.
 */
export async function rebootDomain(
  ctx: DriverContext,
  dom: DomainObject,
  options: RebootOptions,
  job: Job,
): Promise<void> {
  const run = requireActive(dom);
  const timeoutMs = options.timeoutMs ?? 60_000;
  ctx.log(dom, `reboot requested (ACPI power button, then reset), waiting ${timeoutMs} ms`);
  let done!: () => void;
  const rebooted = new Promise<void>((resolve) => {
    done = resolve;
  });
  const stopped = run.finalized.then(() => {
    throw new VirtError(ErrorCode.OPERATION_FAILED, `domain '${dom.def.name}' stopped before it rebooted`, {
      domain: { name: dom.def.name, uuid: dom.def.uuid },
    });
  });
  stopped.catch(() => undefined);
  run.reboot = { phase: 'asked', done };
  let outcome: unknown;
  try {
    await run.qmp.execute('set-action', { shutdown: 'pause' }, { signal: job.signal });
    await run.qmp.execute('system_powerdown', undefined, { signal: job.signal });
    job.setPhase('waiting');
    outcome = await within(Promise.race([rebooted, stopped, aborted(job.signal)]), timeoutMs);
  } finally {
    if (run.reboot?.phase === 'asked') {
      run.reboot = undefined;
      if (dom.run === run)
        await run.qmp
          .execute('set-action', { shutdown: shutdownAction(run) })
          .catch((err) => ctx.log(dom, `reboot: cannot restore the power-off action: ${errorMessage(err)}`));
    }
  }
  if (outcome === 'timeout') {
    throw new VirtError(
      ErrorCode.OPERATION_TIMEOUT,
      `domain '${dom.def.name}' did not power off within ${timeoutMs} ms to reboot; its guest may ignore the ACPI power button: reset it instead`,
      { domain: { name: dom.def.name, uuid: dom.def.uuid } },
    );
  }
}

/** Why QEMU stopped, from what the driver asked for and what QEMU reported. */
function stoppedReason(run: Runtime): StoppedReason {
  if (run.stopIntent === 'destroy') return 'destroyed';
  if (run.stopIntent === 'migrated') return 'migrated';
  if (run.panicked) return 'crashed';
  return run.sawShutdown ? 'shutdown' : 'crashed';
}

/** Cleans up after QEMU exited and records the domain as shut off. */
export async function finalizeExit(
  ctx: DriverContext,
  dom: DomainObject,
  run: Runtime,
  info: ExitInfo,
): Promise<void> {
  if (run.detached || dom.run !== run) return;
  const reason = stoppedReason(run);
  run.qmp?.close();
  // Children the emulator forked (or daemonised into its cgroup) go with it: nothing of a domain
  // recorded as shut off may still run, let alone serve its monitor.
  // Called once the leader is gone: reaped (our child), or seen gone with every thread (adopted).
  const survivors = await reapEmulator({ ...emulatorOf(ctx, dom, run), exited: true });
  if (survivors.length > 0)
    ctx.log(dom, `processes ${survivors.join(', ')} of pid ${run.pid} survive SIGKILL`);
  faultPoint('exit:reaped');
  await releaseThreads(scopeOf(ctx, dom, run), run, 'release');
  faultPoint('exit:released');
  // Runs from an exit watcher nobody awaits: a failed clean-up is logged, never thrown, so it can
  // neither crash the host process nor leave the domain recorded as running.
  // After an outgoing migration the destination's QEMU (same host) may listen on the same paths:
  // they are its own now, as libvirt leaves them to the destination.
  const sockets = reason === 'migrated' ? [] : listeningSockets(run.live, ctx.layout.run);
  await Promise.all(
    [run.paths.monitor, run.paths.status, ...sockets].map((path) =>
      removeIfPresentAsync(path).catch((err) =>
        ctx.log(dom, `cannot remove ${path} after exit: ${errorMessage(err)}`),
      ),
    ),
  );
  dom.run = undefined;
  // A job's status write (recordJob) that finished during the removal above still saw this run as
  // current and kept its file; from here on every such write removes its own file.
  try {
    removeIfPresent(run.paths.status);
  } catch (err) {
    ctx.log(dom, `cannot remove ${run.paths.status} after exit: ${errorMessage(err)}`);
  }
  const how = info.signal
    ? `signal ${info.signal}`
    : info.code === null
      ? 'unknown status'
      : `code ${info.code}`;
  ctx.log(dom, `QEMU pid ${run.pid} exited (${how}): stopped, ${reason}`);
  ctx.setState(dom, { state: 'shutoff', reason }, 'stopped');
}

/** Pauses every vCPU. */
export async function suspendDomain(ctx: DriverContext, dom: DomainObject, job: Job): Promise<void> {
  const run = requireActive(dom);
  if (dom.state === 'paused')
    throw new VirtError(ErrorCode.OPERATION_INVALID, `domain '${dom.def.name}' is already paused`);
  run.pausing = 'user';
  try {
    await run.qmp.execute('stop', undefined, { signal: job.signal });
  } catch (err) {
    run.pausing = undefined;
    throw err;
  }
  // QEMU sends STOP before its reply, so this only confirms what the event recorded.
  ctx.changeState(dom, { state: 'paused', reason: 'user' }, 'suspended');
}

/** Resumes every vCPU. */
export async function resumeDomain(ctx: DriverContext, dom: DomainObject, job: Job): Promise<void> {
  const run = requireActive(dom);
  if (dom.state === 'crashed')
    throw new VirtError(
      ErrorCode.OPERATION_INVALID,
      `domain '${dom.def.name}' crashed (its guest panicked) and cannot resume; destroy it, or reset it to boot the guest again`,
    );
  if (dom.state !== 'paused')
    throw new VirtError(ErrorCode.OPERATION_INVALID, `domain '${dom.def.name}' is not paused`);
  await run.qmp.execute('cont', undefined, { signal: job.signal });
  ctx.changeState(dom, { state: 'running', reason: 'unpaused' }, 'resumed');
}

/**
 * ACPI power-down, then waits for QEMU to exit; on timeout destroys or fails, as asked. An abort
 * stops the wait (the guest may still power off: the button was pressed).
 */
export async function shutdownDomain(
  ctx: DriverContext,
  dom: DomainObject,
  options: ShutdownOptions,
  job: Job,
): Promise<void> {
  const run = requireActive(dom);
  const timeoutMs = options.timeoutMs ?? 60_000;
  run.stopIntent = 'shutdown';
  ctx.log(dom, `shutdown requested (ACPI power button), waiting ${timeoutMs} ms`);
  try {
    await run.qmp.execute('system_powerdown', undefined, { signal: job.signal });
    job.setPhase('waiting');
    faultPoint('shutdown:requested');
    if ((await within(Promise.race([run.finalized, aborted(job.signal)]), timeoutMs)) !== 'timeout') return;
  } catch (err) {
    if (run.stopIntent === 'shutdown') run.stopIntent = undefined;
    throw err;
  }
  if (run.stopIntent === 'shutdown') run.stopIntent = undefined;
  if (options.fallbackToDestroy) {
    ctx.log(dom, 'the guest did not power off in time: destroying it');
    return destroyDomain(ctx, dom, {});
  }
  throw new VirtError(
    ErrorCode.OPERATION_TIMEOUT,
    `domain '${dom.def.name}' did not power off within ${timeoutMs} ms; destroy it or pass fallbackToDestroy`,
    { domain: { name: dom.def.name, uuid: dom.def.uuid } },
  );
}

/**
 * SIGTERM, then SIGKILL after the grace period; resolves once the domain is shut off. Graceful (as
 * libvirt's VIR_DOMAIN_DESTROY_GRACEFUL), SIGTERM only: a QEMU still alive after the grace period is
 * left running as it was, and the call fails with OPERATION_TIMEOUT.
 */
export async function destroyDomain(
  ctx: DriverContext,
  dom: DomainObject,
  options: DestroyOptions,
): Promise<void> {
  const run = dom.run;
  if (!run?.started) {
    throw new VirtError(ErrorCode.OPERATION_INVALID, `domain '${dom.def.name}' is not running`, {
      domain: { name: dom.def.name, uuid: dom.def.uuid },
    });
  }
  const graceMs = options.graceMs ?? 10_000;
  const intentBefore = run.stopIntent;
  run.stopIntent = 'destroy';
  const emulator = emulatorOf(ctx, dom, run);
  // The verified group includes the leader: one kill(2) for both, the leader alone otherwise.
  if (!signalEmulator(emulator, 'SIGTERM')) signal(run.pid, 'SIGTERM');
  // Logged after the signals of every destroy issued in this turn have gone out: many domains
  // destroyed at once no longer wait for each other's log writes before their QEMU is signalled.
  queueMicrotask(() =>
    ctx.log(dom, `destroy${options.graceful ? ' (graceful)' : ''}: SIGTERM to process group ${run.pid}`),
  );
  faultPoint('destroy:sigterm');
  if ((await within(run.exited, graceMs)) === 'timeout') {
    if (options.graceful) {
      // Left as found: a later exit (the SIGTERM may still be pending) is not this destroy's.
      if (run.stopIntent === 'destroy') run.stopIntent = intentBefore;
      ctx.log(dom, `destroy (graceful): pid ${run.pid} still alive after ${graceMs} ms, left running`);
      throw new VirtError(
        ErrorCode.OPERATION_TIMEOUT,
        `domain '${dom.def.name}' (QEMU pid ${run.pid}) did not exit within ${graceMs} ms of SIGTERM; it is still running. Destroy it without graceful to kill it`,
        { domain: { name: dom.def.name, uuid: dom.def.uuid }, pid: run.pid },
      );
    }
    ctx.log(dom, `destroy: pid ${run.pid} still alive after the grace period, SIGKILL`);
    if (!signalEmulator(emulator, 'SIGKILL')) signal(run.pid, 'SIGKILL');
  }
  await run.finalized;
}

/** Rejects with the signal's reason once it aborts. */
function aborted(signal: AbortSignal): Promise<never> {
  return new Promise<never>((_, reject) => {
    if (signal.aborted) reject(signal.reason);
    else signal.addEventListener('abort', () => reject(signal.reason), { once: true });
  });
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') {
      throw new VirtError(
        ErrorCode.SYSTEM_ERROR,
        `cannot send ${sig} to QEMU pid ${pid}`,
        { pid },
        { cause: err },
      );
    }
  }
}

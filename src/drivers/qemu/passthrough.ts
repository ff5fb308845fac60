import { errorMessage } from '../../errors.js';
import type { DriverContext } from './context.js';
import { qemuCwd, readDevices } from './devices/from-qmp.js';
import type { DomainObject, Runtime } from './domain-object.js';
import { requireActive } from './lifecycle.js';
import { setLive } from './live-definition.js';
import { dropIfGone, runtimeStatus, settleStatus, writeStatusDurably } from './runtime-status.js';

/** Where the events of one subscription go (the seam's `MonitorEventSink`, by shape). */
export interface EventSink {
  event(ev: {
    event: string;
    data: Record<string, unknown>;
    timestamp: { seconds: number; microseconds: number };
  }): void;
  /** The monitor closed: the domain stopped or the driver closed. */
  end(err?: Error): void;
}

/** The taint of a domain whose monitor someone else talked to (libvirt's `custom-monitor`). */
export const CUSTOM_MONITOR_TAINT = 'custom-monitor';

/** QMP commands that only read, besides `query-*` and `x-query-*`. */
const READ_ONLY = new Set([
  'qom-get',
  'qom-list',
  'qom-list-types',
  'qom-list-properties',
  'device-list-properties',
]);

/**
 * Whether a passthrough command can change the domain, and so takes its job as libvirt's
 * `qemu-monitor-command` does (`QEMU_JOB_MODIFY`). libvirt takes the job for every command; a
 * query here does not, so that it stays usable while a long job is stuck, which is when one
 * reaches for the monitor. Anything not known to only read counts as modifying
 * (`human-monitor-command` too: HMP can stop the guest).
 */
export function modifiesDomain(command: string): boolean {
  return !(/^(x-)?query-/.test(command) || READ_ONLY.has(command));
}

/**
 * Sends one raw QMP command to a running domain's QEMU (libvirt's `qemu-monitor-command`) and
 * resolves with QEMU's `return` value. The domain is tainted first, and the command logged. The
 * caller runs a command that {@link modifiesDomain} in the domain's job.
 *
 * Commands that change what the driver tracks (`stop`, `cont`, `quit`, `system_powerdown`, `device_del`) need no special case: the
 * driver follows QEMU's events (STOP, RESUME, SHUTDOWN, DEVICE_DELETED, the monitor closing),
 * whoever caused them. A successful `device_add` has no event: the driver reads the new device
 * back from QEMU and adds it to the live definition when the definition can represent it.
 */
export async function monitorCommand(
  ctx: DriverContext,
  dom: DomainObject,
  command: string,
  args: Record<string, unknown> | undefined,
  options: { readonly timeoutMs?: number; readonly signal?: AbortSignal },
): Promise<unknown> {
  const run = requireActive(dom);
  await taint(ctx, dom, run);
  ctx.log(dom, `monitor passthrough: ${command}${args === undefined ? '' : ` ${JSON.stringify(args)}`}`);
  const reply = await run.qmp.execute(command, args, { ...options, passthrough: true });
  if (command === 'device_add') await adoptAddedDevice(ctx, dom, run, args?.['id']);
  else if (BACKEND_COMMANDS.has(command))
    ctx.log(dom, `monitor passthrough: ${command} changes a backend; the live definition is left as it was`);
  return reply;
}

/** Backends have no place of their own in the definition: their changes are only logged. */
const BACKEND_COMMANDS = new Set(['blockdev-add', 'blockdev-del', 'netdev_add', 'netdev_del']);

/**
 * A device added behind the driver's back joins the live definition, read back from QEMU
 * (devices/from-qmp.ts) under its id as alias, with event `device-added`. One the definition
 * cannot represent, or one without an id (nothing could later name it), is only logged: the
 * `custom-monitor` taint already says that the live definition may not show everything QEMU runs.
 */
async function adoptAddedDevice(
  ctx: DriverContext,
  dom: DomainObject,
  run: Runtime,
  id: unknown,
): Promise<void> {
  const untracked = (why: string) =>
    ctx.log(
      dom,
      `monitor passthrough: device_add ${String(id ?? '(no id)')} not in the live definition: ${why}`,
    );
  if (typeof id !== 'string' || !run.qmp) return untracked('it has no id');
  try {
    const live = run.live;
    const taken = new Set(live.disks.map((d) => d.target.dev));
    const found = await readDevices(run.qmp, qemuCwd(run.pid), taken);
    const disk = found.disks.find((d) => d.alias === id);
    const nic = found.interfaces.find((n) => n.alias === id);
    if (!disk && !nic) {
      const why = found.skipped.find((s) => s.startsWith(`/machine/peripheral/${id} `));
      return untracked(why ?? 'QEMU does not list it');
    }
    if (dom.run !== run) return;
    await setLive(
      dom,
      run,
      disk
        ? { ...run.live, disks: [...run.live.disks, disk] }
        : { ...run.live, interfaces: [...run.live.interfaces, nic as NonNullable<typeof nic>] },
    );
    ctx.log(dom, `monitor passthrough: ${id} added to the live definition`);
    ctx.emit(dom, 'device-added', id);
  } catch (err) {
    untracked(errorMessage(err));
  }
}

/**
 * Hands every QMP event of a running domain to `sink`, from now until the monitor closes (the
 * domain stopped, or the driver closed). The domain is tainted: whoever reads raw events acts on
 * them behind the driver's back.
 *
 * @returns the function that ends the subscription early
 */
export function monitorEvents(ctx: DriverContext, dom: DomainObject, sink: EventSink): () => void {
  const run = requireActive(dom);
  void taint(ctx, dom, run);
  ctx.log(dom, 'monitor passthrough: events subscribed');
  const offEvent = run.qmp.onEvent((ev) => {
    // A copy for each subscriber: the driver's own listeners read the same event.
    sink.event(structuredClone({ event: ev.event, data: ev.data, timestamp: ev.timestamp }));
  });
  const offDisconnect = run.qmp.onDisconnect(() => {
    offEvent();
    sink.end();
  });
  return () => {
    offEvent();
    offDisconnect();
  };
}

/**
 * Adds the taint once, and records it in the status file so that a driver reconnecting to the
 * domain still shows it: a taint lasts as long as the QEMU process.
 */
async function taint(ctx: DriverContext, dom: DomainObject, run: Runtime): Promise<void> {
  if (run.taints.includes(CUSTOM_MONITOR_TAINT)) return;
  run.taints.push(CUSTOM_MONITOR_TAINT);
  ctx.log(dom, `domain id=${run.id} is tainted: ${CUSTOM_MONITOR_TAINT}`);
  if (!run.started || run.detached || dom.run !== run) return;
  try {
    await writeStatusDurably(run, runtimeStatus(run, 'running', dom.status));
    dropIfGone(dom, run);
    settleStatus(dom, run);
  } catch (err) {
    ctx.log(
      dom,
      `cannot record the ${CUSTOM_MONITOR_TAINT} taint in ${run.paths.status}: ${errorMessage(err)}`,
    );
  }
}

import { errorMessage } from '../../errors.js';
import type { DriverContext } from './context.js';
import type { DomainObject, Runtime } from './domain-object.js';
import { requireActive } from './lifecycle.js';
import { readStatus, writeStatus } from './status.js';

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

/**
 * Sends one raw QMP command to a running domain's QEMU (libvirt's `qemu-monitor-command`) and
 * resolves with QEMU's `return` value. The domain is tainted first, and the command logged.
 *
 * It does not queue behind the domain's job: like libvirt's query jobs, it must be usable while a
 * long job is stuck, which is when one reaches for the monitor. Commands that change what the
 * driver tracks (`stop`, `cont`, `quit`, `system_powerdown`) need no special case: the driver
 * follows QEMU's events (STOP, RESUME, SHUTDOWN, the monitor closing), whoever caused them.
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
  return run.qmp.execute(command, args, { ...options, passthrough: true });
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
  try {
    const status = readStatus(run.paths.status);
    if (status) await writeStatus(run.paths.status, { ...status, taints: [...run.taints] });
  } catch (err) {
    ctx.log(
      dom,
      `cannot record the ${CUSTOM_MONITOR_TAINT} taint in ${run.paths.status}: ${errorMessage(err)}`,
    );
  }
}

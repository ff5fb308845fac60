import diagnosticsChannel from 'node:diagnostics_channel';
import type { DomainEvent } from './events.js';

/**
 * The names of virtkit's `node:diagnostics_channel` channels, the mechanism undici and Node's
 * own `http` publish on and OpenTelemetry instrumentations subscribe to. Names and message shapes
 * are stable API. Nothing is built or published while a channel has no subscriber.
 *
 * - `qmpCommand`, `handler`, `job` are tracing channels: subscribe with
 *   `diagnostics_channel.tracingChannel(name).subscribe({ start, end, asyncStart, asyncEnd, error })`
 *   (or to the plain channels `tracing:<name>:start`, …). One message object travels through
 *   `start`, `end` and then `asyncStart`/`asyncEnd` (and `error` on failure); by then it carries
 *   `result` or `error`, and `durationMs`.
 * - `qmpEvent` and `domainEvent` are plain channels: `diagnostics_channel.subscribe(name, fn)`.
 *
 * @public
 */
export const diagnosticsChannels = {
  /** Every QMP command virtkit sends to a QEMU: {@link QmpCommandMessage}. */
  qmpCommand: 'virtkit:qmp:command',
  /** Every privileged-operation invocation, by a handler or the built-in: {@link HandlerMessage}. */
  handler: 'virtkit:handler',
  /** Every domain job (start, shutdown, suspend, resume, destroy, define, undefine…): {@link JobMessage}. */
  job: 'virtkit:job',
  /** Every QMP event a domain's QEMU sends: {@link QmpEventMessage}. */
  qmpEvent: 'virtkit:qmp:event',
  /** Every life-cycle event, as `conn.on('domain-event')` delivers it: {@link DomainEvent}. */
  domainEvent: 'virtkit:domain:event',
} as const;

/**
 * The domain a traced message concerns.
 *
 * @public
 */
export interface TracedDomain {
  /** The domain's name. */
  readonly name: string;
  /** The domain's uuid. */
  readonly uuid: string;
}

/**
 * What a traced operation carries once it has settled (set before `asyncStart`).
 *
 * @public
 */
export interface TracedOutcome {
  /** How long the operation took, in milliseconds (monotonic clock). */
  durationMs?: number;
  /** The operation's value, when it succeeded. */
  result?: unknown;
  /** Why it failed (usually a `VirtError`), when it failed. */
  error?: unknown;
}

/**
 * The message of the `virtkit:qmp:command` tracing channel.
 *
 * @public
 */
export interface QmpCommandMessage extends TracedOutcome {
  /** The domain whose QEMU gets the command; undefined for a QEMU of no domain (capability probes). */
  readonly domain: TracedDomain | undefined;
  /** The QMP command name, e.g. `query-cpus-fast`. */
  readonly command: string;
  /** The command's `arguments`, as sent. */
  readonly arguments: Readonly<Record<string, unknown>> | undefined;
  /** True for a command sent through `monitorCommand` of `virtkit/internal`. */
  readonly passthrough: boolean;
}

/**
 * The message of the `virtkit:handler` tracing channel.
 *
 * @public
 */
export interface HandlerMessage extends TracedOutcome {
  /** The privileged operation, e.g. `process.setMaxMemLock`. */
  readonly operation: string;
  /** The phase, e.g. `pre-exec`, `startup`, `release`. */
  readonly phase: string;
  /** The domain it concerns, with the driver's id (null while the domain is not running). */
  readonly domain: TracedDomain & { readonly id: number | null };
  /** The QEMU process it concerns, once there is one. */
  readonly pid: number | undefined;
  /** `handler` when a registered handler did it, `built-in` when the driver did it itself. */
  readonly via: 'handler' | 'built-in';
  /** Who registered the handler (`setHandler`, `plugin /path`), or `built-in`. */
  readonly source: string;
  /** The operation's arguments, as the driver passed them. */
  readonly arguments: unknown;
  /** `ok`, `failed`, or `postcondition-failed` (it claimed success, its effect was not there). */
  outcome?: 'ok' | 'failed' | 'postcondition-failed';
}

/**
 * The message of the `virtkit:job` tracing channel.
 *
 * @public
 */
export interface JobMessage extends TracedOutcome {
  /** The job: `start`, `shutdown`, `suspend`, `resume`, `destroy`, `define`, `undefine`, … */
  readonly job: string;
  /** The domain it concerns. */
  readonly domain: TracedDomain;
}

/**
 * The message of the `virtkit:qmp:event` channel. Published as QEMU sends it: the data is not
 * validated and, once guest code has run, not to be trusted.
 *
 * @public
 */
export interface QmpEventMessage {
  /** The domain whose QEMU sent it. */
  readonly domain: TracedDomain | undefined;
  /** The QMP event name, e.g. `STOP`. */
  readonly event: string;
  /** The event's `data`. */
  readonly data: Readonly<Record<string, unknown>>;
  /** QEMU's timestamp of the event. */
  readonly timestamp: { readonly seconds: number; readonly microseconds: number };
}

/** The channels themselves, created once; `diagnostics_channel` keeps one object per name. */
export const channels = {
  qmpCommand: diagnosticsChannel.tracingChannel<string, QmpCommandMessage>(diagnosticsChannels.qmpCommand),
  handler: diagnosticsChannel.tracingChannel<string, HandlerMessage>(diagnosticsChannels.handler),
  job: diagnosticsChannel.tracingChannel<string, JobMessage>(diagnosticsChannels.job),
  qmpEvent: diagnosticsChannel.channel(diagnosticsChannels.qmpEvent),
  domainEvent: diagnosticsChannel.channel(diagnosticsChannels.domainEvent),
};

type TracingChannelOf<M extends object> = diagnosticsChannel.TracingChannel<string, M>;

/** Whether anyone listens on any part of a tracing channel (`hasSubscribers` is from Node 20.13). */
export function tracing<M extends object>(channel: TracingChannelOf<M>): boolean {
  const c = channel as TracingChannelOf<M> & { hasSubscribers?: boolean };
  if (c.hasSubscribers !== undefined) return c.hasSubscribers;
  return [c.start, c.end, c.asyncStart, c.asyncEnd, c.error].some((ch) => ch.hasSubscribers);
}

/**
 * Runs `fn` traced on `channel` with `message`, which also receives the duration. Callers check
 * {@link tracing} first, so the message is only built for a subscriber.
 */
export function traceAsync<M extends TracedOutcome & object, T>(
  channel: TracingChannelOf<M>,
  message: M,
  fn: () => Promise<T>,
): Promise<T> {
  const started = performance.now();
  return channel.tracePromise(async () => {
    try {
      return await fn();
    } finally {
      message.durationMs = performance.now() - started;
    }
  }, message);
}

/** Publishes a life-cycle event on `virtkit:domain:event` when someone listens. */
export function publishDomainEvent(event: DomainEvent): void {
  if (channels.domainEvent.hasSubscribers) channels.domainEvent.publish(event);
}

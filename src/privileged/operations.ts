import { z } from 'zod';

/*
 * The operation catalogue of internal API 1.0: for each privileged operation, the schema of the
 * arguments the driver passes, of the result a handler must return, and the phases in which the
 * driver invokes it. `etc/internal-operations.json` is generated from these schemas.
 */

const pid = z.number().int().positive();
const tid = z.number().int().positive();
const fd = z.number().int().nonnegative();
const limit = z.union([z.bigint().nonnegative(), z.literal('unlimited')]);
const role = z.enum(['vcpu', 'iothread', 'emulator']);

/**
 * The moments of a domain's life at which the driver invokes handlers.
 *
 * @public
 */
export const PHASES = ['pre-exec', 'startup', 'migration-in', 'hotplug', 'release', 'reconnect'] as const;

/**
 * One of {@link PHASES}.
 *
 * @public
 */
export type Phase = (typeof PHASES)[number];

/** A thread of the QEMU process with the role the driver learnt from QMP (never from its name). */
const thread = z.strictObject({ tid, role, index: z.number().int().nonnegative() });

const placement = z.strictObject({ tid, cgroup: z.string().startsWith('/') });

/**
 * The zod schemas of every operation's arguments and result, and the phases it runs at: what the
 * driver validates handler arguments and results with, and what {@link OperationName},
 * {@link OperationArgs} and {@link OperationResult} are derived from.
 *
 * @public
 */
export const operationSchemas = {
  'process.setMaxMemLock': {
    phases: ['pre-exec', 'hotplug', 'migration-in'],
    args: z.strictObject({
      pid,
      bytes: limit,
      current: z.strictObject({ soft: limit, hard: limit }),
      breakdown: z.strictObject({
        rule: z.enum(['hard_limit', 'locked', 'passthrough']),
        guestMemoryBytes: z.bigint().nonnegative(),
        hardLimitBytes: z.bigint().nonnegative().optional(),
        passthroughDevices: z.number().int().nonnegative(),
        explanation: z.string(),
      }),
    }),
    result: z.undefined(),
  },
  'thread.setScheduler': {
    phases: ['startup', 'migration-in', 'hotplug'],
    args: z.strictObject({
      pid,
      threads: z.array(
        thread.extend({
          policy: z.enum(['fifo', 'rr', 'batch', 'idle', 'other']),
          priority: z.number().int().min(0).max(99),
        }),
      ),
    }),
    result: z.undefined(),
  },
  'cgroup.placeThreads': {
    phases: ['startup', 'migration-in', 'hotplug'],
    args: z.strictObject({
      pid,
      threads: z.array(thread),
      cpusets: z.strictObject({
        emulator: z.string().optional(),
        vcpus: z.array(z.strictObject({ index: z.number().int().nonnegative(), cpuset: z.string() })),
        iothreads: z.array(z.strictObject({ index: z.number().int().positive(), cpuset: z.string() })),
      }),
    }),
    result: z.strictObject({ placements: z.array(placement) }),
  },
  'cgroup.release': {
    // release/reconnect: QEMU has exited, give back every group of the domain. hotplug: vCPUs were
    // taken away (their threads have exited) while QEMU runs; give back only these placements' groups.
    phases: ['hotplug', 'release', 'reconnect'],
    args: z.strictObject({ pid, placements: z.array(placement) }),
    result: z.undefined(),
  },
  'net.openTap': {
    phases: ['pre-exec', 'hotplug'],
    args: z.strictObject({
      ifname: z.string().min(1).max(15).optional(),
      queues: z.number().int().min(1).max(16),
      vnetHdr: z.boolean(),
      /**
       * False for an interface declared `managed='no'`: attach to the existing TAP `ifname`.
       * Otherwise the TAP must be created exclusively, never attached to one that already exists.
       */
      managed: z.boolean().default(true),
    }),
    result: z.strictObject({ ifname: z.string().min(1).max(15), fds: z.array(fd).min(1) }),
  },
  'storage.openFile': {
    phases: ['pre-exec', 'hotplug'],
    args: z.strictObject({ path: z.string().startsWith('/'), mode: z.enum(['r', 'rw']) }),
    result: z.strictObject({ fd }),
  },
} as const;

/**
 * The name of a privileged operation of internal API 1.0.
 *
 * @public
 */
export type OperationName = keyof typeof operationSchemas;

/**
 * The names of all operations, in catalogue order.
 *
 * @public
 */
export const OPERATIONS: readonly OperationName[] = Object.keys(operationSchemas) as OperationName[];

/**
 * The arguments the driver passes to the handler of `Op` (besides the context).
 *
 * @public
 */
export type OperationArgs<Op extends OperationName> = z.output<(typeof operationSchemas)[Op]['args']>;

/**
 * What the handler of `Op` must return (`undefined` for operations without a result).
 *
 * @public
 */
export type OperationResult<Op extends OperationName> = z.input<(typeof operationSchemas)[Op]['result']>;

/**
 * The identity of the domain an invocation concerns, as the driver knows it.
 *
 * @public
 */
export interface DomainIdentity {
  /** The domain's uuid. */
  readonly uuid: string;
  /** The domain's name. */
  readonly name: string;
  /** The driver's id of the running domain; null before it has one. */
  readonly id: number | null;
}

/**
 * The context of every handler invocation.
 *
 * @public
 */
export interface InvocationContext {
  /** The domain the operation is for. */
  readonly domain: DomainIdentity;
  /** The moment of the domain's life at which the driver invokes the handler. */
  readonly phase: Phase;
  /** The QEMU process id; undefined in the first moment of `pre-exec`, before it exists. */
  readonly pid: number | undefined;
  /** Aborted when the deadline passes or the operation is cancelled; stop work when it fires. */
  readonly signal: AbortSignal;
  /** When the driver stops waiting, in milliseconds since the epoch. */
  readonly deadline: number;
}

/**
 * What a handler of `Op` may return: its result, or nothing at all for operations without one.
 *
 * @public
 */
export type HandlerReturn<Op extends OperationName> =
  OperationResult<Op> extends undefined
    ? // biome-ignore lint/suspicious/noConfusingVoidType: a handler without a result may simply return
      void
    : OperationResult<Op>;

/**
 * A handler of a privileged operation.
 *
 * @public
 */
export type OperationHandler<Op extends OperationName> = (
  ctx: InvocationContext,
  args: OperationArgs<Op>,
) => HandlerReturn<Op> | Promise<HandlerReturn<Op>>;

import { z } from 'zod';

/**
 * The QMP commands virtkit sends, with their arguments (types) and replies (zod schemas, checked on
 * every reply). Schemas accept fields they do not name, so a newer QEMU that adds fields still
 * passes; a missing or mistyped field that virtkit reads is an error, not a silent `undefined`.
 * Shapes follow QEMU 7.2's QAPI schema (qapi/*.json).
 */

const Empty = z.looseObject({});
const Version = z.looseObject({ major: z.number().int(), minor: z.number().int(), micro: z.number().int() });

const QueryStatus = z.looseObject({ running: z.boolean(), status: z.string() });
const CpuInfoFast = z.looseObject({
  'cpu-index': z.number().int().nonnegative(),
  'qom-path': z.string(),
  'thread-id': z.number().int().positive(),
  target: z.string(),
});
const CpuInstanceProperties = z.looseObject({
  'node-id': z.number().int().nonnegative().optional(),
  'socket-id': z.number().int().nonnegative().optional(),
  'die-id': z.number().int().nonnegative().optional(),
  'core-id': z.number().int().nonnegative().optional(),
  'thread-id': z.number().int().nonnegative().optional(),
});
const HotpluggableCpu = z.looseObject({
  type: z.string(),
  'vcpus-count': z.number().int().positive(),
  props: CpuInstanceProperties,
  'qom-path': z.string().optional(),
});
const MemoryDeviceInfo = z.looseObject({
  type: z.string(),
  data: z.looseObject({
    id: z.string().optional(),
    size: z.number().optional(),
    slot: z.number().optional(),
  }),
});
const IOThreadInfo = z.looseObject({ id: z.string(), 'thread-id': z.number().int().positive() });
const MachineInfo = z.looseObject({
  name: z.string(),
  alias: z.string().optional(),
  'is-default': z.boolean().optional(),
  'cpu-max': z.number().int().positive(),
  'hotpluggable-cpus': z.boolean(),
  'numa-mem-supported': z.boolean(),
  deprecated: z.boolean(),
  'default-cpu-type': z.string().optional(),
  'default-ram-id': z.string().optional(),
});
const CpuDefinitionInfo = z.looseObject({
  name: z.string(),
  'migration-safe': z.boolean().optional(),
  static: z.boolean(),
  'unavailable-features': z.array(z.string()).optional(),
  typename: z.string(),
  'alias-of': z.string().optional(),
  deprecated: z.boolean(),
});
const FdsetFdInfo = z.looseObject({ fd: z.number().int(), opaque: z.string().optional() });
const ChardevInfo = z.looseObject({ label: z.string(), filename: z.string() });
const FdsetInfo = z.looseObject({ 'fdset-id': z.number().int(), fds: z.array(FdsetFdInfo) });
const BlockNodeInfo = z.looseObject({
  'node-name': z.string().optional(),
  drv: z.string(),
  ro: z.boolean(),
  file: z.string(),
});
const PciDeviceInfo = z.looseObject({
  bus: z.number().int(),
  slot: z.number().int(),
  function: z.number().int(),
  class_info: z.looseObject({ class: z.number().int() }),
  id: z.looseObject({ device: z.number().int(), vendor: z.number().int() }),
  qdev_id: z.string(),
});
const PciInfo = z.looseObject({ bus: z.number().int(), devices: z.array(PciDeviceInfo) });

const MigrationRam = z.looseObject({
  transferred: z.number(),
  remaining: z.number(),
  total: z.number(),
  'dirty-pages-rate': z.number().optional(),
});
const SocketAddress = z.looseObject({
  type: z.string(),
  host: z.string().optional(),
  port: z.string().optional(),
  path: z.string().optional(),
});
const MigrationInfo = z.looseObject({
  status: z.string().optional(),
  ram: MigrationRam.optional(),
  'total-time': z.number().optional(),
  'expected-downtime': z.number().optional(),
  downtime: z.number().optional(),
  'error-desc': z.string().optional(),
  'socket-address': z.array(SocketAddress).optional(),
});

/** A command's argument type and reply schema; `A` exists only for the type checker. */
interface Spec<A, R> {
  readonly reply: z.ZodType<R>;
  /** Never set: carries the argument type. */
  readonly args?: A;
}

function spec<A = undefined>(): <R>(reply: z.ZodType<R>) => Spec<A, R> {
  return (reply) => ({ reply });
}

/** `blockdev-add`'s BlockdevOptions: a driver, a node name and the driver's own options. */
export interface BlockdevOptions {
  /** The block driver, e.g. `file`, `raw`, `qcow2`. */
  driver: string;
  /** The node's name, unique in the QEMU process. */
  'node-name': string;
  /** Read-only node. */
  'read-only'?: boolean;
  /** Driver options (`filename`, `file`, `cache`…). */
  [option: string]: unknown;
}

/** `device_add`'s arguments: the device type, its id and its properties. */
export interface DeviceAddArguments {
  /** The device type, e.g. `virtio-blk-pci`. */
  driver: string;
  /** The device id (virtkit uses the alias). */
  id: string;
  /** Device properties (`bus`, `addr`, `drive`…). */
  [property: string]: unknown;
}

/**
 * Every QMP command virtkit uses: arguments and the reply's schema.
 *
 * @internal
 */
export const QMP_COMMANDS = {
  qmp_capabilities: spec<{ enable?: string[] } | undefined>()(Empty),
  'query-status': spec()(QueryStatus),
  'query-name': spec()(z.looseObject({ name: z.string().optional() })),
  'query-uuid': spec()(z.looseObject({ UUID: z.string() })),
  'query-version': spec()(z.looseObject({ qemu: Version, package: z.string() })),
  'query-kvm': spec()(z.looseObject({ enabled: z.boolean(), present: z.boolean() })),
  'query-target': spec()(z.looseObject({ arch: z.string() })),
  'query-machines': spec()(z.array(MachineInfo)),
  'query-cpu-definitions': spec()(z.array(CpuDefinitionInfo)),
  'query-cpus-fast': spec()(z.array(CpuInfoFast)),
  'query-iothreads': spec()(z.array(IOThreadInfo)),
  'query-hotpluggable-cpus': spec()(z.array(HotpluggableCpu)),
  'query-memory-devices': spec()(z.array(MemoryDeviceInfo)),
  'query-pci': spec()(z.array(PciInfo)),
  'query-fdsets': spec()(z.array(FdsetInfo)),
  'query-chardev': spec()(z.array(ChardevInfo)),
  'query-named-block-nodes': spec<{ flat?: boolean } | undefined>()(z.array(BlockNodeInfo)),
  cont: spec()(Empty),
  stop: spec()(Empty),
  system_powerdown: spec()(Empty),
  system_reset: spec()(Empty),
  'set-action': spec<{ shutdown?: 'poweroff' | 'pause' }>()(Empty),
  quit: spec()(Empty),
  'dump-guest-memory': spec<{ paging: boolean; protocol: string }>()(Empty),
  balloon: spec<{ value: number }>()(Empty),
  getfd: spec<{ fdname: string }>()(Empty),
  closefd: spec<{ fdname: string }>()(Empty),
  'add-fd': spec<{ 'fdset-id'?: number; opaque?: string } | undefined>()(
    z.looseObject({ 'fdset-id': z.number().int().nonnegative(), fd: z.number().int().nonnegative() }),
  ),
  'remove-fd': spec<{ 'fdset-id': number; fd?: number }>()(Empty),
  'blockdev-add': spec<BlockdevOptions>()(Empty),
  'blockdev-del': spec<{ 'node-name': string }>()(Empty),
  device_add: spec<DeviceAddArguments>()(Empty),
  device_del: spec<{ id: string }>()(Empty),
  'object-add': spec<{ 'qom-type': string; id: string; [property: string]: unknown }>()(Empty),
  'object-del': spec<{ id: string }>()(Empty),
  netdev_add: spec<{ type: string; id: string; [option: string]: unknown }>()(Empty),
  netdev_del: spec<{ id: string }>()(Empty),
  'migrate-set-capabilities': spec<{ capabilities: Array<{ capability: string; state: boolean }> }>()(Empty),
  'migrate-set-parameters': spec<Record<string, unknown>>()(Empty),
  migrate: spec<{ uri: string }>()(Empty),
  'migrate-incoming': spec<{ uri: string }>()(Empty),
  migrate_cancel: spec()(Empty),
  'query-migrate': spec()(MigrationInfo),
} as const;

/**
 * The name of a command in {@link QMP_COMMANDS}.
 *
 * @internal
 */
export type QmpCommandName = keyof typeof QMP_COMMANDS;

/**
 * The arguments of a command; `undefined` for one that takes none.
 *
 * @internal
 */
export type QmpArguments<K extends QmpCommandName> =
  (typeof QMP_COMMANDS)[K] extends Spec<infer A, unknown> ? A : never;

/**
 * The validated reply of a command.
 *
 * @internal
 */
export type QmpReply<K extends QmpCommandName> = z.output<(typeof QMP_COMMANDS)[K]['reply']>;

/** Replies a caller needs by name. @internal */
export type QmpMachineInfo = z.output<typeof MachineInfo>;
/** @internal */
export type QmpMigrationInfo = z.output<typeof MigrationInfo>;
/** @internal */
export type QmpHotpluggableCpu = z.output<typeof HotpluggableCpu>;
/** @internal */
export type QmpCpuDefinitionInfo = z.output<typeof CpuDefinitionInfo>;

/** True when `name` is a command of {@link QMP_COMMANDS}. @internal */
export function isKnownCommand(name: string): name is QmpCommandName {
  return Object.hasOwn(QMP_COMMANDS, name);
}

/*
 * The C structures of native/virtkit-internal.h (internal API 1.0) as koffi types, and the
 * conversion of each operation's arguments and results between the zod-validated JavaScript values
 * and driver-owned C memory. This is the only module that knows the C layout; the header pins the
 * same sizes with _Static_assert, and checkLayout() compares them at load.
 */

import koffi from 'koffi';
import { ErrorCode, VirtError } from '../errors.js';
import { type OperationArgs, type OperationName, PHASES, type Phase } from '../privileged/operations.js';

type KType = ReturnType<typeof koffi.struct>;

const UUID_SIZE = 40;
const NAME_SIZE = 256;
const PHASE_SIZE = 16;
const PATH_SIZE = 4096;
const CPUSET_SIZE = 256;
const TEXT_SIZE = 256;
const IFNAME_SIZE = 16;
const ERROR_SIZE = 1024;
const MAX_QUEUES = 16;
const UNLIMITED = 0xffff_ffff_ffff_ffffn;

const chars = (n: number) => koffi.array('char', n, 'String');

// Anonymous types: koffi's type names are process-global (see util/libc.ts).
const context = koffi.struct({
  domain_uuid: chars(UUID_SIZE),
  domain_name: chars(NAME_SIZE),
  domain_id: 'int64_t',
  phase: 'int32_t',
  pid: 'int32_t',
  deadline_ns: 'uint64_t',
  cancelled: 'int32_t',
  reserved: 'int32_t',
  error: chars(ERROR_SIZE),
});
const memLockArgs = koffi.struct({
  pid: 'int32_t',
  rule: 'int32_t',
  bytes: 'uint64_t',
  current_soft: 'uint64_t',
  current_hard: 'uint64_t',
  guest_memory_bytes: 'uint64_t',
  hard_limit_bytes: 'uint64_t',
  passthrough_devices: 'uint32_t',
  reserved: 'uint32_t',
  explanation: chars(TEXT_SIZE),
});
const schedThread = koffi.struct({
  tid: 'int32_t',
  role: 'int32_t',
  index: 'uint32_t',
  policy: 'int32_t',
  priority: 'int32_t',
});
const schedArgs = koffi.struct({ pid: 'int32_t', n_threads: 'uint32_t', threads: 'void *' });
const thread = koffi.struct({ tid: 'int32_t', role: 'int32_t', index: 'uint32_t' });
const cpuset = koffi.struct({ index: 'uint32_t', cpuset: chars(CPUSET_SIZE) });
const placement = koffi.struct({ tid: 'int32_t', cgroup: chars(PATH_SIZE) });
const placeArgs = koffi.struct({
  pid: 'int32_t',
  n_threads: 'uint32_t',
  threads: 'void *',
  emulator_cpuset: chars(CPUSET_SIZE),
  n_vcpu_cpusets: 'uint32_t',
  n_iothread_cpusets: 'uint32_t',
  vcpu_cpusets: 'void *',
  iothread_cpusets: 'void *',
});
const placeResult = koffi.struct({ n_placements: 'uint32_t', capacity: 'uint32_t', placements: 'void *' });
const releaseArgs = koffi.struct({ pid: 'int32_t', n_placements: 'uint32_t', placements: 'void *' });
const tapArgs = koffi.struct({
  ifname: chars(IFNAME_SIZE),
  queues: 'uint32_t',
  vnet_hdr: 'int32_t',
  managed: 'int32_t',
});
const tapResult = koffi.struct({
  ifname: chars(IFNAME_SIZE),
  n_fds: 'uint32_t',
  fds: koffi.array('int32_t', MAX_QUEUES),
});
const openFileArgs = koffi.struct({ path: chars(PATH_SIZE), mode: 'int32_t' });
const openFileResult = koffi.struct({ fd: 'int32_t' });

/** A handler: `int fn(void *user_data, struct virtkit_context *, const ARGS *[, RESULT *])`. */
export const handlerProto = {
  withoutResult: koffi.proto('int', ['void *', 'void *', 'void *']),
  withResult: koffi.proto('int', ['void *', 'void *', 'void *', 'void *']),
};

/** `int declare_api_version(struct virtkit_registrar *, const char *)`. */
const declareProto = koffi.proto('int', ['void *', 'const char *']);
/** `int register(struct virtkit_registrar *, handler fn, void *user_data, uint32_t timeout_ms)`. */
const registerProto = koffi.proto('int', ['void *', 'void *', 'void *', 'uint32_t']);

/** The registration members of `struct virtkit_registrar`, in header order, with their operation. */
export const REGISTRATIONS = [
  ['set_max_mem_lock', 'process.setMaxMemLock'],
  ['set_scheduler', 'thread.setScheduler'],
  ['place_threads', 'cgroup.placeThreads'],
  ['release_cgroups', 'cgroup.release'],
  ['open_tap', 'net.openTap'],
  ['open_file', 'storage.openFile'],
] as const satisfies ReadonlyArray<readonly [string, OperationName]>;

const registrar = koffi.struct({
  struct_size: 'uint32_t',
  host_api_version: chars(PHASE_SIZE),
  declare_api_version: koffi.pointer(declareProto),
  ...Object.fromEntries(REGISTRATIONS.map(([member]) => [member, koffi.pointer(registerProto)])),
});

export const abiTypes = { registrar, declareProto, registerProto, context };

/**
 * Every structure of the header with its koffi type and the size its _Static_assert pins: a
 * mismatch means a broken build or platform.
 */
export const ABI_STRUCTS: ReadonlyArray<readonly [string, KType, number]> = [
  ['virtkit_context', context, 1352],
  ['virtkit_mem_lock_args', memLockArgs, 312],
  ['virtkit_sched_thread', schedThread, 20],
  ['virtkit_sched_args', schedArgs, 16],
  ['virtkit_thread', thread, 12],
  ['virtkit_cpuset', cpuset, 260],
  ['virtkit_placement', placement, 4100],
  ['virtkit_place_args', placeArgs, 296],
  ['virtkit_place_result', placeResult, 16],
  ['virtkit_release_args', releaseArgs, 16],
  ['virtkit_tap_args', tapArgs, 28],
  ['virtkit_tap_result', tapResult, 84],
  ['virtkit_open_file_args', openFileArgs, 4100],
  ['virtkit_open_file_result', openFileResult, 4],
  ['virtkit_registrar', registrar, 80],
];

/** Fails when koffi lays the structures out differently from the header (a non-LP64 platform). */
export function checkLayout(): void {
  for (const [name, type, size] of ABI_STRUCTS) {
    if (koffi.sizeof(type) !== size) {
      throw new VirtError(
        ErrorCode.NO_SUPPORT,
        `native plugins need the LP64 layout of native/virtkit-internal.h: struct ${name} is ${koffi.sizeof(type)} bytes here, not ${size}`,
      );
    }
  }
}

/** Offset of `cancelled` in `struct virtkit_context`, which the driver sets while the plugin runs. */
export const CANCELLED_OFFSET = koffi.offsetof(context, 'cancelled');

/**
 * Driver-owned C memory of one call. Nothing is freed before the plugin has returned: a cancelled
 * call still reads its arguments.
 */
export class CallMemory {
  readonly #blocks: bigint[] = [];

  /** Allocates `count` elements of `type` and writes `value` (one object or `count` of them) into them. */
  put(type: KType, value: object | object[], count = 1): bigint {
    const ptr = koffi.alloc(type, count) as bigint;
    this.#blocks.push(ptr);
    if (Array.isArray(value)) koffi.encode(ptr, type, value, count);
    else koffi.encode(ptr, type, value);
    return ptr;
  }

  /** Encodes a list, or passes NULL when it is empty. */
  list(type: KType, values: object[]): bigint | null {
    return values.length === 0 ? null : this.put(type, values, values.length);
  }

  free(): void {
    for (const ptr of this.#blocks.splice(0)) koffi.free(ptr);
  }
}

/** A string for a fixed `char[size]` buffer, or an error naming the field when it does not fit. */
function text(value: string, size: number, field: string): string {
  if (Buffer.byteLength(value) >= size || value.includes('\0')) {
    throw new VirtError(
      ErrorCode.CONFIG_UNSUPPORTED,
      `${field} (${value.slice(0, 40)}…) does not fit the C ABI's ${size - 1}-byte buffer of native plugins`,
      { path: field },
    );
  }
  return value;
}

const limit = (v: bigint | 'unlimited'): bigint => (v === 'unlimited' ? UNLIMITED : v);
const ROLES = { vcpu: 0, iothread: 1, emulator: 2 } as const;
const POLICIES = { other: 0, fifo: 1, rr: 2, batch: 3, idle: 5 } as const;
const RULES = { hard_limit: 0, locked: 1, passthrough: 2 } as const;

/** The context of a call. */
export function encodeContext(
  mem: CallMemory,
  ctx: { domain: { uuid: string; name: string; id: number | null }; phase: Phase; pid: number | undefined },
  deadlineNs: bigint,
): bigint {
  return mem.put(context, {
    domain_uuid: text(ctx.domain.uuid, UUID_SIZE, 'domain.uuid'),
    domain_name: text(ctx.domain.name, NAME_SIZE, 'domain.name'),
    domain_id: ctx.domain.id ?? -1,
    phase: PHASES.indexOf(ctx.phase),
    pid: ctx.pid ?? 0,
    deadline_ns: deadlineNs,
    cancelled: 0,
    reserved: 0,
    error: '',
  });
}

/** The error message a failed handler left in its context. */
export function contextError(ptr: bigint): string {
  return String(koffi.decode(ptr, koffi.offsetof(context, 'error'), chars(ERROR_SIZE)) ?? '');
}

/** The C memory of one call's arguments and result area, and how to read the result back. */
export interface Encoded {
  readonly args: bigint;
  readonly result: bigint | null;
  decode(): unknown;
}

/** How one operation crosses the C boundary. */
interface Marshal<Op extends OperationName> {
  readonly hasResult: boolean;
  /** Writes the arguments (and the result area) and returns their addresses plus a result decoder. */
  encode(mem: CallMemory, args: OperationArgs<Op>): Encoded;
}

const none = { result: null, decode: () => undefined };

export const marshals: { [Op in OperationName]: Marshal<Op> } = {
  'process.setMaxMemLock': {
    hasResult: false,
    encode: (mem, a) => ({
      ...none,
      args: mem.put(memLockArgs, {
        pid: a.pid,
        rule: RULES[a.breakdown.rule],
        bytes: limit(a.bytes),
        current_soft: limit(a.current.soft),
        current_hard: limit(a.current.hard),
        guest_memory_bytes: a.breakdown.guestMemoryBytes,
        hard_limit_bytes: a.breakdown.hardLimitBytes ?? 0n,
        passthrough_devices: a.breakdown.passthroughDevices,
        reserved: 0,
        explanation: text(a.breakdown.explanation.slice(0, TEXT_SIZE - 1), TEXT_SIZE, 'explanation'),
      }),
    }),
  },
  'thread.setScheduler': {
    hasResult: false,
    encode: (mem, a) => ({
      ...none,
      args: mem.put(schedArgs, {
        pid: a.pid,
        n_threads: a.threads.length,
        threads: mem.list(
          schedThread,
          a.threads.map((t) => ({
            tid: t.tid,
            role: ROLES[t.role],
            index: t.index,
            policy: POLICIES[t.policy],
            priority: t.priority,
          })),
        ),
      }),
    }),
  },
  'cgroup.placeThreads': {
    hasResult: true,
    encode: (mem, a) => {
      const capacity = a.threads.length;
      const area =
        capacity === 0 ? null : mem.put(placement, Array(capacity).fill({ tid: 0, cgroup: '' }), capacity);
      const result = mem.put(placeResult, { n_placements: 0, capacity, placements: area });
      const cpusets = (list: ReadonlyArray<{ index: number; cpuset: string }>, field: string) =>
        mem.list(
          cpuset,
          list.map((c) => ({ index: c.index, cpuset: text(c.cpuset, CPUSET_SIZE, field) })),
        );
      return {
        args: mem.put(placeArgs, {
          pid: a.pid,
          n_threads: capacity,
          threads: mem.list(
            thread,
            a.threads.map((t) => ({ tid: t.tid, role: ROLES[t.role], index: t.index })),
          ),
          emulator_cpuset: text(a.cpusets.emulator ?? '', CPUSET_SIZE, 'cpusets.emulator'),
          n_vcpu_cpusets: a.cpusets.vcpus.length,
          n_iothread_cpusets: a.cpusets.iothreads.length,
          vcpu_cpusets: cpusets(a.cpusets.vcpus, 'cpusets.vcpus'),
          iothread_cpusets: cpusets(a.cpusets.iothreads, 'cpusets.iothreads'),
        }),
        result,
        decode: () => {
          const out = koffi.decode(result, placeResult) as { n_placements: number };
          // A count beyond the area is a lie; the schema check downstream reports it as malformed.
          if (out.n_placements > capacity)
            return { placements: `${out.n_placements} > capacity ${capacity}` };
          const list =
            out.n_placements === 0 || area === null
              ? []
              : (koffi.decode(area, placement, out.n_placements) as Array<{ tid: number; cgroup: string }>);
          return { placements: list.map((p) => ({ tid: p.tid, cgroup: p.cgroup })) };
        },
      };
    },
  },
  'cgroup.release': {
    hasResult: false,
    encode: (mem, a) => ({
      ...none,
      args: mem.put(releaseArgs, {
        pid: a.pid,
        n_placements: a.placements.length,
        placements: mem.list(
          placement,
          a.placements.map((p) => ({ tid: p.tid, cgroup: text(p.cgroup, PATH_SIZE, 'placements.cgroup') })),
        ),
      }),
    }),
  },
  'net.openTap': {
    hasResult: true,
    encode: (mem, a) => {
      const result = mem.put(tapResult, { ifname: '', n_fds: 0, fds: Array(MAX_QUEUES).fill(-1) });
      return {
        args: mem.put(tapArgs, {
          ifname: text(a.ifname ?? '', IFNAME_SIZE, 'ifname'),
          queues: a.queues,
          vnet_hdr: a.vnetHdr ? 1 : 0,
          managed: a.managed ? 1 : 0,
        }),
        result,
        decode: () => {
          const out = koffi.decode(result, tapResult) as { ifname: string; n_fds: number; fds: Int32Array };
          const fds = Array.from(out.fds).slice(0, Math.min(out.n_fds, MAX_QUEUES));
          return { ifname: out.ifname, fds };
        },
      };
    },
  },
  'storage.openFile': {
    hasResult: true,
    encode: (mem, a) => {
      const result = mem.put(openFileResult, { fd: -1 });
      return {
        args: mem.put(openFileArgs, { path: text(a.path, PATH_SIZE, 'path'), mode: a.mode === 'r' ? 0 : 1 }),
        result,
        decode: () => ({ fd: (koffi.decode(result, openFileResult) as { fd: number }).fd }),
      };
    },
  },
};

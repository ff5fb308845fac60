import { readFileSync, realpathSync } from 'node:fs';
import { posix } from 'node:path';
import { z } from 'zod';
import { ErrorCode, errnoOf, errorMessage, VirtError } from '../../errors.js';
import { type StoragePrefix, storagePrefix } from './storage.js';

export { type StoragePrefix, storagePrefix };

/*
 * The policy of virtkit-privd: which peers may ask, and what they may ask for. A JSON file
 * (or an object), validated here; every field is documented in README.md ("Deploying the
 * privileged helper"). Sections other than `peers` and `targets` are optional: an operation whose
 * section is absent is refused (rule = the section's name).
 */

const absolutePath = z
  .string()
  .min(2)
  .startsWith('/', 'must be an absolute path')
  .refine((p) => !p.includes('\0'), 'must not contain NUL');

const bytes = z.union([
  z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  z.string().regex(/^\d{1,20}$/, 'must be a decimal number of bytes'),
  z.literal('unlimited'),
]);

const QUALIFIERS = ['sameUid', 'descendant', 'cgroupSubtree'] as const;
const SCHED_POLICIES = ['other', 'batch', 'idle', 'fifo', 'rr'] as const;

/** A cgroup path relative to each hierarchy's root, as `util/cgroup` accepts it. */
const cgroupParent = z
  .string()
  .regex(
    /^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)*$/,
    'must be a relative cgroup path such as virtkit or machine/virtkit',
  )
  .refine((p) => !p.split('/').some((s) => s === '.' || s === '..'), 'must not contain . or .. segments');

const targetsSchema = z
  .strictObject({
    /** How a target process qualifies; any one suffices. */
    qualify: z.array(z.enum(QUALIFIERS)).min(1).default(['sameUid']),
    /** For `cgroupSubtree`: the subtree (as /proc/<pid>/cgroup shows it) the target must be inside. */
    cgroupSubtree: absolutePath.optional(),
    /** Executables a target may run (readlink /proc/<pid>/exe). */
    emulators: z.array(absolutePath).min(1).default(['/usr/bin/qemu-system-x86_64']),
    /** Shells accepted as the driver's pre-exec stub that is about to exec an allowed emulator. */
    stubs: z.array(absolutePath).default(['/usr/bin/dash', '/bin/dash']),
  })
  .refine((t) => !t.qualify.includes('cgroupSubtree') || t.cgroupSubtree !== undefined, {
    message: "qualify lists 'cgroupSubtree' but no cgroupSubtree is set",
    path: ['cgroupSubtree'],
  });

const count = (max: number) => z.number().int().min(1).max(max);
const millis = z.number().int().min(10).max(3_600_000);

/** The helper's own resource limits; see {@link DEFAULT_LIMITS} for the defaults. */
const limitsSchema = z
  .strictObject({
    maxConnections: count(65_536).default(1024),
    maxConnectionsPerUid: count(65_536).default(64),
    handshakeTimeoutMs: millis.default(5000),
    frameTimeoutMs: millis.default(5000),
    maxInFlight: count(4096).default(32),
    maxQueued: count(65_536).default(1024),
    maxInFlightPerConnection: count(4096).default(64),
    memlockWorkers: count(256).default(4),
  })
  .refine((l) => l.maxConnectionsPerUid < l.maxConnections, {
    message: 'must be below maxConnections, so that one uid cannot take every connection',
    path: ['maxConnectionsPerUid'],
  });

/**
 * The schema of a policy file.
 *
 * @internal
 */
export const policySchema = z.strictObject({
  version: z.literal(1),
  peers: z.strictObject({
    /** Peer uids (SO_PEERCRED) allowed to connect at all. */
    uids: z.array(z.number().int().nonnegative()).min(1),
  }),
  targets: targetsSchema.prefault({}),
  memlock: z
    .strictObject({
      /** The highest RLIMIT_MEMLOCK the helper sets; 'unlimited' allows RLIM_INFINITY too. */
      maxBytes: bytes,
    })
    .optional(),
  scheduler: z
    .strictObject({
      policies: z.array(z.enum(SCHED_POLICIES)).min(1),
      /** The allowed static priority range of fifo and rr. */
      priority: z
        .strictObject({ min: z.number().int().min(1).max(99), max: z.number().int().min(1).max(99) })
        .refine((p) => p.min <= p.max, { message: 'min must not exceed max', path: ['min'] })
        .prefault({ min: 1, max: 1 }),
    })
    .optional(),
  cgroup: z
    .strictObject({
      /** The parent the helper creates `vk-<domain uuid>/…` under, in each hierarchy. */
      parent: cgroupParent,
    })
    .optional(),
  tap: z
    .strictObject({
      /** Every TAP name must start with it; unnamed requests get `<prefix>%d`. */
      prefix: z
        .string()
        .min(1)
        .max(12)
        .regex(/^[A-Za-z0-9_-]+$/, 'must be letters, digits, _ or -'),
    })
    .optional(),
  storage: z
    .strictObject({
      /** Directories whose files may be opened (resolved without following symlinks out of them). */
      prefixes: z.array(absolutePath).min(1),
      /** Whether mode 'rw' is allowed. */
      allowWrite: z.boolean().default(true),
    })
    .optional(),
  limits: limitsSchema.prefault({}),
});

/**
 * The policy of `virtkit-privd`, as written in its JSON file or given to `createPrivilegedHelper`.
 * Sections other than `peers` and `targets` are optional; an operation whose section is absent is
 * refused. See README.md, "Deploying the privileged helper".
 *
 * @public
 */
export interface PrivilegedHelperPolicy {
  /** The policy format version: 1. */
  readonly version: 1;
  /** Who may connect. */
  readonly peers: {
    /** Peer uids (from SO_PEERCRED) allowed to connect at all. */
    readonly uids: readonly number[];
  };
  /** Which processes requests may concern. */
  readonly targets?: {
    /** How a target qualifies, any one sufficing; default `['sameUid']`. */
    readonly qualify?: ReadonlyArray<'sameUid' | 'descendant' | 'cgroupSubtree'>;
    /** For `cgroupSubtree`: the cgroup (as /proc/<pid>/cgroup shows it) the target must be inside. */
    readonly cgroupSubtree?: string;
    /** Executables a target may run; default `['/usr/bin/qemu-system-x86_64']`. */
    readonly emulators?: readonly string[];
    /** Shells accepted as the driver's pre-exec stub; default `['/usr/bin/dash', '/bin/dash']`. */
    readonly stubs?: readonly string[];
  };
  /** process.setMaxMemLock. */
  readonly memlock?: {
    /** The highest limit set, in bytes (a number or a decimal string), or `'unlimited'`. */
    readonly maxBytes: number | string;
  };
  /** thread.setScheduler. */
  readonly scheduler?: {
    /** Allowed policies. */
    readonly policies: ReadonlyArray<'other' | 'batch' | 'idle' | 'fifo' | 'rr'>;
    /** Allowed priority range of `fifo` and `rr`; default 1..1. */
    readonly priority?: { readonly min: number; readonly max: number };
  };
  /** cgroup.placeThreads and cgroup.release. */
  readonly cgroup?: {
    /** The parent (relative to each hierarchy's root) of the `vk-<uuid>` directories. */
    readonly parent: string;
  };
  /** net.openTap. */
  readonly tap?: {
    /** The prefix of every TAP name. */
    readonly prefix: string;
  };
  /** storage.openFile. */
  readonly storage?: {
    /** Directories whose files may be opened. */
    readonly prefixes: readonly string[];
    /** Whether mode `rw` is allowed; default true. */
    readonly allowWrite?: boolean;
  };
  /** The helper's own resource limits, against peers that flood it; every field has a default. */
  readonly limits?: PrivilegedHelperLimits;
}

/**
 * Resource limits of `virtkit-privd` (the `limits` section of its policy). They keep one peer
 * (or one uid) from taking the helper away from the others.
 *
 * @public
 */
export interface PrivilegedHelperLimits {
  /** Clients connected at once, over all uids; default 1024. More are closed at once. */
  readonly maxConnections?: number;
  /** Clients connected at once from one uid; default 64, and always below `maxConnections`. */
  readonly maxConnectionsPerUid?: number;
  /** How long a new client may take to complete its hello; default 5000 ms. */
  readonly handshakeTimeoutMs?: number;
  /** How long a frame may stay half-received; default 5000 ms. */
  readonly frameTimeoutMs?: number;
  /** Requests executing at once, over all clients; default 32. More wait in a queue. */
  readonly maxInFlight?: number;
  /** Requests waiting for a slot, over all clients (one uid may hold half); default 1024. */
  readonly maxQueued?: number;
  /** Requests one connection may have unanswered; default 64. */
  readonly maxInFlightPerConnection?: number;
  /** Processes kept to raise memlock limits as their target's owner (one per uid:gid); default 4. */
  readonly memlockWorkers?: number;
}

type Writable<T> =
  T extends ReadonlyArray<infer U>
    ? Writable<U>[]
    : T extends object
      ? { -readonly [K in keyof T]: Writable<T[K]> }
      : T;
type Assignable<A extends B, B> = A;
/** Fails to compile when a policy written against the interface is not what the schema accepts. */
export type PolicyInterfaceMatchesSchema = Assignable<
  Writable<PrivilegedHelperPolicy>,
  z.input<typeof policySchema>
>;

/** The limits section with every default filled in. */
export type Limits = Required<{ -readonly [K in keyof PrivilegedHelperLimits]: number }>;

/** A validated policy with paths normalised and limits as bigints. */
export interface Policy {
  readonly source: string;
  readonly peerUids: ReadonlySet<number>;
  readonly qualify: ReadonlyArray<(typeof QUALIFIERS)[number]>;
  readonly cgroupSubtree: string | undefined;
  /** Allowed emulators, as configured and as resolved (a symlinked /usr/bin/qemu… counts both ways). */
  readonly emulators: ReadonlySet<string>;
  readonly stubs: ReadonlySet<string>;
  readonly memlock: { readonly maxBytes: bigint | 'unlimited' } | undefined;
  readonly scheduler:
    | {
        readonly policies: ReadonlySet<string>;
        readonly priority: { readonly min: number; readonly max: number };
      }
    | undefined;
  readonly cgroup: { readonly parent: string } | undefined;
  readonly tap: { readonly prefix: string } | undefined;
  readonly storage: { readonly prefixes: readonly StoragePrefix[]; readonly allowWrite: boolean } | undefined;
  readonly limits: Limits;
}

function withReal(paths: readonly string[]): Set<string> {
  const out = new Set<string>();
  for (const p of paths) {
    out.add(posix.normalize(p));
    try {
      out.add(realpathSync(p));
    } catch {
      // Not installed here (yet): the configured path still counts.
    }
  }
  return out;
}

/**
 * Validates a policy object.
 *
 * @param value - the parsed JSON (or an object given to createPrivilegedHelper)
 * @param source - where it came from, for messages
 * @returns the normalised policy
 * @throws {@link VirtError} `XML_ERROR` naming the field (`details.path`) and the source (`details.file`)
 */
export function parsePolicy(value: unknown, source = 'policy'): Policy {
  const parsed = policySchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const field = issue?.path.map(String).join('.') || '(root)';
    throw new VirtError(
      ErrorCode.XML_ERROR,
      `invalid virtkit-privd policy ${source}: ${field}: ${issue?.message ?? 'invalid'}`,
      { path: field, file: source },
    );
  }
  const p = parsed.data;
  return {
    source,
    peerUids: new Set(p.peers.uids),
    qualify: p.targets.qualify,
    cgroupSubtree: p.targets.cgroupSubtree?.replace(/(.)\/+$/, '$1'),
    emulators: withReal(p.targets.emulators),
    stubs: withReal(p.targets.stubs),
    memlock: p.memlock && {
      maxBytes: p.memlock.maxBytes === 'unlimited' ? 'unlimited' : BigInt(p.memlock.maxBytes),
    },
    scheduler: p.scheduler && {
      policies: new Set(p.scheduler.policies),
      priority: p.scheduler.priority,
    },
    cgroup: p.cgroup,
    tap: p.tap,
    storage: p.storage && {
      prefixes: p.storage.prefixes.map(storagePrefix),
      allowWrite: p.storage.allowWrite,
    },
    limits: p.limits,
  };
}

/**
 * Reads and validates a policy file.
 *
 * @param path - the JSON file
 * @returns the normalised policy
 * @throws {@link VirtError} `SYSTEM_ERROR` when it cannot be read, `XML_ERROR` when it is not JSON
 *   or not a valid policy (naming the field)
 */
export function loadPolicy(path: string): Policy {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new VirtError(
      ErrorCode.SYSTEM_ERROR,
      `cannot read the virtkit-privd policy ${path}: ${errorMessage(err)}`,
      { file: path, errno: errnoOf(err) },
      { cause: err },
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new VirtError(
      ErrorCode.XML_ERROR,
      `the virtkit-privd policy ${path} is not valid JSON: ${errorMessage(err)}`,
      { file: path, path: '(root)' },
    );
  }
  return parsePolicy(json, path);
}

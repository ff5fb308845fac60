import { z } from 'zod';
import { ErrorCode, VirtError } from '../../errors.js';
import type { Capabilities, DomainCapabilities } from '../capabilities.js';
import type { Connection } from '../connection.js';
import { formatDomainXml } from '../definition/xml.js';
import type { Domain } from '../domain.js';
import type { DomainState } from '../events.js';
import type { JobInfo } from '../jobs.js';
import type { MigrationOffer, MigrationProgress, MigrationTlsOptions } from '../migration.js';

/*
 * The operations the `virtkit` command performs, as one table: the command runs them in-process
 * when it holds the root itself, and a driver's control socket runs the very same ones for it when
 * an application holds the root. Each takes JSON arguments (validated here, whoever sent them) and
 * returns JSON: these results are also the documented shapes of `virtkit … --json`. Only the stable
 * API is reachable from here — never handlers, never `virtkit/internal`.
 */

/** One domain in `list`. */
export interface DomainSummaryJson {
  /** The running domain's id; null while shut off. */
  readonly id: number | null;
  readonly name: string;
  readonly uuid: string;
  readonly state: DomainState;
  readonly reason: string;
  /** Whether the domain has a persistent definition. */
  readonly persistent: boolean;
}

/** `dominfo`. */
export interface DomainInfoJson extends DomainSummaryJson {
  readonly osType: 'hvm';
  readonly vcpus: number;
  /** The most memory the guest may have, in KiB. */
  readonly maxMemoryKiB: number;
  /** The memory the guest has now, in KiB. */
  readonly memoryKiB: number;
  /** CPU time used by the QEMU process, in nanoseconds, as a decimal string (it may exceed 2^53). */
  readonly cpuTimeNs: string;
  readonly pid: number | null;
  readonly autostart: false;
  readonly taints: readonly string[];
}

/** What a modifying command reports: the domain it acted on. */
export interface DomainRefJson {
  readonly name: string;
  readonly uuid: string;
}

/** `console`: where the serial console of a running domain is. */
export interface ConsoleJson {
  readonly name: string;
  readonly uuid: string;
  /** The serial port: `serial0`, `serial1`… */
  readonly devname: string;
  readonly type: 'pty' | 'unix';
  /** The pseudo-terminal QEMU allocated for it, or the unix socket QEMU listens on. */
  readonly path: string;
}

/** `version`. */
export interface VersionJson {
  /** The version of virtkit that runs the driver. */
  readonly virtkit: string;
  /** The control protocol version. */
  readonly protocol: number;
}

const domainArg = z.string().min(1).max(4096);
/** TLS credentials of a migration: a directory of the holder's host, as `MigrationTlsOptions`. */
const tlsArg = z
  .strictObject({
    dir: z.string().min(2).max(4096).startsWith('/', 'an absolute path'),
    hostname: z.string().min(1).max(255).optional(),
  })
  .optional();
const noArgs = z.strictObject({});
const onDomain = z.strictObject({ domain: domainArg });
const deviceChangeArgs = z.strictObject({
  domain: domainArg,
  xml: z.string().max(1024 * 1024),
  live: z.boolean(),
  config: z.boolean(),
});

/** `attach-device` and `detach-device`: the same arguments, the same flags, one method apart. */
function deviceChange(method: 'attachDevice' | 'detachDevice'): {
  args: typeof deviceChangeArgs;
  run: (conn: Connection, args: z.infer<typeof deviceChangeArgs>) => Promise<DomainRefJson>;
} {
  return {
    args: deviceChangeArgs,
    run: async (conn, args) => {
      const dom = await resolveDomain(conn, args.domain);
      await dom[method](args.xml, { live: args.live, config: args.config });
      return ref(dom);
    },
  };
}

/** The argument schema and the implementation of every operation. */
export const operations = {
  version: {
    args: noArgs,
    run: async (
      _conn: Connection,
      _args: Record<string, never>,
      call: CallContext,
    ): Promise<VersionJson> => ({
      virtkit: call.version,
      protocol: call.protocol,
    }),
  },
  list: {
    args: z.strictObject({ state: z.enum(['all', 'active', 'inactive']).default('active') }),
    run: async (conn: Connection, args: { state: 'all' | 'active' | 'inactive' }) => {
      const out: DomainSummaryJson[] = [];
      for (const dom of await conn.listDomains({ state: args.state })) {
        out.push(await summary(dom));
      }
      return out;
    },
  },
  dominfo: {
    args: onDomain,
    run: async (conn: Connection, args: { domain: string }): Promise<DomainInfoJson> => {
      const dom = await resolveDomain(conn, args.domain);
      const info = await dom.getInfo();
      const def = dom.getDefinition();
      return {
        ...(await summary(dom, info)),
        osType: 'hvm',
        vcpus: info.vcpus,
        maxMemoryKiB: def.memoryKiB,
        memoryKiB: info.memoryKiB,
        cpuTimeNs: info.cpuTimeNs.toString(),
        pid: info.pid,
        autostart: false,
        taints: info.taints,
      };
    },
  },
  dumpxml: {
    args: z.strictObject({ domain: domainArg, inactive: z.boolean().default(false) }),
    run: async (conn: Connection, args: { domain: string; inactive: boolean }) => {
      const dom = await resolveDomain(conn, args.domain);
      const xml = args.inactive ? formatDomainXml(conn.driver.getDefinition(dom.uuid, false)) : dom.toXML();
      return { xml };
    },
  },
  define: {
    args: z.union([
      z.strictObject({ xml: z.string() }),
      z.strictObject({ definition: z.record(z.string(), z.unknown()) }),
    ]),
    run: async (conn: Connection, args: { xml: string } | { definition: Record<string, unknown> }) =>
      ref(await conn.defineDomain('xml' in args ? args.xml : (args.definition as never))),
  },
  create: {
    args: z.union([
      z.strictObject({ xml: z.string(), paused: z.boolean().default(false) }),
      z.strictObject({ definition: z.record(z.string(), z.unknown()), paused: z.boolean().default(false) }),
    ]),
    run: async (
      conn: Connection,
      args: ({ xml: string } | { definition: Record<string, unknown> }) & { paused: boolean },
    ) =>
      ref(
        await conn.createDomain('xml' in args ? args.xml : (args.definition as never), {
          paused: args.paused,
        }),
      ),
  },
  undefine: {
    args: onDomain,
    run: async (conn: Connection, args: { domain: string }) => {
      const dom = await resolveDomain(conn, args.domain);
      await dom.undefine();
      return ref(dom);
    },
  },
  start: {
    args: z.strictObject({ domain: domainArg, paused: z.boolean().default(false) }),
    run: async (conn: Connection, args: { domain: string; paused: boolean }) => {
      const dom = await resolveDomain(conn, args.domain);
      await dom.start({ paused: args.paused });
      return ref(dom);
    },
  },
  destroy: {
    args: z.strictObject({ domain: domainArg, graceful: z.boolean().default(false) }),
    run: async (conn: Connection, args: { domain: string; graceful: boolean }) => {
      const dom = await resolveDomain(conn, args.domain);
      await dom.destroy(args.graceful ? { graceful: true } : {});
      return ref(dom);
    },
  },
  shutdown: {
    args: z.strictObject({
      domain: domainArg,
      timeoutMs: z.number().int().min(1).max(3_600_000).optional(),
    }),
    run: async (conn: Connection, args: { domain: string; timeoutMs?: number | undefined }) => {
      const dom = await resolveDomain(conn, args.domain);
      await dom.shutdown(args.timeoutMs === undefined ? {} : { timeoutMs: args.timeoutMs });
      return ref(dom);
    },
  },
  suspend: {
    args: onDomain,
    run: async (conn: Connection, args: { domain: string }) => {
      const dom = await resolveDomain(conn, args.domain);
      await dom.suspend();
      return ref(dom);
    },
  },
  resume: {
    args: onDomain,
    run: async (conn: Connection, args: { domain: string }) => {
      const dom = await resolveDomain(conn, args.domain);
      await dom.resume();
      return ref(dom);
    },
  },
  reboot: {
    args: z.strictObject({
      domain: domainArg,
      timeoutMs: z.number().int().min(1).max(3_600_000).optional(),
    }),
    run: async (conn: Connection, args: { domain: string; timeoutMs?: number | undefined }) => {
      const dom = await resolveDomain(conn, args.domain);
      await dom.reboot(args.timeoutMs === undefined ? {} : { timeoutMs: args.timeoutMs });
      return ref(dom);
    },
  },
  reset: {
    args: onDomain,
    run: async (conn: Connection, args: { domain: string }) => {
      const dom = await resolveDomain(conn, args.domain);
      await dom.reset();
      return ref(dom);
    },
  },
  console: {
    args: z.strictObject({
      domain: domainArg,
      devname: z
        .string()
        .regex(/^serial[0-9]$/, 'serial0, serial1…')
        .optional(),
    }),
    run: async (
      conn: Connection,
      args: { domain: string; devname?: string | undefined },
    ): Promise<ConsoleJson> => {
      const dom = await resolveDomain(conn, args.domain);
      if ((await dom.getInfo()).id === null)
        throw new VirtError(
          ErrorCode.OPERATION_INVALID,
          `domain '${dom.name}' is not running; start it first`,
        );
      const serials = dom.getDefinition().serials;
      const index =
        args.devname === undefined
          ? serials.findIndex((s) => s.type === 'pty' || (s.type === 'unix' && s.mode === 'bind'))
          : Number(args.devname.slice(6));
      const serial = serials[index];
      const devname = `serial${index}`;
      if (!serial) {
        throw new VirtError(
          ErrorCode.OPERATION_INVALID,
          args.devname === undefined
            ? `domain '${dom.name}' has no pty or unix serial port: add <serial type='pty'/> to its definition`
            : `domain '${dom.name}' has no ${args.devname}`,
        );
      }
      if (
        !(serial.type === 'pty' || serial.type === 'unix') ||
        serial.path === undefined ||
        (serial.type === 'unix' && serial.mode !== 'bind')
      ) {
        throw new VirtError(
          ErrorCode.OPERATION_INVALID,
          `${devname} of domain '${dom.name}' is a ${serial.type}${serial.type === 'unix' ? ` (${serial.mode})` : ''} serial port: only pty serial ports and unix ones QEMU listens on (mode bind) have an interactive console`,
        );
      }
      return { ...ref(dom), devname, type: serial.type, path: serial.path };
    },
  },
  setvcpus: {
    args: z.strictObject({
      domain: domainArg,
      count: z.number().int().min(1).max(4096),
      live: z.boolean(),
      config: z.boolean(),
    }),
    run: async (
      conn: Connection,
      args: { domain: string; count: number; live: boolean; config: boolean },
    ): Promise<DomainRefJson> => {
      const dom = await resolveDomain(conn, args.domain);
      await dom.setVcpus(args.count, { live: args.live, config: args.config });
      return ref(dom);
    },
  },
  attachDevice: deviceChange('attachDevice'),
  detachDevice: deviceChange('detachDevice'),
  domjobinfo: {
    args: onDomain,
    run: async (conn: Connection, args: { domain: string }): Promise<JobInfo> =>
      (await resolveDomain(conn, args.domain)).getJobInfo(),
  },
  domjobabort: {
    args: onDomain,
    run: async (conn: Connection, args: { domain: string }): Promise<DomainRefJson> => {
      const dom = await resolveDomain(conn, args.domain);
      await dom.abortJob();
      return ref(dom);
    },
  },
  migrateBegin: {
    args: onDomain,
    run: async (conn: Connection, args: { domain: string }): Promise<MigrationOffer> =>
      (await resolveDomain(conn, args.domain)).migrateBegin(),
  },
  migratePrepare: {
    // The offer is checked in full by Connection.migratePrepare, as from any caller.
    args: z.strictObject({
      offer: z.record(z.string(), z.unknown()),
      listen: z.string().min(1).max(4096),
      persist: z.boolean().default(false),
      tls: tlsArg,
    }),
    run: async (
      conn: Connection,
      args: { offer: Record<string, unknown>; listen: string; persist: boolean; tls?: TlsJson | undefined },
      call: CallContext,
    ): Promise<IncomingJson> => {
      const incoming = await conn.migratePrepare(args.offer as unknown as MigrationOffer, {
        listen: args.listen,
        signal: call.signal,
        persist: args.persist,
        ...(args.tls === undefined ? {} : { tls: tlsOptions(args.tls) }),
      });
      return {
        uri: incoming.uri,
        cookie: incoming.cookie,
        name: incoming.domain.name,
        uuid: incoming.domain.uuid,
      };
    },
  },
  migratePerform: {
    args: z.strictObject({
      domain: domainArg,
      uri: z.string().min(1).max(4096),
      cookie: z.strictObject({ version: z.literal(1), uuid: z.string().max(64), uri: z.string().max(4096) }),
      maxDowntimeMs: z.number().int().min(1).max(3_600_000).optional(),
      bandwidthMiBps: z.number().int().min(1).max(1_000_000).optional(),
      tls: tlsArg,
    }),
    run: async (
      conn: Connection,
      args: {
        domain: string;
        uri: string;
        cookie: { version: 1; uuid: string; uri: string };
        maxDowntimeMs?: number | undefined;
        bandwidthMiBps?: number | undefined;
        tls?: TlsJson | undefined;
      },
      call: CallContext,
    ): Promise<DomainRefJson> => {
      const dom = await resolveDomain(conn, args.domain);
      await dom.migratePerform(args.uri, {
        cookie: args.cookie,
        signal: call.signal,
        ...(args.maxDowntimeMs === undefined ? {} : { maxDowntimeMs: args.maxDowntimeMs }),
        ...(args.bandwidthMiBps === undefined ? {} : { bandwidthMiBps: args.bandwidthMiBps }),
        ...(args.tls === undefined ? {} : { tls: tlsOptions(args.tls) }),
        onProgress: (p: MigrationProgress) => call.notify?.(p),
      });
      return ref(dom);
    },
  },
  migrateFinish: {
    args: z.strictObject({ uuid: domainArg, cancelled: z.boolean().default(false) }),
    run: async (
      conn: Connection,
      args: { uuid: string; cancelled: boolean },
      call: CallContext,
    ): Promise<DomainRefJson> => {
      const dom = await conn.lookupDomain(args.uuid);
      if (!conn.driver.migrateFinish)
        throw new VirtError(ErrorCode.NO_SUPPORT, 'this driver cannot migrate domains');
      await conn.driver.migrateFinish(dom.uuid, { cancelled: args.cancelled, signal: call.signal });
      return ref(dom);
    },
  },
  migrateConfirm: {
    args: z.strictObject({
      domain: domainArg,
      cancelled: z.boolean().default(false),
      undefineSource: z.boolean().default(false),
    }),
    run: async (
      conn: Connection,
      args: { domain: string; cancelled: boolean; undefineSource: boolean },
    ): Promise<DomainRefJson> => {
      const dom = await resolveDomain(conn, args.domain);
      // A transient source has no definition to remove: gone once its QEMU ends, as in libvirt.
      const undefineSource = args.undefineSource && (await dom.getInfo()).persistent;
      await dom.migrateConfirm({ cancelled: args.cancelled, undefineSource });
      return ref(dom);
    },
  },
  capabilities: {
    args: noArgs,
    run: async (conn: Connection): Promise<Capabilities> => conn.getCapabilities(),
  },
  domcapabilities: {
    args: z.strictObject({
      emulator: z.string().optional(),
      arch: z.string().optional(),
      machine: z.string().optional(),
      virttype: z.enum(['qemu', 'kvm']).optional(),
    }),
    run: async (
      conn: Connection,
      args: { emulator?: string; arch?: string; machine?: string; virttype?: 'qemu' | 'kvm' },
    ): Promise<DomainCapabilities> => conn.getDomainCapabilities(args),
  },
} as const;

/** What every operation may need besides the connection. */
export interface OperationContext {
  readonly version: string;
  readonly protocol: number;
}

/**
 * What one call brings besides its arguments: the versions, a signal that aborts when its caller
 * goes away, a channel for progress.
 */
export interface CallContext extends OperationContext {
  readonly signal?: AbortSignal | undefined;
  readonly notify?: ((progress: unknown) => void) | undefined;
}

/** The TLS credentials of `migratePrepare` and `migratePerform`: see `MigrationTlsOptions`. */
export interface TlsJson {
  readonly dir: string;
  readonly hostname?: string | undefined;
}

function tlsOptions(tls: TlsJson): MigrationTlsOptions {
  return tls.hostname === undefined ? { dir: tls.dir } : { dir: tls.dir, hostname: tls.hostname };
}

/** What `migratePrepare` returns: the incoming migration, as `migratePerform` needs it. */
export interface IncomingJson {
  readonly uri: string;
  readonly cookie: { readonly version: 1; readonly uuid: string; readonly uri: string };
  readonly name: string;
  readonly uuid: string;
}

/** The name of an operation. */
export type OperationName = keyof typeof operations;

/** The arguments an operation takes, before defaults are applied. */
export type OperationArgs<K extends OperationName> = z.input<(typeof operations)[K]['args']>;

/** What an operation returns. */
export type OperationResult<K extends OperationName> = Awaited<ReturnType<(typeof operations)[K]['run']>>;

/** True for the name of an operation of the table. */
export function isOperationName(name: string): name is OperationName {
  return Object.hasOwn(operations, name);
}

/**
 * Validates `args` for `name` and runs the operation. Invalid arguments get OPERATION_INVALID
 * naming the field.
 */
export async function runOperation(
  conn: Connection,
  name: OperationName,
  args: unknown,
  ctx: OperationContext,
  call: Omit<CallContext, keyof OperationContext> = {},
): Promise<unknown> {
  const op = operations[name];
  const parsed = op.args.safeParse(args ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const field = issue?.path.join('.') ?? '';
    throw new VirtError(
      ErrorCode.OPERATION_INVALID,
      `invalid arguments for '${name}'${field ? ` at '${field}'` : ''}: ${issue?.message ?? 'malformed'}`,
      { path: field, operation: name },
    );
  }
  const run = op.run as (c: Connection, a: unknown, x: CallContext) => Promise<unknown>;
  return run(conn, parsed.data, { ...call, ...ctx });
}

/**
 * A domain by id (of a running domain), uuid or name, in virsh's order: a name made of digits is
 * found by name when no running domain has that id.
 */
export async function resolveDomain(conn: Connection, ref: string): Promise<Domain> {
  if (/^[0-9]{1,9}$/.test(ref)) {
    const id = Number(ref);
    for (const dom of await conn.listDomains({ state: 'active' })) {
      if ((await dom.getInfo()).id === id) return dom;
    }
  }
  return conn.lookupDomain(ref);
}

async function summary(
  dom: Domain,
  info?: Awaited<ReturnType<Domain['getInfo']>>,
): Promise<DomainSummaryJson> {
  const i = info ?? (await dom.getInfo());
  return {
    id: i.id,
    name: dom.name,
    uuid: dom.uuid,
    state: i.state,
    reason: i.reason,
    persistent: i.persistent,
  };
}

function ref(dom: Domain): DomainRefJson {
  return { name: dom.name, uuid: dom.uuid };
}

import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync, readlinkSync, realpathSync, statSync } from 'node:fs';
import { basename, isAbsolute } from 'node:path';
import { z } from 'zod';
import { ErrorCode, errorMessage, VirtError } from '../../errors.js';
import { verifyThreadCount, verifyThreads } from '../../privileged/threads-verify.js';
import type { DomainDefinition } from '../../stable/definition/schema.js';
import { resolveDefinition } from '../../stable/definition/validate.js';
import { closeFd } from '../../util/libc.js';
import { readProcExe, readProcStartTime } from '../../util/proc.js';
import { peerCredentials, unixConnect } from '../../util/unix-socket.js';
import { qemuCwd, readDevices } from './devices/from-qmp.js';
import { QmpClient } from './qmp/client.js';
import { domainPaths, type RootLayout } from './root.js';
import { readStatus, type StatusRecord } from './status.js';

/** The taint of a domain whose QEMU virtkit did not launch (libvirt's `external-launch`). */
export const EXTERNAL_LAUNCH_TAINT = 'external-launch';

/** What `attach` needs: the QEMU process and the path of its QMP socket; a name if QEMU has none. */
export interface AttachRequest {
  readonly pid: number;
  readonly monitor: string;
  readonly name?: string;
}

const requestSchema = z.strictObject({
  pid: z.number().int().positive(),
  monitor: z.string().refine(isAbsolute, 'an absolute path'),
  name: z
    .string()
    .min(1)
    .max(200)
    .regex(/^[^/\0\n]+$/, 'a domain name (no /, NUL or newline)')
    .optional(),
});

/** An emulator binary is recognised by its name, as libvirt recognises `qemu-system-*`/`qemu-kvm`. */
const QEMU_BINARY = /^(qemu-system-[a-z0-9_]+|qemu-kvm)$/;
const CONNECT_TIMEOUT_MS = 10_000;
const NIL_UUID = '00000000-0000-0000-0000-000000000000';

/** What attach learnt from the process and its monitor, ready to be recorded. */
export interface Inspection {
  readonly def: DomainDefinition;
  /** The status the domain is recorded with, minus the id the driver assigns. */
  readonly status: Omit<StatusRecord, 'id'>;
  /** QEMU devices the definition cannot represent, with why (the driver logs them). */
  readonly skipped: readonly string[];
}

function refuse(message: string, details: Record<string, unknown>): VirtError {
  return new VirtError(ErrorCode.OPERATION_INVALID, message, details);
}

/** Checks the request and that `pid` runs a QEMU binary; returns the checked request. */
export function checkRequest(request: unknown): AttachRequest & { emulator: string; startTime: bigint } {
  const parsed = requestSchema.safeParse(request);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const field = issue?.path.join('.') ?? '';
    throw new VirtError(ErrorCode.XML_ERROR, `invalid attach ${field || 'request'}: ${issue?.message}`, {
      field,
    });
  }
  const { pid } = parsed.data;
  const startTime = readProcStartTime(pid);
  const exe = readProcExe(pid);
  if (startTime === undefined || exe === undefined) {
    throw refuse(`no process ${pid} that this driver may inspect; pass the pid of a running QEMU`, { pid });
  }
  if (!QEMU_BINARY.test(basename(exe))) {
    throw refuse(`process ${pid} runs ${exe}, which is not a QEMU system emulator (qemu-system-*)`, {
      pid,
      path: exe,
    });
  }
  return { ...parsed.data, emulator: exe, startTime };
}

/**
 * Connects to the monitor and checks that it is `pid`'s: the peer credentials of the connection
 * name the process that created the listening socket, which is QEMU itself for `-qmp
 * unix:PATH,server=on`; a socket someone created for QEMU and passed to it (`fd=N`) is accepted when
 * `pid` holds that very listening socket.
 */
export async function connectMonitor(pid: number, monitor: string): Promise<QmpClient> {
  let fd: number;
  try {
    fd = unixConnect(monitor);
  } catch (err) {
    throw new VirtError(
      ErrorCode.SYSTEM_ERROR,
      `cannot connect to ${monitor}: ${errorMessage(err)}; is it QEMU's QMP socket (-qmp unix:PATH,server=on)?`,
      { path: monitor, pid },
      { cause: err },
    );
  }
  let peer: number;
  try {
    peer = peerCredentials(fd).pid;
  } catch (err) {
    closeFd(fd);
    throw new VirtError(
      ErrorCode.SYSTEM_ERROR,
      `cannot read the peer of ${monitor}`,
      { path: monitor },
      { cause: err },
    );
  }
  if (peer !== pid && !holdsListeningSocket(pid, monitor)) {
    closeFd(fd);
    throw refuse(`${monitor} is not the monitor of QEMU pid ${pid} (its listener is pid ${peer})`, {
      pid,
      path: monitor,
    });
  }
  try {
    return await QmpClient.fromFd(fd, { timeoutMs: CONNECT_TIMEOUT_MS });
  } catch (err) {
    throw new VirtError(
      ErrorCode.OPERATION_INVALID,
      `${monitor} does not serve QMP to this driver (${errorMessage(err)}); QEMU serves one client at a time: is another one connected?`,
      { pid, path: monitor },
      { cause: err },
    );
  }
}

/** True when `pid` has an fd on the listening Unix socket bound at `path` (from /proc/net/unix). */
function holdsListeningSocket(pid: number, path: string): boolean {
  let inodes: Set<string>;
  try {
    const real = realpathSync(path);
    inodes = new Set(
      readFileSync('/proc/net/unix', 'utf8')
        .split('\n')
        .slice(1)
        .map((line) => line.trim().split(/\s+/))
        .filter((f) => f[7] === path || f[7] === real)
        .map((f) => f[6] ?? ''),
    );
  } catch {
    return false;
  }
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      const m = /^socket:\[(\d+)\]$/.exec(safeReadlink(`/proc/${pid}/fd/${fd}`));
      if (m && inodes.has(m[1] as string)) return true;
    }
  } catch {
    return false;
  }
  return false;
}

function safeReadlink(path: string): string {
  try {
    return readlinkSync(path);
  } catch {
    return '';
  }
}

const memorySummary = z.looseObject({ 'base-memory': z.number().int().positive() });

/**
 * Builds the domain from what QEMU answers (`query-name`, `query-uuid`, `query-kvm`,
 * `query-memory-size-summary`, `query-cpus-fast`, and for devices `qom-list`, `query-pci`,
 * `query-block`, `query-named-block-nodes`: see devices/from-qmp.ts), and verifies every vCPU thread
 * id against the process. Only what virtkit can represent and check goes into the definition: name,
 * uuid, domain type, memory, vCPUs, the emulator, virtio disks with a raw or qcow2 image, virtio,
 * e1000, e1000e and rtl8139 NICs on a user or TAP netdev (a TAP as `managed='no'`: it is not virtkit's to remove).
 */
export async function inspect(
  qmp: QmpClient,
  request: AttachRequest & { emulator: string; startTime: bigint },
): Promise<Inspection> {
  const [name, uuid, kvm, memory, cpus] = await Promise.all([
    qmp.command('query-name'),
    qmp.command('query-uuid'),
    qmp.command('query-kvm'),
    qmp.execute('query-memory-size-summary'),
    qmp.command('query-cpus-fast'),
  ]);
  const mem = memorySummary.safeParse(memory);
  if (!mem.success)
    throw new VirtError(
      ErrorCode.OPERATION_FAILED,
      'QEMU answered query-memory-size-summary without base-memory',
    );
  const devices = await readDevices(qmp, qemuCwd(request.pid));
  const domainName = request.name ?? name.name ?? `qemu-${request.pid}`;
  const vcpus = cpus.map((c) => ({ index: c['cpu-index'], tid: c['thread-id'] }));
  verifyThreadCount('vcpu', vcpus, vcpus.length, { first: 0, limit: vcpus.length });
  verifyThreads(
    request,
    vcpus.map((t) => ({ ...t, role: 'vcpu' })),
  );
  let def: DomainDefinition;
  try {
    def = resolveDefinition({
      name: domainName,
      uuid: uuid.UUID === NIL_UUID ? randomUUID() : uuid.UUID,
      type: kvm.enabled ? 'kvm' : 'qemu',
      memoryKiB: Math.ceil(mem.data['base-memory'] / 1024),
      vcpu: { count: vcpus.length },
      emulator: request.emulator,
      disks: devices.disks,
      interfaces: devices.interfaces,
    });
  } catch (err) {
    throw new VirtError(
      ErrorCode.OPERATION_INVALID,
      `QEMU pid ${request.pid} describes a domain virtkit cannot represent (${errorMessage(err)})${request.name ? '' : '; pass a name'}`,
      { pid: request.pid },
      { cause: err },
    );
  }
  return {
    def,
    status: {
      version: 1,
      phase: 'running',
      liveVersion: 1,
      pid: request.pid,
      startTime: request.startTime.toString(),
      emulator: request.emulator,
      monitor: realOrSelf(request.monitor),
      taints: [EXTERNAL_LAUNCH_TAINT],
      threads: { emulator: request.pid, vcpus, iothreads: [] },
      placements: [],
      placementAttempted: false,
      live: def,
    },
    skipped: devices.skipped,
  };
}

function realOrSelf(path: string): string {
  try {
    return statSync(path).isSocket() ? realpathSync(path) : path;
  } catch {
    return path;
  }
}

/** Whether the domain's status file (if any) records a QEMU adopted with attach. */
export function wasAttached(layout: RootLayout, def: DomainDefinition): boolean {
  try {
    return (
      readStatus(domainPaths(layout, def.name, def.uuid).status)?.taints.includes(EXTERNAL_LAUNCH_TAINT) ===
      true
    );
  } catch {
    return false;
  }
}

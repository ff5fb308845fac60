import { accessSync, constants, fstatSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCode, toVirtError, VirtError } from '../../errors.js';
import { verifyThreadCount, verifyThreads } from '../../privileged/threads-verify.js';
import type { DomainDefinition } from '../../stable/definition/schema.js';
import type { DomainStatus } from '../../stable/events.js';
import { parseCpuset } from '../../util/cpuset.js';
import { faultPoint } from '../../util/fault-points.js';
import { closeFd, listenUnixSocket } from '../../util/libc.js';
import { readProcStartTime } from '../../util/proc.js';
import type { Job } from '../jobs.js';
import { placesThreads } from '../thread-tuning.js';
import { buildCommandLine, type CommandLine } from './command-line.js';
import { type DriverContext, deferred, scopeOf, within } from './context.js';
import { memoryBackingDir } from './devices/memory-backend.js';
import { listeningSockets } from './devices/serial.js';
import type { DomainObject, Runtime } from './domain-object.js';
import { emulatorOf, reapEmulator } from './emulator-kill.js';
import { ensureNvram, resolveFirmware } from './firmware.js';
import { finalizeExit, watchMonitor } from './lifecycle.js';
import { logTail } from './log.js';
import {
  configureThreads,
  openPreExecDescriptors,
  type PreExecDescriptors,
  raiseMemLock,
  releaseThreads,
} from './privileged/phases.js';
import { execSlot, FIRST_CHILD_FD, type Launch, launchStub } from './process.js';
import { QmpClient } from './qmp/client.js';
import { type DomainPaths, domainPaths } from './root.js';
import { runtimeStatus } from './runtime-status.js';
import { type RawStatusRecord, type ThreadIds, writeStatus } from './status.js';
import { removeIfPresent } from './store.js';

/** The emulator used when a definition names none. */
export const DEFAULT_EMULATOR = '/usr/bin/qemu-system-x86_64';

const MONITOR_TIMEOUT_MS = 30_000;

/** An incoming live migration: QEMU starts waiting for the migration stream instead of booting. */
export interface IncomingMigration {
  /** QEMU's `-incoming` argument; `defer` (the default) waits for `migrate-incoming`. */
  readonly uri?: string;
}

/** How to start: the public options plus the variants other jobs build on. */
export interface StartSequenceOptions {
  /** Leave the vCPUs paused after start-up. */
  readonly paused?: boolean;
  /**
   * Start as the destination of a live migration (libvirt's `qemuProcessStart` with an incoming
   * URI): `-incoming`, privileged operations in phase `migration-in` instead of `startup`
   * (memlock too), vCPUs left paused (reason `migration`) for the migration to resume.
   */
  readonly incoming?: IncomingMigration;
}

/** Everything the start-up acquires, so a failure at any step can give back exactly that. */
interface Startup {
  readonly ctx: DriverContext;
  readonly dom: DomainObject;
  readonly def: DomainDefinition;
  readonly job: Job;
  readonly options: StartSequenceOptions;
  readonly paths: DomainPaths;
  readonly emulator: string;
  cmd?: CommandLine;
  logOffset: number;
  /** Descriptors the driver holds for the child until it has spawned; each closed exactly once. */
  logFd?: number;
  monitorFd?: number;
  preExec?: PreExecDescriptors;
  /** Taints gathered before the runtime exists (a handler used in `pre-exec`). */
  readonly taints: string[];
  launch?: Launch;
  run?: Runtime;
}

/** One named step of the start sequence; `fault` is its fault point, reached when it is done. */
interface StartStep {
  readonly name: string;
  readonly fault?: string;
  run(s: Startup): void | Promise<void>;
}

/**
 * The start sequence, in order (libvirt's qemuProcessStart → qemuProcessLaunch). Each step is
 * the job's phase while it runs (`getJobInfo()`); the job's signal reaches every wait in it.
 *
 *  1. openDescriptors    disk images and TAP devices (`storage.openFile`, `net.openTap`)   (pre-exec)
 *  2. buildCommandLine   definition -> argv (pure; rejects what cannot be honoured)
 *  3. openLog            the domain log, which receives QEMU's stderr
 *  4. listenMonitor      the QMP socket, created here and inherited, so no one polls for it
 *  5. spawnStub          the process exists with its final pid; QEMU has not run
 *  6. recordStarting     a status file, so a crash of this process never orphans the stub
 *  7. raiseMemLock       `process.setMaxMemLock` on the stub, when needed   (pre-exec | migration-in)
 *  8. execQemu           the go-ahead; QEMU execs in place and greets on QMP
 *  9. readThreads        vCPU and iothread ids from QMP; every vCPU is still paused
 *                        (and the balloon target, when currentMemory is below memory)
 * 10. configureThreads   `cgroup.placeThreads`, `thread.setScheduler`       (startup | migration-in)
 * 11. recordRunning      the status file a new driver adopts the domain from
 * 12. resumeVcpus        `cont`, unless the caller asked for a paused start or a migration comes in
 */
export const START_STEPS: readonly StartStep[] = [
  { name: 'openDescriptors', fault: 'start:descriptors', run: openDescriptors },
  { name: 'buildCommandLine', run: buildCommand },
  { name: 'openLog', run: openLog },
  { name: 'listenMonitor', fault: 'start:monitor', run: listenMonitor },
  { name: 'spawnStub', fault: 'start:spawned', run: spawnStub },
  { name: 'recordStarting', fault: 'start:recorded-starting', run: recordStarting },
  { name: 'raiseMemLock', run: raiseMemLockStep },
  { name: 'execQemu', fault: 'start:monitor-connected', run: execQemu },
  { name: 'readThreads', fault: 'start:threads', run: readThreadsStep },
  { name: 'configureThreads', fault: 'start:configured', run: configureThreadsStep },
  { name: 'recordRunning', fault: 'start:recorded-running', run: recordRunning },
  { name: 'resumeVcpus', run: resumeVcpus },
];

/**
 * Starts a domain as the job `job` (a `start`, or a `migration-in` for an incoming migration):
 * checks the host, then runs {@link START_STEPS}. A failure or an abort at any step rolls back
 * everything acquired so far: QEMU killed, `cgroup.release` run (release), and no process,
 * socket, status file or descriptor left behind.
 */
export async function startDomain(
  ctx: DriverContext,
  dom: DomainObject,
  job: Job,
  options: StartSequenceOptions,
): Promise<void> {
  if (dom.run)
    throw new VirtError(ErrorCode.OPERATION_INVALID, `domain '${dom.def.name}' is already running`);
  ctx.handlers.seal(`domain '${dom.def.name}' was started`);
  const def = dom.def;
  const paths = domainPaths(ctx.layout, def.name, def.uuid);
  const emulator = checkEmulator(def.emulator ?? DEFAULT_EMULATOR);
  checkAccelerator(def.type);
  const s: Startup = { ctx, dom, def, job, options, paths, emulator, logOffset: 0, taints: [] };
  try {
    for (const [index, step] of START_STEPS.entries()) {
      job.setPhase(step.name, { completed: index, total: START_STEPS.length, unit: 'steps' });
      faultPoint(`start:step:${step.name}`);
      await step.run(s);
      if (step.fault) faultPoint(step.fault);
    }
    const run = s.run as Runtime;
    // A paused start may issue no QMP call after the last handler: a QEMU that died meanwhile is
    // only visible here. Checked and marked started in one synchronous step, so the exit watcher
    // either saw `started` or left the clean-up to this sequence.
    if (run.exitInfo)
      throw new VirtError(ErrorCode.OPERATION_FAILED, 'QEMU exited during start-up', { pid: run.pid });
    job.checkAborted();
    run.started = true;
    // Later jobs bring their own signals; the start's must not reach the domain's later handlers.
    run.cancel = new AbortController();
  } catch (err) {
    await rollback(ctx, dom, s);
    throw toVirtError(job.failure(err), ErrorCode.OPERATION_FAILED, `cannot start domain '${def.name}'`, {
      domain: { name: def.name, uuid: def.uuid },
    });
  }
  if (options.incoming) {
    // No event yet: the migration emits `started migrated` when it finishes (or rolls back).
    ctx.setState(dom, startedStatus(options));
    ctx.log(
      dom,
      `started pid ${s.run?.pid} for an incoming migration (-incoming ${options.incoming.uri ?? 'defer'})`,
    );
    return;
  }
  ctx.log(dom, `started pid ${s.run?.pid}${options.paused ? ' (paused)' : ''}`);
  // As libvirt: `started booted`, then for a paused start `suspended user` (VIR_DOMAIN_PAUSED_USER).
  if (options.paused) ctx.setState(dom, startedStatus(options), ['started', 'booted'], 'suspended');
  else ctx.setState(dom, startedStatus(options), 'started');
}

/** The state a finished start leaves the domain in (libvirt's qemuProcessFinishStartup). */
function startedStatus(options: StartSequenceOptions): DomainStatus {
  if (options.incoming) return { state: 'paused', reason: 'migration' };
  return options.paused ? { state: 'paused', reason: 'user' } : { state: 'running', reason: 'booted' };
}

/** The phase of the privileged operations that run once QEMU exists. */
function threadPhase(s: Startup): 'startup' | 'migration-in' {
  return s.options.incoming ? 'migration-in' : 'startup';
}

async function openDescriptors(s: Startup): Promise<void> {
  s.preExec = await openPreExecDescriptors(
    { ...scopeOf(s.ctx, s.dom, undefined, s.taints), signal: s.job.signal },
    s.def,
  );
}

function buildCommand(s: Startup): void {
  const firmware = resolveFirmware(s.def, join(s.ctx.layout.lib, 'nvram'));
  // File-backed guest memory: QEMU creates its file here and unlinks it at once.
  mkdirSync(memoryBackingDir(s.ctx.layout.lib), { recursive: true, mode: 0o700 });
  ensureNvram(firmware);
  const cmd = buildCommandLine(s.def, {
    firmware,
    runDir: s.ctx.layout.run,
    monitorFd: FIRST_CHILD_FD,
    consolePath: s.paths.console,
    homeDir: s.ctx.layout.lib,
    ...(s.def.memoryBacking?.hugepages ? hugetlbfsMounts() : {}),
    ...(s.def.numatune ? { hostNumaNodes: hostNumaNodes() } : {}),
    ...childFdNumbers(s.preExec ?? { disks: [], taps: [], all: [] }),
  });
  s.cmd = s.options.incoming
    ? { ...cmd, argv: [...cmd.argv, '-incoming', s.options.incoming.uri ?? 'defer'] }
    : cmd;
}

/** The host's online NUMA nodes (sysfs; a kernel without NUMA has node 0 only). */
function hostNumaNodes(): number[] {
  try {
    return parseCpuset(readFileSync('/sys/devices/system/node/online', 'utf8').trim()) ?? [0];
  } catch {
    return [0];
  }
}

/** The numbers the child sees the pre-exec descriptors at: right after the monitor socket. */
function childFdNumbers(fds: PreExecDescriptors): {
  diskFds: Array<number | undefined>;
  backingFds: Array<number | undefined>;
  tapFds: Array<number[] | undefined>;
} {
  let next = FIRST_CHILD_FD + 1;
  const diskFds = fds.disks.map((fd) => (fd === undefined ? undefined : next++));
  // The order of `fds.all`: disks, their backing images, then TAPs.
  const backingFds = (fds.backings ?? []).map((fd) => (fd === undefined ? undefined : next++));
  const tapFds = fds.taps.map((list) => list?.map(() => next++));
  return { diskFds, backingFds, tapFds };
}

/** The first hugetlbfs mount, from /proc/mounts. */
/**
 * The host's hugetlbfs mounts by page size in KiB (a mount without `pagesize=` has the default
 * size) and that default, from /proc/mounts and /proc/meminfo.
 */
function hugetlbfsMounts(): { hugepageMounts: Record<number, string>; defaultHugepageKiB?: number } {
  const meminfo = /^Hugepagesize:\s+(\d+) kB$/m.exec(readFileSync('/proc/meminfo', 'utf8'));
  const defaultKiB = meminfo ? Number(meminfo[1]) : undefined;
  const mounts: Record<number, string> = {};
  for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
    const [, dir, type, options] = line.split(' ');
    if (type !== 'hugetlbfs' || dir === undefined) continue;
    const size = /(?:^|,)pagesize=(\d+)([KMG])/.exec(options ?? '');
    const kib = size
      ? Number(size[1]) * { K: 1, M: 1024, G: 1024 * 1024 }[size[2] as 'K' | 'M' | 'G']
      : defaultKiB;
    // Octal escapes of /proc/mounts (a space is \040).
    const path = dir.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
    if (kib !== undefined && mounts[kib] === undefined) mounts[kib] = path;
  }
  return { hugepageMounts: mounts, ...(defaultKiB !== undefined ? { defaultHugepageKiB: defaultKiB } : {}) };
}

function checkEmulator(path: string): string {
  try {
    accessSync(path, constants.X_OK);
    return path;
  } catch {
    throw new VirtError(
      ErrorCode.NO_SUPPORT,
      `the emulator ${path} is missing or not executable: install qemu-system-x86 or set <emulator>`,
      { path },
    );
  }
}

/**
 * A `kvm` domain on a host without `/dev/kvm` would only fail inside QEMU, after descriptors were
 * opened and handlers run; libvirt refuses it up front for the same reason.
 */
function checkAccelerator(type: 'kvm' | 'qemu'): void {
  if (type !== 'kvm') return;
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    throw new VirtError(
      ErrorCode.CONFIG_UNSUPPORTED,
      "KVM is not available on this host (/dev/kvm is missing or not accessible): use <domain type='qemu'> (TCG) or enable KVM",
      { field: 'type' },
    );
  }
}

function openLog(s: Startup): void {
  const { ctx, dom } = s;
  s.logFd = openSync(s.paths.log, 'a', 0o600);
  s.logOffset = fstatSync(s.logFd).size;
  ctx.log(dom, `starting: ${s.emulator} ${(s.cmd as CommandLine).argv.join(' ')}`);
}

function listenMonitor(s: Startup): void {
  removeIfPresent(s.paths.monitor);
  s.monitorFd = listenUnixSocket(s.paths.monitor);
}

function spawnStub(s: Startup): void {
  const { ctx, dom } = s;
  const cmd = s.cmd as CommandLine;
  const inherited = [s.monitorFd as number, ...(s.preExec?.all ?? [])];
  const launch = launchStub(s.emulator, cmd.argv, cmd.env, s.logFd as number, inherited);
  s.launch = launch;
  // The child holds its own copies now; ours would only keep the socket alive after QEMU exits.
  closeParentFds(s);
  const startTime = readProcStartTime(launch.pid);
  if (startTime === undefined)
    throw new VirtError(ErrorCode.OPERATION_FAILED, 'the QEMU stub exited at once');
  const finalized = deferred<void>();
  const run: Runtime = {
    id: ctx.allocateId(),
    pid: launch.pid,
    startTime,
    emulator: s.emulator,
    paths: s.paths,
    live: cmd.live,
    liveVersion: 1,
    taints: [...cmd.taints, ...s.taints],
    placements: [],
    placementAttempted: false,
    cancel: s.job.controller,
    forgetExit: launch.forget,
    exited: launch.exited,
    finalized: finalized.promise,
    started: false,
    sawShutdown: false,
    detached: false,
    statusJob: s.job,
    statusWrites: 0,
    statusStale: false,
  };
  s.run = run;
  dom.run = run;
  // Active from here, its vCPUs not yet run: libvirt's paused/starting-up (qemuProcessInit), no event.
  ctx.setState(dom, { state: 'paused', reason: 'starting-up' });
  // Until start-up completes the start sequence owns clean-up; afterwards the exit finalizes.
  void launch.exited.then(async (info) => {
    run.exitInfo = info;
    if (run.started) await finalizeExit(ctx, dom, run, info);
    finalized.resolve();
  });
}

function status(s: Startup, phase: 'starting' | 'running'): RawStatusRecord {
  return runtimeStatus(s.run as Runtime, phase, s.dom.status);
}

/**
 * Visible to a successor if this process is killed; not fsync'd (see {@link writeStatus}). A domain
 * whose threads will be placed is recorded as placed-or-being-placed from here on, so that
 * configureThreads needs no record of its own before it places them: a successor that finds the
 * record releases the domain's cgroups (`cgroup.release` with the placements known, none yet),
 * which for a domain never placed finds nothing to remove.
 */
async function recordStarting(s: Startup): Promise<void> {
  const record = status(s, 'starting');
  await writeStatus(
    s.paths.status,
    placesThreads(s.def) ? { ...record, placementAttempted: true } : record,
    false,
  );
}

async function raiseMemLockStep(s: Startup): Promise<void> {
  const run = s.run as Runtime;
  const phase = s.options.incoming ? 'migration-in' : 'pre-exec';
  await raiseMemLock(scopeOf(s.ctx, s.dom, run), s.def, run.pid, phase);
}

async function execQemu(s: Startup): Promise<void> {
  const run = s.run as Runtime;
  run.qmp = await connectMonitor(s);
  watchMonitor(s.ctx, s.dom, run);
}

async function connectMonitor(s: Startup): Promise<QmpClient> {
  const launch = s.launch as Launch;
  const release = await execSlot(launch.exited);
  try {
    return await greet(s, launch);
  } finally {
    release();
  }
}

async function greet(s: Startup, launch: Launch): Promise<QmpClient> {
  const abort = new AbortController();
  const onJobAbort = () => abort.abort(s.job.signal.reason);
  s.job.signal.addEventListener('abort', onJobAbort, { once: true });
  // Connect before the go-ahead: the connection waits in the socket's backlog, and the greeting
  // arrives the moment QEMU's main loop runs.
  const monitor = QmpClient.connect(s.paths.monitor, {
    timeoutMs: MONITOR_TIMEOUT_MS,
    signal: abort.signal,
    domain: { name: s.def.name, uuid: s.def.uuid },
  });
  launch.proceed();
  // Settled once the greeting is in (or failed): an exit after that is the exit watcher's alone,
  // and must not cost every domain that stops an abort, a read of its log and an error object.
  let greeted = false;
  const died = launch.exited.then((info) => {
    if (greeted) return undefined;
    abort.abort();
    const why = info.signal ? `signal ${info.signal}` : `code ${info.code}`;
    const tail = logTail(s.paths.log, s.logOffset);
    return new VirtError(
      ErrorCode.OPERATION_FAILED,
      `QEMU exited during start-up (${why})${tail ? `: ${tail}` : ''}; see ${s.paths.log}`,
      { pid: launch.pid },
    );
  });
  try {
    const first = await Promise.race([monitor, died]);
    if (first instanceof VirtError) throw first;
    if (first === undefined) throw new VirtError(ErrorCode.OPERATION_FAILED, 'QEMU exited during start-up');
    greeted = true;
    return first;
  } catch (err) {
    monitor.then((q) => q.close()).catch(() => undefined);
    // A monitor that fails usually means QEMU died: wait briefly for the exit, whose error
    // carries QEMU's own words from the log, rather than report a bare connection reset.
    if (s.job.aborted) throw err;
    const exit = await within(died, 2_000);
    throw exit === 'timeout' || exit === undefined ? err : exit;
  } finally {
    greeted = true;
    s.job.signal.removeEventListener('abort', onJobAbort);
  }
}

async function readThreadsStep(s: Startup): Promise<void> {
  const run = s.run as Runtime;
  const qmp = run.qmp as QmpClient;
  run.threads = await readThreads(qmp, s.def, run, s.job.signal);
  // An incoming guest brings its balloon target with its device state.
  if (
    !s.options.incoming &&
    s.def.currentMemoryKiB !== undefined &&
    s.def.currentMemoryKiB < s.def.memoryKiB
  ) {
    await qmp.command('balloon', { value: s.def.currentMemoryKiB * 1024 }, { signal: s.job.signal });
  }
}

async function configureThreadsStep(s: Startup): Promise<void> {
  const run = s.run as Runtime;
  await configureThreads(
    scopeOf(s.ctx, s.dom, run),
    s.def,
    run.pid,
    run.threads as ThreadIds,
    run,
    // The attempt is on record since recordStarting: only the placements are written.
    async (stage) => {
      if (stage === 'placed') await writeStatus(s.paths.status, status(s, 'starting'), false);
    },
    threadPhase(s),
  );
}

async function resumeVcpus(s: Startup): Promise<void> {
  if (s.options.paused || s.options.incoming) return;
  await ((s.run as Runtime).qmp as QmpClient).command('cont', undefined, { signal: s.job.signal });
}

/**
 * vCPU and iothread ids from QMP, checked before anything is stored or used: the counts and
 * indices must match the definition, and every tid must be a thread of this very QEMU process.
 */
async function readThreads(
  qmp: QmpClient,
  def: DomainDefinition,
  run: Runtime,
  signal: AbortSignal,
): Promise<ThreadIds> {
  const [cpus, threads] = await Promise.all([
    qmp.command('query-cpus-fast', undefined, { signal }),
    def.iothreads > 0 ? qmp.command('query-iothreads', undefined, { signal }) : [],
  ]);
  if (!Array.isArray(cpus) || !Array.isArray(threads))
    throw new VirtError(
      ErrorCode.OPERATION_FAILED,
      'QEMU answered query-cpus-fast/query-iothreads with a non-list',
    );
  const vcpus = cpus.map((c) => ({ index: c?.['cpu-index'], tid: c?.['thread-id'] }));
  const iothreads = threads.map((t) => ({
    index: typeof t?.id === 'string' && /^iothread\d+$/.test(t.id) ? Number(t.id.slice(8)) : Number.NaN,
    tid: t?.['thread-id'],
  }));
  verifyThreadCount('vcpu', vcpus, def.vcpu.current ?? def.vcpu.count, { first: 0, limit: def.vcpu.count });
  verifyThreadCount('iothread', iothreads, def.iothreads, { first: 1, limit: def.iothreads });
  verifyThreads(run, [
    ...vcpus.map((t) => ({ ...t, role: 'vcpu' })),
    ...iothreads.map((t) => ({ ...t, role: 'iothread' })),
  ]);
  return { emulator: run.pid, vcpus, iothreads };
}

/** Durable (fsync'd) before `cont` lets any guest code run. */
async function recordRunning(s: Startup): Promise<void> {
  await readPtyPaths(s);
  const run = s.run as Runtime;
  // Written without the job: from here a successor adopts the domain as QEMU reports it, which is
  // the rule for an interrupted start that got this far (docs/jobs.md) and needs no record. The
  // state is the one the start commits to, so the end of the start need not write it again.
  run.statusJob = undefined;
  run.statusState = startedStatus(s.options);
  await writeStatus(s.paths.status, runtimeStatus(run, 'running', run.statusState), true, {
    replacesVolatile: true,
  });
}

/**
 * The ptys QEMU allocated for `pty` serial ports and virtio consoles, into the live definition (libvirt's `<source
 * path>`), before the status file records it. Only paths under /dev/pts are taken: QEMU is not
 * trusted to name a file the console command would open.
 */
async function readPtyPaths(s: Startup): Promise<void> {
  const run = s.run as Runtime;
  const consoles = run.live.consoles ?? [];
  if (!run.live.serials.some((serial) => serial.type === 'pty') && consoles.length === 0) return;
  const chardevs = await (run.qmp as QmpClient).command('query-chardev', undefined, { signal: s.job.signal });
  const ptyOf = (label: string, what: string): string => {
    const filename = chardevs.find((c) => c.label === label)?.filename ?? '';
    const path = filename.startsWith('pty:') ? filename.slice(4) : '';
    if (!/^\/dev\/pts\/[0-9]{1,9}$/.test(path)) {
      throw new VirtError(
        ErrorCode.OPERATION_FAILED,
        `QEMU reported no pty for ${what} (${JSON.stringify(filename)})`,
      );
    }
    return path;
  };
  const serials = run.live.serials.map((serial, i) =>
    serial.type === 'pty' ? { type: 'pty' as const, path: ptyOf(`charserial${i}`, `serial ${i}`) } : serial,
  );
  run.live = { ...run.live, serials };
  if (consoles.length > 0) {
    run.live.consoles = consoles.map((c, i) => ({ ...c, path: ptyOf(`charconsole${i}`, `console ${i}`) }));
  }
}

function closeParentFds(s: Startup): void {
  const fds = [s.logFd, s.monitorFd, ...(s.preExec?.all ?? [])];
  s.logFd = s.monitorFd = s.preExec = undefined;
  for (const fd of fds) {
    if (fd === undefined) continue;
    try {
      closeFd(fd);
    } catch {
      // already closed
    }
  }
}

const KILL_WAIT_MS = 10_000;

async function rollback(ctx: DriverContext, dom: DomainObject, s: Startup): Promise<void> {
  closeParentFds(s);
  const { launch, run } = s;
  run?.qmp?.close();
  if (launch) {
    launch.abandon();
    try {
      process.kill(launch.pid, 'SIGKILL');
    } catch {
      // already gone
    }
    await within(launch.exited, KILL_WAIT_MS);
    // The emulator's process group (and cgroup): an emulator that forked leaves nothing behind.
    if (run) {
      const survivors = await reapEmulator(emulatorOf(ctx, dom, run), KILL_WAIT_MS);
      if (survivors.length > 0) ctx.log(dom, `rollback: processes ${survivors.join(', ')} survive SIGKILL`);
    }
  }
  if (run) await releaseThreads(scopeOf(ctx, dom, run), run, 'release');
  removeIfPresent(s.paths.monitor);
  removeIfPresent(s.paths.status);
  // Only after a spawn: before it, a socket there is someone else's.
  if (launch) for (const path of listeningSockets(s.def, s.ctx.layout.run)) removeIfPresent(path);
  if (dom.run === run) dom.run = undefined;
  if (launch) ctx.log(dom, 'start failed; QEMU killed and its socket and status removed');
  // `stopped failed` only when a QEMU existed: a start refused before the spawn never started.
  ctx.setState(dom, { state: 'shutoff', reason: 'failed' }, ...(launch ? (['stopped'] as const) : []));
}

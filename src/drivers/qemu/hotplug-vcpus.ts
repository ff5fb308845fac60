import { ErrorCode, VirtError } from '../../errors.js';
import { verifyThreadCount, verifyThreads } from '../../privileged/threads-verify.js';
import type { DomainDefinition } from '../../stable/definition/schema.js';
import type { DeviceChangeOptions } from '../../stable/devices.js';
import { checkVcpuCount, tcgReplugRefused, tcgUnplugRefused, withVcpus } from '../device-change.js';
import { type DriverContext, scopeOf } from './context.js';
import type { DomainObject, Runtime } from './domain-object.js';
import { affectOf, monitor } from './hotplug.js';
import { setLive } from './live-definition.js';
import { configureHotplugVcpu, releaseVcpuThreads } from './privileged/phases.js';
import type { QmpClient } from './qmp/client.js';
import type { QmpHotpluggableCpu } from './qmp/commands.js';
import { domainPaths } from './root.js';
import { saveStatus } from './runtime-status.js';
import type { ThreadIds } from './status.js';
import { saveDefinition } from './store.js';

/*
 * vCPU hotplug, libvirt's qemuDomainSetVcpusLive: QEMU runs with `-smp current,maxcpus=max`, and
 * each vCPU added is a `device_add` of the CPU type and topology slot `query-hotpluggable-cpus`
 * offers. Its thread id comes from `query-cpus-fast`, i.e. from QEMU, and is verified to be a
 * thread of the QEMU pid before the placement and scheduling handlers see it (phase `hotplug`); a
 * failing step removes the vCPU again. The guest onlines a CPU only after that, so no guest code
 * runs on a vCPU thread outside its cgroup or policy.
 */

const UNPLUG_TIMEOUT_MS = 10_000;
/**
 * How long the rollback of a failed vCPU hotplug waits for the guest to let the vCPU go: longer than
 * an unplug asked for, since leaving the VM as it was is the promise, and a guest on a loaded host
 * may take more than 10 s to run its ACPI eject.
 */
const ROLLBACK_UNPLUG_TIMEOUT_MS = 60_000;

/**
 * The slots `query-hotpluggable-cpus` listed, asked once per QEMU: its CPU types and topology
 * properties do not change while it runs, and which slots hold a vCPU the driver knows itself
 * (`run.threads`, from `query-cpus-fast` after every change), so a later hotplug need not ask again.
 */
const cpuSlots = new WeakMap<Runtime, readonly QmpHotpluggableCpu[]>();

async function slotsOf(run: Runtime, qmp: QmpClient): Promise<readonly QmpHotpluggableCpu[]> {
  const known = cpuSlots.get(run);
  if (known) return known;
  const slots = await qmp.command('query-hotpluggable-cpus');
  cpuSlots.set(run, slots);
  return slots;
}

/** The vCPU index QEMU gives a topology slot: x86's cpu-index order is socket, die, core, thread. */
function slotIndex(def: DomainDefinition, slot: QmpHotpluggableCpu): number {
  const topo = def.cpu?.topology ?? { sockets: def.vcpu.count, dies: 1, cores: 1, threads: 1 };
  const p = slot.props;
  return (
    (((p['socket-id'] ?? 0) * topo.dies + (p['die-id'] ?? 0)) * topo.cores + (p['core-id'] ?? 0)) *
      topo.threads +
    (p['thread-id'] ?? 0)
  );
}

/** The vCPUs QEMU reports, checked against the definition's maximum and the expected count. */
async function reportedVcpus(
  qmp: QmpClient,
  def: DomainDefinition,
  expected: number,
): Promise<Array<{ index: number; tid: number; qomPath: string }>> {
  const cpus = await qmp.command('query-cpus-fast');
  const vcpus = cpus.map((c) => ({ index: c['cpu-index'], tid: c['thread-id'], qomPath: c['qom-path'] }));
  verifyThreadCount('vcpu', vcpus, expected, { first: 0, limit: def.vcpu.count });
  return vcpus;
}

/** Sets the number of online vCPUs of the running domain and/or its persistent definition. */
export async function setVcpus(
  ctx: DriverContext,
  dom: DomainObject,
  count: number,
  options: DeviceChangeOptions,
): Promise<void> {
  const { live, config } = affectOf(dom, options);
  if (config) checkVcpuCount(dom.def, count, 'persistent');
  const run = dom.run;
  if (live && run) {
    checkVcpuCount(run.live, count, 'running');
    let current = run.live.vcpu.current ?? run.live.vcpu.count;
    while (current < count) {
      // The last vCPU of a live-only change ends the job: its record says so (setLive's endsJob).
      await plugVcpu(ctx, dom, run, current, !config && current + 1 === count);
      current++;
    }
    if (current > count && run.live.type === 'qemu') throw tcgUnplugRefused(dom.def.name, current, count);
    while (current > count) {
      await unplugVcpu(ctx, dom, run, current, !config && current - 1 === count);
      current--;
    }
  }
  if (config) {
    const next = withVcpus(dom.def, count);
    await saveDefinition(domainPaths(ctx.layout, next.name, next.uuid).definition, next);
    dom.def = next;
    ctx.log(dom, `vCPUs set to ${count} (config)`);
  }
}

function threadsOf(run: Runtime): ThreadIds {
  if (!run.threads) {
    throw new VirtError(
      ErrorCode.OPERATION_FAILED,
      'the driver has no record of the vCPU threads of this domain; destroy and start it again',
    );
  }
  return run.threads;
}

/** Adds one vCPU to a domain running `current` of them. */
async function plugVcpu(
  ctx: DriverContext,
  dom: DomainObject,
  run: Runtime,
  current: number,
  endsJob: boolean,
): Promise<void> {
  if (run.vcpuUnplugged) throw tcgReplugRefused(dom.def.name);
  const qmp = monitor(run);
  const threads = threadsOf(run);
  const slots = await slotsOf(run, qmp);
  // A slot is free when no vCPU the driver knows has its index (`qom-path` is as of the first query).
  const free = slots
    .filter((s) => s['vcpus-count'] === 1)
    .map((slot) => ({ slot, index: slotIndex(run.live, slot) }))
    .filter((s) => s.index < run.live.vcpu.count && !threads.vcpus.some((v) => v.index === s.index))
    .sort((a, b) => a.index - b.index)[0];
  if (!free) {
    throw new VirtError(
      ErrorCode.CONFIG_UNSUPPORTED,
      `QEMU offers no free vCPU slot for domain '${dom.def.name}' (${current} of ${run.live.vcpu.count} online); the machine type may not support vCPU hotplug`,
      { current, maximum: run.live.vcpu.count },
    );
  }
  const alias = `vcpu${free.index}`;
  await qmp.command('device_add', { driver: free.slot.type, id: alias, ...free.slot.props });
  // The new thread, once verified: a rollback gives back what was placed for it.
  let tid: number | undefined;
  try {
    const vcpus = await reportedVcpus(qmp, run.live, current + 1);
    const added = vcpus.find((v) => v.index === free.index);
    const kept = threads.vcpus.every((k) => vcpus.some((v) => v.index === k.index && v.tid === k.tid));
    if (!added || !kept) {
      throw new VirtError(
        ErrorCode.OPERATION_FAILED,
        `after adding vCPU ${free.index} QEMU reported vCPUs that do not match the earlier ones; the emulator is misbehaving, so the driver refuses to act on its thread ids`,
        { index: free.index },
      );
    }
    const vcpu = { index: added.index, tid: added.tid };
    verifyThreads(run, [{ ...vcpu, role: 'vcpu' }]);
    tid = vcpu.tid;
    await configureHotplugVcpu(scopeOf(ctx, dom, run), run.live, run.pid, vcpu, run);
    run.threads = { ...threads, vcpus: [...threads.vcpus, vcpu].sort((a, b) => a.index - b.index) };
    await setLive(dom, run, withVcpus(run.live, current + 1), { endsJob });
  } catch (err) {
    run.threads = threads;
    try {
      await removeVcpu(ctx, dom, run, qmp, alias, `/machine/peripheral/${alias}`, ROLLBACK_UNPLUG_TIMEOUT_MS);
      // What was placed for its thread goes back, and the record says so.
      if (tid !== undefined) await releaseVcpuThreads(scopeOf(ctx, dom, run), run, [tid]);
      saveStatus(dom, run);
    } catch (undoErr) {
      ctx.log(dom, `hotplug rollback of ${alias} failed: ${String(undoErr)}`);
    }
    throw err;
  }
  ctx.log(dom, `vCPU ${free.index} added (live)`);
}

/**
 * `device_del` of a vCPU and the wait for the guest to let it go. Completion is read from
 * `query-cpus-fast` (the vCPU gone): QEMU 7.2 reports DEVICE_DELETED for the vCPU's lapic child
 * but not always for the vCPU itself.
 */
async function removeVcpu(
  ctx: DriverContext,
  dom: DomainObject,
  run: Runtime,
  qmp: QmpClient,
  id: string,
  qomPath: string,
  timeoutMs = UNPLUG_TIMEOUT_MS,
): Promise<void> {
  if (dom.def.type === 'qemu') run.vcpuUnplugged = true;
  await qmp.command('device_del', { id });
  const until = Date.now() + timeoutMs;
  for (;;) {
    const cpus = await qmp.command('query-cpus-fast');
    if (!cpus.some((c) => c['qom-path'] === qomPath)) return;
    if (Date.now() >= until) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  ctx.log(dom, `the guest did not release vCPU ${qomPath} within ${timeoutMs} ms`);
  throw new VirtError(
    ErrorCode.OPERATION_TIMEOUT,
    `the guest did not release vCPU ${qomPath} within ${timeoutMs} ms; it is still online`,
    { qomPath, timeoutMs },
  );
}

/** Removes the highest-numbered vCPU of a domain running `current` of them (never vCPU 0). */
async function unplugVcpu(
  ctx: DriverContext,
  dom: DomainObject,
  run: Runtime,
  current: number,
  endsJob: boolean,
): Promise<void> {
  const qmp = monitor(run);
  const threads = threadsOf(run);
  const vcpus = await reportedVcpus(qmp, run.live, current);
  const last = vcpus.filter((v) => v.index !== 0).sort((a, b) => b.index - a.index)[0];
  if (!last) {
    throw new VirtError(ErrorCode.OPERATION_INVALID, 'vCPU 0 cannot be unplugged', { path: 'count' });
  }
  // A vCPU hot-plugged by virtkit has its alias as id; one QEMU made at start is named by QOM path.
  const id = last.qomPath.startsWith('/machine/peripheral/') ? last.qomPath.slice(20) : last.qomPath;
  await removeVcpu(ctx, dom, run, qmp, id, last.qomPath);
  run.threads = { ...threads, vcpus: threads.vcpus.filter((v) => v.index !== last.index) };
  // What was placed for its thread goes back (setLive records the rest). The tid is the one the
  // driver recorded for that vCPU, never the one QEMU just reported.
  const known = threads.vcpus.find((v) => v.index === last.index)?.tid;
  if (known !== undefined) await releaseVcpuThreads(scopeOf(ctx, dom, run), run, [known]);
  await setLive(dom, run, withVcpus(run.live, current - 1), { endsJob });
  ctx.log(dom, `vCPU ${last.index} removed (live)`);
}

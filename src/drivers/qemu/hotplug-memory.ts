import { ErrorCode, VirtError } from '../../errors.js';
import type { DomainDefinition } from '../../stable/definition/schema.js';
import { resolveDefinition } from '../../stable/definition/validate.js';
import type { DetachDeviceOptions, DeviceChangeOptions, DeviceMatch } from '../../stable/devices.js';
import { type DriverContext, scopeOf } from './context.js';
import { assignDevices } from './devices/assign.js';
import { type Dimm, dimmBackend, dimmBackendId, dimmDevice } from './devices/memory.js';
import type { DomainObject, Runtime } from './domain-object.js';
import { affect, monitor } from './hotplug.js';
import { setLive } from './live-definition.js';
import { raiseMemLock } from './privileged/phases.js';
import { domainPaths } from './root.js';
import { saveDefinition } from './store.js';

/*
 * Memory hotplug, libvirt's qemuDomainAttachMemory: a pc-dimm in a free slot of `<maxMemory>`,
 * backed by a RAM backend object. The memlock need is recomputed for the definition with the DIMM
 * and, when the QEMU process's current limit does not cover it, raised through
 * `process.setMaxMemLock` in phase `hotplug` before the backend exists (a QEMU that locks its
 * memory could not map it otherwise). Any failure deletes what was added, so the VM is unchanged.
 */

const DEFAULT_DETACH_TIMEOUT_MS = 10_000;

/** True when a detach names a memory device (by its element, or by the alias of a DIMM the domain has). */
export function isMemoryMatch(dom: DomainObject, match: DeviceMatch): boolean {
  if ('device' in match) return 'memory' in match.device;
  const has = (def: DomainDefinition | undefined) => def?.memoryDevices?.some((d) => d.alias === match.alias);
  return has(dom.run?.live) || has(dom.def) || false;
}

/** The definition with the DIMM added (and counted in the memory), or a typed refusal. */
function withDimm(def: DomainDefinition, dimm: Dimm, live: boolean): { def: DomainDefinition; dimm: Dimm } {
  const max = def.maxMemory;
  if (!max) {
    throw new VirtError(
      ErrorCode.CONFIG_UNSUPPORTED,
      `domain '${def.name}' has no <maxMemory slots='N'>: memory can only be hot-plugged into a hot-pluggable range; add one to the persistent definition and restart`,
      { path: 'maxMemory' },
    );
  }
  const dimms = def.memoryDevices ?? [];
  if (dimms.length >= max.slots) {
    throw new VirtError(
      ErrorCode.OPERATION_INVALID,
      `domain '${def.name}' has no free memory slot: all ${max.slots} slot(s) of <maxMemory> are taken`,
      { path: 'maxMemory.slots', slots: max.slots },
    );
  }
  if (def.memoryKiB + dimm.sizeKiB > max.kib) {
    throw new VirtError(
      ErrorCode.OPERATION_INVALID,
      `a ${dimm.sizeKiB} KiB memory device does not fit: domain '${def.name}' has ${def.memoryKiB} of at most ${max.kib} KiB`,
      { path: 'memory.sizeKiB', memoryKiB: def.memoryKiB, maxMemoryKiB: max.kib },
    );
  }
  const next = assignDevices(
    resolveDefinition({
      ...def,
      memoryKiB: def.memoryKiB + dimm.sizeKiB,
      ...(def.currentMemoryKiB !== undefined
        ? { currentMemoryKiB: def.currentMemoryKiB + dimm.sizeKiB }
        : {}),
      memoryDevices: [...dimms, dimm],
    }),
    { live },
  );
  return { def: next, dimm: next.memoryDevices?.at(-1) as Dimm };
}

function withoutDimm(def: DomainDefinition, dimm: Dimm): DomainDefinition {
  const rest = (def.memoryDevices ?? []).filter((d) => d !== dimm);
  return {
    ...def,
    memoryKiB: def.memoryKiB - dimm.sizeKiB,
    ...(def.currentMemoryKiB !== undefined
      ? { currentMemoryKiB: Math.min(def.currentMemoryKiB, def.memoryKiB - dimm.sizeKiB) }
      : {}),
    memoryDevices: rest.length > 0 ? rest : undefined,
  };
}

/** Attaches a memory device to the running domain and/or its persistent definition. */
export async function attachMemory(
  ctx: DriverContext,
  dom: DomainObject,
  dimm: Dimm,
  options: DeviceChangeOptions,
): Promise<void> {
  const { live, config } = affect(dom, options);
  let persistent: DomainDefinition | undefined;
  let chosen = dimm;
  if (config) {
    const added = withDimm(dom.def, dimm, false);
    persistent = added.def;
    chosen = added.dimm;
  }
  const run = dom.run;
  if (live && run) {
    const added = withDimm(run.live, chosen, true);
    await plugDimm(ctx, dom, run, added.def, added.dimm);
    ctx.log(dom, `attached ${added.dimm.alias} (live, ${added.dimm.sizeKiB} KiB)`);
    ctx.emit(dom, 'device-added', added.dimm.alias as string);
  }
  if (persistent) {
    await saveDefinition(domainPaths(ctx.layout, persistent.name, persistent.uuid).definition, persistent);
    dom.def = persistent;
    ctx.log(dom, `attached ${chosen.alias} (config)`);
  }
}

async function plugDimm(
  ctx: DriverContext,
  dom: DomainObject,
  run: Runtime,
  next: DomainDefinition,
  dimm: Dimm,
): Promise<void> {
  const qmp = monitor(run);
  // Before the backend exists: a QEMU that locks its memory maps the new RAM locked at once.
  await raiseMemLock(scopeOf(ctx, dom, run), next, run.pid, 'hotplug');
  await qmp.command('object-add', dimmBackend(dimm));
  try {
    await qmp.command('device_add', dimmDevice(dimm));
  } catch (err) {
    await qmp
      .command('object-del', { id: dimmBackendId(dimm) })
      .catch((undoErr: unknown) =>
        ctx.log(dom, `hotplug rollback of ${dimm.alias} failed: ${String(undoErr)}`),
      );
    throw err;
  }
  await setLive(dom, run, next);
}

/** Finds the DIMM a match names. */
function findDimm(def: DomainDefinition, match: DeviceMatch): Dimm | undefined {
  const dimms = def.memoryDevices ?? [];
  if ('alias' in match) return dimms.find((d) => d.alias === match.alias);
  if (!('memory' in match.device)) return undefined;
  const wanted = match.device.memory;
  return dimms.find((d) =>
    wanted.alias !== undefined
      ? d.alias === wanted.alias
      : wanted.slot !== undefined
        ? d.slot === wanted.slot
        : d.sizeKiB === wanted.sizeKiB && (wanted.node === undefined || d.node === wanted.node),
  );
}

/** Detaches a memory device: the guest must let go of it (offline its blocks) within `timeoutMs`. */
export async function detachMemory(
  ctx: DriverContext,
  dom: DomainObject,
  match: DeviceMatch,
  options: DetachDeviceOptions,
): Promise<void> {
  const { live, config } = affect(dom, options);
  const run = dom.run;
  const liveDimm = live && run ? findDimm(run.live, match) : undefined;
  const configDimm = config ? findDimm(dom.def, match) : undefined;
  if ((live && !liveDimm) || (config && !configDimm)) {
    throw new VirtError(
      ErrorCode.OPERATION_INVALID,
      `domain '${dom.def.name}' has no such memory device in its ${live && !liveDimm ? 'running' : 'persistent'} definition`,
    );
  }
  if (liveDimm && run) {
    const qmp = monitor(run);
    const alias = liveDimm.alias as string;
    const timeoutMs = options.timeoutMs ?? DEFAULT_DETACH_TIMEOUT_MS;
    const deleted = qmp.waitForEvent('DEVICE_DELETED', (e) => e.data.device === alias, { timeoutMs });
    deleted.catch(() => undefined);
    await qmp.command('device_del', { id: alias });
    try {
      await deleted;
    } catch (err) {
      if (err instanceof VirtError && err.code === ErrorCode.OPERATION_TIMEOUT) {
        throw new VirtError(
          ErrorCode.OPERATION_TIMEOUT,
          `the guest did not release ${alias} within ${timeoutMs} ms (it must offline the memory first); it is still attached`,
          { alias, timeoutMs },
          { cause: err },
        );
      }
      throw err;
    }
    await qmp.command('object-del', { id: dimmBackendId(liveDimm) });
    await setLive(dom, run, withoutDimm(run.live, liveDimm));
    ctx.log(dom, `QEMU released ${alias}; detached (live)`);
    ctx.emit(dom, 'device-removed', alias);
  }
  if (configDimm) {
    const next = withoutDimm(dom.def, configDimm);
    await saveDefinition(domainPaths(ctx.layout, next.name, next.uuid).definition, next);
    dom.def = next;
    ctx.log(dom, `detached ${configDimm.alias} (config)`);
  }
}

import { ErrorCode, VirtError } from '../../errors.js';
import type { DomainDefinition } from '../../stable/definition/schema.js';
import type { DetachDeviceOptions, DeviceChangeOptions, DeviceMatch } from '../../stable/devices.js';
import { findDimm, isMemoryMatch, noSuchDimm, withDimm, withoutDimm } from '../device-change.js';
import { type DriverContext, scopeOf } from './context.js';
import { assignDevices } from './devices/assign.js';
import { type Dimm, dimmBackend, dimmBackendId, dimmDevice } from './devices/memory.js';
import type { DomainObject, Runtime } from './domain-object.js';
import { affectOf, monitor, sendInOrder } from './hotplug.js';
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
export function isMemoryMatchOf(dom: DomainObject, match: DeviceMatch): boolean {
  return isMemoryMatch([dom.run?.live, dom.def], match);
}

/** The definition with the DIMM added by the shared rules, then through the device model. */
function withDimmAssigned(
  def: DomainDefinition,
  dimm: Dimm,
  live: boolean,
): { def: DomainDefinition; dimm: Dimm } {
  const next = assignDevices(withDimm(def, dimm).def, { live });
  return { def: next, dimm: next.memoryDevices?.at(-1) as Dimm };
}

/** Attaches a memory device to the running domain and/or its persistent definition. */
export async function attachMemory(
  ctx: DriverContext,
  dom: DomainObject,
  dimm: Dimm,
  options: DeviceChangeOptions,
): Promise<void> {
  const { live, config } = affectOf(dom, options);
  let persistent: DomainDefinition | undefined;
  let chosen = dimm;
  if (config) {
    // Each definition gets its own free slot (libvirt assigns live and config separately).
    const added = withDimmAssigned(dom.def, dimm, false);
    persistent = added.def;
    chosen = added.dimm;
  }
  const run = dom.run;
  if (live && run) {
    const added = withDimmAssigned(run.live, dimm, true);
    // Nothing follows a live-only attach: its record also says that the job is over.
    await plugDimm(ctx, dom, run, added.def, added.dimm, !persistent);
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
  endsJob: boolean,
): Promise<void> {
  const qmp = monitor(run);
  // Before the backend exists: a QEMU that locks its memory maps the new RAM locked at once.
  await raiseMemLock(scopeOf(ctx, dom, run), next, run.pid, 'hotplug');
  // The new live definition is validated while QEMU creates the backend, and before the
  // device_add that shows the guest the DIMM; whatever failed leaves the VM unchanged.
  const undo: Array<() => Promise<unknown>> = [];
  let live: DomainDefinition;
  try {
    live = await sendInOrder(
      [
        {
          run: () => qmp.command('object-add', dimmBackend(dimm)),
          undo: () => qmp.command('object-del', { id: dimmBackendId(dimm) }),
        },
      ],
      undo,
      next,
    );
    await qmp.command('device_add', dimmDevice(dimm));
  } catch (err) {
    for (const step of undo) {
      await step().catch((undoErr: unknown) =>
        ctx.log(dom, `hotplug rollback of ${dimm.alias} failed: ${String(undoErr)}`),
      );
    }
    throw err;
  }
  await setLive(dom, run, live, { endsJob });
}

/** Detaches a memory device: the guest must let go of it (offline its blocks) within `timeoutMs`. */
export async function detachMemory(
  ctx: DriverContext,
  dom: DomainObject,
  match: DeviceMatch,
  options: DetachDeviceOptions,
): Promise<void> {
  const { live, config } = affectOf(dom, options);
  const run = dom.run;
  const liveDimm = live && run ? findDimm(run.live, match) : undefined;
  const configDimm = config ? findDimm(dom.def, match) : undefined;
  if ((live && !liveDimm) || (config && !configDimm)) {
    throw noSuchDimm(dom.def.name, live && !liveDimm ? 'running' : 'persistent');
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

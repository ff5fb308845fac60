import { ErrorCode, errorMessage, VirtError } from '../../errors.js';
import { invoke } from '../../privileged/invoke.js';
import type {
  DiskDefinition,
  DomainDefinition,
  InterfaceDefinition,
} from '../../stable/definition/schema.js';
import { resolveDefinition } from '../../stable/definition/validate.js';
import type {
  DetachDeviceOptions,
  DeviceChangeOptions,
  PciDeviceDefinition,
  PciDeviceMatch,
} from '../../stable/devices.js';
import { closeFd } from '../../util/libc.js';
import {
  type Affect,
  affect,
  aliasOf,
  checkHotpluggable,
  findDevice,
  lastDevice,
  noSuchDevice,
  withDevice,
  withoutDevice,
} from '../device-change.js';
import { type DriverContext, scopeOf } from './context.js';
import { assignDevices } from './devices/assign.js';
import { backingAlias, diskBlockdevs, diskDevice, diskNodes } from './devices/disk.js';
import { fdsetIdOf } from './devices/fdset.js';
import { netdevId, netdevOf, nicDevice } from './devices/net.js';
import type { DomainObject, Runtime } from './domain-object.js';
import { checkLive, presentableLive, type SetLiveOptions, setLive } from './live-definition.js';
import type { QmpClient } from './qmp/client.js';
import { domainPaths } from './root.js';
import { saveDefinition } from './store.js';

/*
 * Device hotplug, libvirt's qemuDomainAttachDeviceFlags/qemuDomainDetachDeviceFlags. A live attach
 * opens what QEMU needs through the privileged operations in phase `hotplug` (`storage.openFile`,
 * `net.openTap`), hands the descriptors over with `add-fd`/`getfd`, creates the backend
 * (`blockdev-add`/`netdev_add`) and then the device (`device_add`) at the alias and address the
 * device model assigns; any failure undoes every step before it, so the running VM is exactly as it
 * was. A live detach asks the guest (`device_del`), waits for `DEVICE_DELETED`, then removes the
 * backend and the descriptors.
 */

const DEFAULT_DETACH_TIMEOUT_MS = 10_000;

/** Aliases a detach of this driver is unplugging: their DEVICE_DELETED is that detach's to handle. */
const unplugging = new WeakMap<Runtime, Set<string>>();

function unpluggingOf(run: Runtime): Set<string> {
  const set = unplugging.get(run) ?? new Set<string>();
  unplugging.set(run, set);
  return set;
}

/** The definitions a change affects; `live` needs a domain QEMU runs. */
export function affectOf(dom: DomainObject, options: DeviceChangeOptions): Affect {
  return affect(dom.def.name, { active: dom.active, running: dom.run?.started === true }, options);
}

/** The definition with the device added, validated, with the device's alias and address assigned. */
function addTo(
  def: DomainDefinition,
  device: PciDeviceDefinition,
  live: boolean,
): { def: DomainDefinition; device: PciDeviceDefinition } {
  const next = assignDevices(resolveDefinition(withDevice(def, device)), { live });
  return { def: next, device: lastDevice(next, device) };
}

/**
 * Makes `next` the live definition through the one function that validates it and rewrites the
 * status file atomically, so a new driver finds the device.
 */
function saveLive(
  dom: DomainObject,
  run: Runtime,
  next: DomainDefinition,
  options?: SetLiveOptions,
): Promise<void> {
  return setLive(dom, run, next, options);
}

/** Attaches a device to the running domain and/or its persistent definition. */
export async function attachDevice(
  ctx: DriverContext,
  dom: DomainObject,
  device: PciDeviceDefinition,
  options: DeviceChangeOptions,
): Promise<void> {
  const { live, config } = affectOf(dom, options);
  let persistent: DomainDefinition | undefined;
  let chosen = device;
  if (config) {
    const added = addTo(dom.def, device, false);
    persistent = added.def;
    // Live and config get the same alias and address when both are asked for.
    chosen = added.device;
  }
  const run = dom.run;
  if (live && run) {
    checkHotpluggable(chosen, false);
    // An unreadable live record is reported, never replaced by one derived from a stand-in.
    const added = addTo(presentableLive(dom, run), chosen, true);
    const next =
      'disk' in added.device
        ? await plugDisk(ctx, dom, run, added.def, added.device.disk)
        : await plugInterface(ctx, dom, run, added.def, added.device.interface);
    // Nothing follows a live-only attach: its record also says that the job is over.
    await saveLive(dom, run, next, { endsJob: !persistent });
    ctx.log(dom, `attached ${aliasOf(added.device)} (live)`);
    ctx.emit(dom, 'device-added', aliasOf(added.device));
  }
  if (persistent) {
    await saveDefinition(domainPaths(ctx.layout, persistent.name, persistent.uuid).definition, persistent);
    dom.def = persistent;
    ctx.log(dom, `attached ${aliasOf(chosen)} (config)`);
  }
}

/** Detaches a device from the running domain and/or its persistent definition. */
export async function detachDevice(
  ctx: DriverContext,
  dom: DomainObject,
  match: PciDeviceMatch,
  options: DetachDeviceOptions,
): Promise<void> {
  const { live, config } = affectOf(dom, options);
  const run = dom.run;
  const liveDevice = live && run ? findDevice(presentableLive(dom, run), match) : undefined;
  const configDevice = config ? findDevice(dom.def, match) : undefined;
  if ((live && !liveDevice) || (config && !configDevice)) {
    throw noSuchDevice(dom.def.name, match, live && !liveDevice ? 'running' : 'persistent');
  }
  if (liveDevice && run) {
    checkHotpluggable(liveDevice, true);
    await unplug(ctx, dom, run, liveDevice, options.timeoutMs ?? DEFAULT_DETACH_TIMEOUT_MS, !configDevice);
  }
  if (configDevice) {
    const next = withoutDevice(dom.def, configDevice);
    await saveDefinition(domainPaths(ctx.layout, next.name, next.uuid).definition, next);
    dom.def = next;
    ctx.log(dom, `detached ${aliasOf(configDevice)} (config)`);
  }
}

/** The domain's monitor connection; OPERATION_FAILED when it has none. */
export function monitor(run: Runtime): QmpClient {
  const qmp = run.qmp;
  if (!qmp) throw new VirtError(ErrorCode.OPERATION_FAILED, 'the domain has no monitor connection');
  return qmp;
}

/** Runs the undo steps, newest first; a failing one is logged, the others still run. */
async function undoAll(
  ctx: DriverContext,
  dom: DomainObject,
  undo: Array<() => Promise<unknown>>,
): Promise<void> {
  for (const step of undo.reverse()) {
    try {
      await step();
    } catch (err) {
      ctx.log(dom, `hotplug rollback step failed: ${errorMessage(err)}`);
    }
  }
}

/**
 * `live` validated (checkLive) while QEMU runs the commands just sent: the validation costs no
 * time of its own, and a failure is reported (`get`) after those commands were recorded for undo,
 * so it is undone like any other, before the `device_add` that would show the guest the device.
 */
function validate(live: DomainDefinition): { get(): DomainDefinition } {
  try {
    const checked = checkLive(live);
    return { get: () => checked };
  } catch (err) {
    return {
      get: () => {
        throw err;
      },
    };
  }
}

/**
 * Sends commands that QEMU runs in order, each building on the one before, without waiting for
 * each reply, and validates the live definition meanwhile. Each one that succeeded is pushed on
 * `undo` (with its undo step), so a failure of any of them or of the validation is undone in full.
 *
 * @returns the validated live definition
 */
export async function sendInOrder(
  commands: ReadonlyArray<{ run: () => Promise<unknown>; undo: () => Promise<unknown> }>,
  undo: Array<() => Promise<unknown>>,
  live: DomainDefinition,
): Promise<DomainDefinition> {
  const sent = Promise.allSettled(commands.map((c) => c.run()));
  const next = validate(live);
  let failed: { reason: unknown } | undefined;
  for (const [i, result] of (await sent).entries()) {
    if (result.status === 'fulfilled') undo.push((commands[i] as (typeof commands)[number]).undo);
    else failed ??= { reason: result.reason };
  }
  if (failed) throw failed.reason;
  return next.get();
}

/** Plugs a disk; returns the live definition with it, validated. */
async function plugDisk(
  ctx: DriverContext,
  dom: DomainObject,
  run: Runtime,
  live: DomainDefinition,
  disk: DiskDefinition,
): Promise<DomainDefinition> {
  const qmp = monitor(run);
  const alias = disk.alias as string;
  if (disk.target.bus === 'fdc') {
    throw new VirtError(
      ErrorCode.CONFIG_UNSUPPORTED,
      'a floppy cannot be hot-plugged (QEMU fixes its drives at start); attach it to the persistent definition (--config) and restart',
      { path: 'target.bus' },
    );
  }
  if (disk.network) {
    // QEMU connects to the server itself: no descriptor to hand over.
    return plugBlockNodes(ctx, dom, qmp, live, disk, []);
  }
  const source = disk.source;
  if (source === undefined) {
    throw new VirtError(
      ErrorCode.CONFIG_UNSUPPORTED,
      'an empty CD-ROM cannot be hot-plugged by this version of virtkit; attach it to the persistent definition (--config) and restart',
      { path: 'source' },
    );
  }
  if (disk.backingStore) {
    throw new VirtError(
      ErrorCode.CONFIG_UNSUPPORTED,
      `a disk with a backing store cannot be hot-plugged by this version of virtkit; attach it to the persistent definition (--config) and restart`,
      { path: 'backingStore' },
    );
  }
  const set = fdsetIdOf(alias);
  const clash = run.live.disks.find((d) => d.alias !== undefined && fdsetIdOf(d.alias) === set);
  if (clash) {
    throw new VirtError(
      ErrorCode.CONFIG_UNSUPPORTED,
      `the disk aliases '${clash.alias}' and '${alias}' map to one fdset; give the disk another alias`,
    );
  }
  const { fd } = await invoke(scopeOf(ctx, dom, run), 'storage.openFile', 'hotplug', {
    path: source,
    mode: disk.readonly ? 'r' : 'rw',
  });
  try {
    await qmp.addFd(fd, { fdsetId: set, opaque: source });
    return await plugBlockNodes(ctx, dom, qmp, live, disk, [
      () => qmp.command('remove-fd', { 'fdset-id': set }),
    ]);
  } finally {
    closeFd(fd);
  }
}

/**
 * Adds a disk's block nodes and its device; on failure, undoes them and then `undo`. Returns the
 * live definition with the disk, validated.
 */
async function plugBlockNodes(
  ctx: DriverContext,
  dom: DomainObject,
  qmp: ReturnType<typeof monitor>,
  live: DomainDefinition,
  disk: DiskDefinition,
  undo: Array<() => Promise<unknown>>,
): Promise<DomainDefinition> {
  try {
    // The format node fails without its storage node; when the storage node fails (its name
    // taken), the format node may sit on a node of someone else's, and is deleted like any node
    // this attach created. device_add waits for both, so the guest never sees such a node.
    const next = await sendInOrder(
      diskBlockdevs(disk).map((node) => ({
        run: () => qmp.command('blockdev-add', node as never),
        undo: () => qmp.command('blockdev-del', { 'node-name': String(node['node-name']) }),
      })),
      undo,
      live,
    );
    await qmp.command('device_add', diskDevice(live, disk, `disks.${live.disks.length - 1}`) as never);
    return next;
  } catch (err) {
    await undoAll(ctx, dom, undo);
    throw err;
  }
}

/** Plugs a NIC; returns the live definition with it, validated. */
async function plugInterface(
  ctx: DriverContext,
  dom: DomainObject,
  run: Runtime,
  live: DomainDefinition,
  nic: InterfaceDefinition,
): Promise<DomainDefinition> {
  const qmp = monitor(run);
  const undo: Array<() => Promise<unknown>> = [];
  let fds: number[] = [];
  try {
    let names: string[] | undefined;
    if (nic.type === 'ethernet') {
      const tap = await invoke(scopeOf(ctx, dom, run), 'net.openTap', 'hotplug', {
        ifname: nic.target?.dev,
        queues: nic.queues ?? 1,
        vnetHdr: nic.model.startsWith('virtio'),
        managed: nic.target?.managed !== false,
      });
      fds = tap.fds;
      names = [];
      for (const [i, fd] of fds.entries()) {
        const name = `${netdevId(nic)}-fd${i}`;
        await qmp.getfd(name, fd);
        names.push(name);
        undo.push(() => qmp.command('closefd', { fdname: name }));
      }
    }
    const id = netdevId(nic);
    const added = qmp.command('netdev_add', netdevOf(nic, names) as never);
    const next = validate(live);
    await added;
    // netdev_add consumed the named descriptors: only the netdev is left to undo.
    undo.splice(0);
    undo.push(() => qmp.command('netdev_del', { id }));
    const checked = next.get();
    await qmp.command('device_add', nicDevice(live, nic) as never);
    return checked;
  } catch (err) {
    await undoAll(ctx, dom, undo);
    throw err;
  } finally {
    for (const fd of fds) closeFd(fd);
  }
}

/**
 * Removes what backed a device QEMU has let go of (block nodes and fdset, or the netdev) and takes
 * it out of the live definition.
 */
async function release(
  ctx: DriverContext,
  dom: DomainObject,
  run: Runtime,
  device: PciDeviceDefinition,
  options?: SetLiveOptions,
): Promise<void> {
  const qmp = monitor(run);
  const alias = aliasOf(device);
  // The device is gone from the guest whatever happens to its backend: a backend step that fails
  // (one someone removed through the monitor, or a QEMU-made one of an attached domain) is logged.
  const steps: Array<() => Promise<unknown>> = [];
  if ('disk' in device) {
    const nodes = diskNodes(alias);
    steps.push(
      () => qmp.command('blockdev-del', { 'node-name': nodes.format }),
      () => qmp.command('blockdev-del', { 'node-name': nodes.storage }),
    );
    // A network disk has no fdset.
    if (!device.disk.network) steps.push(() => qmp.command('remove-fd', { 'fdset-id': fdsetIdOf(alias) }));
    if (device.disk.backingStore) {
      const backing = backingAlias(alias);
      const under = diskNodes(backing);
      steps.push(
        () => qmp.command('blockdev-del', { 'node-name': under.format }),
        () => qmp.command('blockdev-del', { 'node-name': under.storage }),
        () => qmp.command('remove-fd', { 'fdset-id': fdsetIdOf(backing) }),
      );
    }
  } else {
    steps.push(() => qmp.command('netdev_del', { id: netdevId(device.interface) }));
  }
  // Sent at once: QEMU runs them in order, and one failing does not stop the next, as before.
  const done = Promise.allSettled(steps.map((step) => step()));
  const base = run.live;
  const next = validate(withoutDevice(base, device));
  for (const result of await done) {
    if (result.status === 'rejected') {
      ctx.log(dom, `releasing the backend of ${alias}: ${errorMessage(result.reason)}`);
    }
  }
  // Another change of the live definition (a late release) landed meanwhile: start from it.
  await saveLive(dom, run, run.live === base ? next.get() : withoutDevice(run.live, device), options);
  ctx.log(dom, `QEMU released ${alias}; detached (live)`);
  ctx.emit(dom, 'device-removed', alias);
}

/**
 * After a detach timed out the guest may still let go, later: the removal is then completed when
 * QEMU reports it, as libvirt does on a late DEVICE_DELETED.
 */
function releaseWhenDeleted(
  ctx: DriverContext,
  dom: DomainObject,
  run: Runtime,
  device: PciDeviceDefinition,
): void {
  const qmp = monitor(run);
  const alias = aliasOf(device);
  unpluggingOf(run).add(alias);
  qmp
    .waitForEvent('DEVICE_DELETED', (e) => e.data.device === alias, { timeoutMs: Number.POSITIVE_INFINITY })
    .then(async () => {
      const current = findDevice(run.live, { alias });
      if (dom.run !== run || !current) return;
      await release(ctx, dom, run, current);
    })
    .catch((err: unknown) => {
      if (dom.run === run) ctx.log(dom, `late release of ${alias} not completed: ${errorMessage(err)}`);
    })
    .finally(() => unpluggingOf(run).delete(alias));
}

async function unplug(
  ctx: DriverContext,
  dom: DomainObject,
  run: Runtime,
  device: PciDeviceDefinition,
  timeoutMs: number,
  endsJob: boolean,
): Promise<void> {
  const qmp = monitor(run);
  const alias = aliasOf(device);
  const deleted = qmp.waitForEvent('DEVICE_DELETED', (e) => e.data.device === alias, { timeoutMs });
  deleted.catch(() => undefined);
  const mine = unpluggingOf(run);
  mine.add(alias);
  try {
    await qmp.command('device_del', { id: alias });
    await deleted;
  } catch (err) {
    mine.delete(alias);
    if (err instanceof VirtError && err.code === ErrorCode.OPERATION_TIMEOUT) {
      releaseWhenDeleted(ctx, dom, run, device);
      throw new VirtError(
        ErrorCode.OPERATION_TIMEOUT,
        `the guest did not release ${alias} within ${timeoutMs} ms; it is still attached (when the guest lets go later, the detach completes then, with event device-removed)`,
        { alias, timeoutMs },
        { cause: err },
      );
    }
    throw err;
  }
  try {
    await release(ctx, dom, run, device, { endsJob });
  } finally {
    mine.delete(alias);
  }
}

/**
 * QEMU deleted a device this driver did not unplug (a `device_del` sent through the monitor
 * passthrough, or the guest ejecting it): the live definition follows, as libvirt's
 * qemuProcessHandleDeviceDeleted does, with its backend released and event `device-removed`.
 */
export function onDeviceDeleted(ctx: DriverContext, dom: DomainObject, run: Runtime, alias: string): void {
  if (!run.started || dom.run !== run || unpluggingOf(run).has(alias)) return;
  const device = findDevice(run.live, { alias });
  if (!device) return;
  ctx.log(dom, `QEMU deleted ${alias}, which this driver did not unplug`);
  release(ctx, dom, run, device).catch((err: unknown) =>
    ctx.log(dom, `cannot record the removal of ${alias}: ${errorMessage(err)}`),
  );
}

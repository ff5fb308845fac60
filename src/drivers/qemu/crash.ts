import { closeSync, mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { errorMessage } from '../../errors.js';
import type { DriverContext } from './context.js';
import type { DomainObject, Runtime } from './domain-object.js';
import type { QmpClient } from './qmp/client.js';

/*
 * A guest panic, as libvirt's processGuestPanicEvent handles it: the domain becomes `crashed`
 * (`panicked`), then its `on_crash` action runs. For every action but destroy QEMU was told to
 * pause a panicked guest (`-action panic=pause`), so nothing of the guest runs meanwhile; for
 * destroy QEMU powers itself off (or pauses under `-no-shutdown`, and the driver ends it).
 */

/** Applies `on_crash` once QEMU stopped the vCPUs of a guest that panicked. */
export function onGuestPanic(ctx: DriverContext, dom: DomainObject, run: Runtime, qmp: QmpClient): void {
  const action = run.live.onCrash;
  ctx.log(dom, `the guest panicked: on_crash is ${action}`);
  ctx.setState(dom, { state: 'crashed', reason: 'panicked' }, 'crashed');
  if (run.panicked === 'poweroff') return;
  void (async () => {
    if (action === 'coredump-destroy' || action === 'coredump-restart') await dumpCore(ctx, dom, qmp);
    if (run.stopIntent !== undefined || dom.run !== run) return;
    if (action === 'destroy' || action === 'coredump-destroy') {
      await qmp.execute('quit');
    } else if (action === 'restart' || action === 'coredump-restart') {
      // libvirt's fake reboot: the guest boots again in the same QEMU, running with reason crashed.
      run.panicked = undefined;
      await qmp.execute('system_reset');
      await qmp.execute('cont');
    }
  })().catch((err) => ctx.log(dom, `on_crash ${action}: ${errorMessage(err)}`));
}

/**
 * Writes the guest's memory as an ELF core file (libvirt's memory-only dump) to
 * `<root>/lib/dump/<name>-<time>.core`; QEMU writes through a descriptor the driver opened, so it
 * needs no access to the root. A failure is logged: the action goes on, as libvirt's does.
 */
async function dumpCore(ctx: DriverContext, dom: DomainObject, qmp: QmpClient): Promise<void> {
  const dir = join(ctx.layout.lib, 'dump');
  const stamp = new Date().toISOString().replaceAll(':', '-').replace(/\..*$/, '');
  const path = join(dir, `${dom.def.name}-${stamp}.core`);
  let fd: number | undefined;
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    fd = openSync(path, 'wx', 0o600);
    await qmp.getfd('virtkit-coredump', fd);
    await qmp.command(
      'dump-guest-memory',
      { paging: false, protocol: 'fd:virtkit-coredump' },
      // The dump is synchronous; it takes as long as writing the guest's RAM.
      { timeoutMs: 600_000 },
    );
    ctx.log(dom, `core dump written to ${path}`);
  } catch (err) {
    ctx.log(dom, `cannot write a core dump to ${path}: ${errorMessage(err)}`);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

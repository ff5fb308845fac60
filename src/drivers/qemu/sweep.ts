import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCode, errorMessage, VirtError } from '../../errors.js';
import { domainCgroupName } from '../../privileged/builtins.js';
import { releaseCgroups } from '../../util/cgroup.js';
import type { DriverContext } from './context.js';
import type { DomainObject } from './domain-object.js';
import type { RootLayout } from './root.js';
import { removeIfPresent } from './store.js';

/*
 * What a driver killed at the wrong moment leaves behind, removed when the next driver opens the
 * root. The root's lock is held by then, so no other writer exists: every temporary is stale.
 */

/** An atomic-write temporary: `<target>.tmp-<writer pid>-<random hex>`. */
const TEMPORARY = /\.tmp-\d+-[0-9a-f]+$/;

/**
 * Removes atomic-write temporaries from `etc/domains` and `run`, a control socket, and every
 * monitor socket in `run` that no running domain owns (a kill can land after the socket exists and before the
 * status file that names it). Returns the names removed.
 */
export function sweepRootLeftovers(ctx: DriverContext, domains: readonly DomainObject[]): string[] {
  const owned = new Set(domains.flatMap((d) => (d.run ? [d.run.paths.monitor] : [])));
  const removed: string[] = [];
  for (const dir of [ctx.layout.domains, ctx.layout.run]) {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      // The control socket is served again, anew, once the driver has opened (if it is asked to).
      const stale =
        TEMPORARY.test(name) ||
        (dir === ctx.layout.run && ((name.endsWith('.qmp') && !owned.has(path)) || name === 'control.sock'));
      if (!stale) continue;
      try {
        removeIfPresent(path);
        removed.push(path);
      } catch {
        // left for the next driver; nothing depends on it
      }
    }
  }
  return removed;
}

/** Marks a transient domain (`virtkit create`): its definition is removed once it stops. */
export function transientMarker(layout: RootLayout, name: string): string {
  return join(layout.run, `${name}.transient`);
}

/** Removes transient markers of domains that are not defined (a driver killed half-way through). */
export function sweepTransientMarkers(layout: RootLayout, domains: readonly DomainObject[]): string[] {
  const names = new Set(domains.map((d) => d.def.name));
  const removed: string[] = [];
  for (const name of readdirSync(layout.run)) {
    if (!name.endsWith('.transient') || names.has(name.slice(0, -'.transient'.length))) continue;
    try {
      removeIfPresent(join(layout.run, name));
      removed.push(join(layout.run, name));
    } catch {
      // left for the next driver
    }
  }
  return removed;
}

/**
 * Removes the built-in cgroups of every domain that is not running: a release that failed (a
 * zombie still holding a group, a driver killed half-way through) is retried by every new driver.
 * A handler's cgroups are the handler's to release, with the placements the status file recorded.
 */
export function sweepCgroups(ctx: DriverContext, domains: readonly DomainObject[]): void {
  if (ctx.handlers.get('cgroup.placeThreads') || ctx.handlers.get('cgroup.release')) return;
  for (const dom of domains) {
    if (dom.run) continue;
    try {
      releaseCgroups({ parent: ctx.cgroupParent, name: domainCgroupName(dom.def.uuid) });
    } catch (err) {
      // No hierarchy (unprivileged, no cgroups mounted) is the common case and needs no record.
      if (!(VirtError.is(err) && err.code === ErrorCode.NO_SUPPORT))
        ctx.log(dom, `cannot release the cgroups of the stopped domain: ${errorMessage(err)}`);
    }
  }
}

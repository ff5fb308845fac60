import { ErrorCode, errorMessage, VirtError } from '../../errors.js';
import { type DomainDefinition, domainDefinitionSchema } from '../../stable/definition/schema.js';
import { resolveDefinition } from '../../stable/definition/validate.js';
import type { DomainObject, Runtime } from './domain-object.js';
import { dropIfGone, runtimeStatus } from './runtime-status.js';
import { writeStatusSync } from './status.js';

/** Definitions {@link checkLive} validated: {@link setLive} need not validate them again. */
const checked = new WeakSet<DomainDefinition>();

/**
 * `next` validated as {@link setLive} would validate it, ahead of the change: a hotplug does this
 * while QEMU runs its `device_add`, so the check costs no time of its own.
 *
 * @throws VirtError `XML_ERROR` naming the field when `next` does not validate
 */
export function checkLive(next: DomainDefinition): DomainDefinition {
  const def = resolveDefinition(next);
  checked.add(def);
  return def;
}

/** How {@link setLive} records the change. */
export interface SetLiveOptions {
  /**
   * The change is the last step of the job holding the domain: the same record says that no job
   * holds it any more, so the job's end needs no write of its own (recordJob skips it).
   */
  readonly endsJob?: boolean;
}

/**
 * The one way to change a running domain's live definition (a hotplug or unplug, `setVcpus`, a
 * DIMM, a device QEMU reports through monitor passthrough): validates `next` (unless
 * {@link checkLive} did), bumps the version and rewrites the status file atomically before the new
 * definition is visible, so a successor driver adopts exactly what this one shows. The status keeps
 * recording the job it records (the one making the change; none with `endsJob`) and the domain's
 * state. The write is not fsync'd (see writeStatus): it guards against a killed driver, which the
 * page cache covers, and a host crash ends the QEMU it describes; the two fsyncs were most of a
 * hotplug's time (issue 14). The persistent definition a config change writes stays durable. A
 * durable status write still under way would land after this one with older content: it rewrites
 * the file on completion (settleStatus). When QEMU exited before (`run` is no longer the
 * domain's), the file just written is removed rather than left for a domain that is shut off.
 *
 * @throws VirtError `XML_ERROR` naming the field when `next` does not validate (nothing changes)
 */
export async function setLive(
  dom: DomainObject,
  run: Runtime,
  next: DomainDefinition,
  options: SetLiveOptions = {},
): Promise<void> {
  const def = checked.has(next) ? next : resolveDefinition(next);
  const version = run.liveVersion + 1;
  const record = { ...runtimeStatus(run, 'running', dom.status), live: def, liveVersion: version };
  if (options.endsJob) delete record.job;
  writeStatusSync(run.paths.status, record);
  // Only once written: a failed write leaves the job recorded, and its end writes again.
  if (options.endsJob) run.statusJob = undefined;
  dropIfGone(dom, run);
  run.live = def;
  run.liveVersion = version;
  run.liveUnreadable = undefined;
  run.statusState = dom.status;
  if (run.statusWrites > 0) run.statusStale = true;
}

/**
 * The live definition a status file recorded, validated. An unreadable one is reported (the
 * caller logs it and emits an event) and never silently replaced: `unreadable` carries the reason,
 * and `live` is the persistent definition only for the driver's internal needs.
 */
export function readLive(
  raw: unknown,
  dom: DomainObject,
): { live: DomainDefinition; ignored?: string[]; unreadable?: { reason: string; raw: unknown } } {
  try {
    return { live: resolveDefinition(raw) };
  } catch (err) {
    // Written by a newer virtkit: fields this version does not know are left aside (the caller
    // logs them), everything it does know must still validate.
    const known = withoutUnknownKeys(raw);
    if (known) {
      try {
        return { live: resolveDefinition(known.value), ignored: known.ignored };
      } catch {
        // unreadable after all: reported below with the first error
      }
    }
    return { live: dom.def, unreadable: { reason: errorMessage(err), raw } };
  }
}

/** `raw` without the object keys the definition schema does not know, or undefined when there are none. */
function withoutUnknownKeys(raw: unknown): { value: unknown; ignored: string[] } | undefined {
  const parsed = domainDefinitionSchema.safeParse(raw);
  if (parsed.success) return undefined;
  const issues = parsed.error.issues.filter((i) => i.code === 'unrecognized_keys');
  if (issues.length === 0) return undefined;
  const value = structuredClone(raw);
  const ignored: string[] = [];
  for (const issue of issues) {
    let node: unknown = value;
    for (const key of issue.path)
      node = (node as Record<PropertyKey, unknown> | undefined)?.[key as PropertyKey];
    if (typeof node !== 'object' || node === null) return undefined;
    for (const key of issue.keys) {
      delete (node as Record<string, unknown>)[key];
      ignored.push([...issue.path, key].join('.'));
    }
  }
  return { value, ignored };
}

/** The live definition of a running domain for the public API; OPERATION_FAILED when it is unreadable. */
export function presentableLive(dom: DomainObject, run: Runtime): DomainDefinition {
  if (run.liveUnreadable) {
    throw new VirtError(
      ErrorCode.OPERATION_FAILED,
      `the live definition of running domain '${dom.def.name}' is unreadable (${run.liveUnreadable.reason}); it was left as found in ${run.paths.status}. toXML({ inactive: true }) gives the persistent definition; destroy and start the domain to get a new live one`,
      { domain: { name: dom.def.name, uuid: dom.def.uuid }, path: run.paths.status },
    );
  }
  return run.live;
}

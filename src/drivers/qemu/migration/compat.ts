import { existsSync } from 'node:fs';
import { ErrorCode, VirtError } from '../../../errors.js';
import type { DomainDefinition } from '../../../stable/definition/schema.js';
import { formatDomainXml, resolveDomainXml } from '../../../stable/definition/xml.js';

/**
 * The offer travels as XML, which spells out defaults a typed definition may leave implicit: both
 * sides are compared in that spelling.
 */
const viaXml = (def: DomainDefinition): DomainDefinition => resolveDomainXml(formatDomainXml(def));

/** JSON with sorted keys and without undefined members: equal definitions give equal text. */
function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, v) =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(
          Object.keys(v)
            .sort()
            .filter((k) => v[k] !== undefined)
            .map((k) => [k, v[k]]),
        )
      : typeof v === 'bigint'
        ? `${v}n`
        : v,
  );
}

/** The first path at which two JSON-like values differ, for the error message. */
function firstDifference(a: unknown, b: unknown, path = ''): string | undefined {
  if (canonical(a) === canonical(b)) return undefined;
  if (a && b && typeof a === 'object' && typeof b === 'object') {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    for (const k of keys) {
      const d = firstDifference(
        (a as Record<string, unknown>)[k],
        (b as Record<string, unknown>)[k],
        path ? `${path}.${k}` : k,
      );
      if (d) return d;
    }
  }
  return path || '(root)';
}

/**
 * A domain already defined at the destination must be the very guest the source runs: the guest's
 * ABI (machine type, devices, their order and aliases) cannot change under it.
 */
export function checkSameDefinition(here: DomainDefinition, offered: DomainDefinition): void {
  const diff = firstDifference(viaXml(here), viaXml(offered));
  if (diff)
    throw new VirtError(
      ErrorCode.CONFIG_UNSUPPORTED,
      `the domain '${here.name}' defined at the destination differs from the source's at ${diff}; undefine it there or define the same definition`,
      { field: diff, domain: { name: here.name, uuid: here.uuid } },
    );
}

/**
 * The destination's live definition must equal the source's, except for the paths of file
 * consoles the driver chose itself (each side's own root).
 */
export function checkSameLive(
  here: DomainDefinition,
  offered: DomainDefinition,
  persistent: DomainDefinition,
): void {
  const local = (d: DomainDefinition) => ({
    ...d,
    serials: d.serials.map((s, i) => {
      const declared = persistent.serials[i];
      return s.type === 'file' && declared?.type === 'file' && !declared.path
        ? { ...s, path: '(default)' }
        : s;
    }),
  });
  const diff = firstDifference(local(viaXml(here)), local(viaXml(offered)));
  if (diff)
    throw new VirtError(
      ErrorCode.CONFIG_UNSUPPORTED,
      `the destination would run '${here.name}' with a different live definition (at ${diff}): both sides need the same virtkit and QEMU device model`,
      { field: diff, domain: { name: here.name, uuid: here.uuid } },
    );
}

/** Every disk image must exist at the destination (shared storage): refused before QEMU starts. */
export function checkDisksPresent(def: DomainDefinition): void {
  def.disks.forEach((disk, i) => {
    if (!existsSync(disk.source))
      throw new VirtError(
        ErrorCode.OPERATION_INVALID,
        `disk ${disk.source} of '${def.name}' does not exist at the destination; migration needs the same storage on both sides`,
        { field: `disks.${i}.source`, path: disk.source },
      );
  });
}

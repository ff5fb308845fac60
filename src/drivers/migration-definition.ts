import { ErrorCode, VirtError } from '../errors.js';
import type { DomainDefinition } from '../stable/definition/schema.js';
import { formatDomainXml, resolveDomainXml } from '../stable/definition/xml.js';

/*
 * Whether the destination's definition is the source's, by one rule for both drivers: as the offer
 * spells it (libvirt XML), which is how it travels between hosts.
 */

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
 * Where two definitions differ as the offer spells them, or undefined. Equal XML text means equal
 * definitions, and formatting is cheap; parsing (the round trip that fills in what XML leaves
 * implicit) costs milliseconds per document, so it only runs to explain or excuse a difference.
 */
export function differenceViaXml(
  a: DomainDefinition,
  b: DomainDefinition,
  adjust: (d: DomainDefinition) => DomainDefinition = (d) => d,
): string | undefined {
  if (formatDomainXml(adjust(a)) === formatDomainXml(adjust(b))) return undefined;
  return firstDifference(adjust(viaXml(a)), adjust(viaXml(b)));
}

/**
 * A domain already defined at the destination must be the very guest the source runs: the guest's
 * ABI (machine type, devices, their order and aliases) cannot change under it.
 */
export function checkSameDefinition(here: DomainDefinition, offered: DomainDefinition): void {
  const diff = differenceViaXml(here, offered);
  if (diff)
    throw new VirtError(
      ErrorCode.CONFIG_UNSUPPORTED,
      `the domain '${here.name}' defined at the destination differs from the source's at ${diff}; undefine it there or define the same definition`,
      { field: diff, domain: { name: here.name, uuid: here.uuid } },
    );
}

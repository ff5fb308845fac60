import { ErrorCode, VirtError } from '../../errors.js';
import type { XmlElement } from './xml-tree.js';

/*
 * The rules every part of the domain XML parser follows: which errors it throws and how they name
 * the place, what it accepts without effect, and the element checks that enforce both.
 *
 * Error codes:
 * - `XML_ERROR` with `details.line` and `details.column`: the document is not well-formed XML
 *   (or not namespace-well-formed: an undeclared prefix).
 * - `CONFIG_UNSUPPORTED` with `details.path`: an element, an attribute or a value that libvirt
 *   knows but virtkit does not support (`<graphics>`, `<driver cache='none'/>`, `type='network'`).
 * - `XML_ERROR` with `details.path`: a missing or malformed value (a size that is not a number, an
 *   unknown unit, a value that is no valid choice, a single element given twice) and the semantic
 *   checks of the typed definition (a vcpupin for a vCPU that does not exist, currentMemory above
 *   memory, a duplicate disk target); for those `details.field` also names the typed field
 *   (`cputune.vcpupin.1.vcpu`). Element-level errors also carry the element's line and column.
 *
 * Path format (`details.path`), the form libxml2's xmlGetNodePath gives:
 * - elements by their name as written, prefix included, from the root: `/domain/devices/graphics`,
 *   `/domain/qemu:commandline/qemu:arg`;
 * - a 1-based position `[n]` among the siblings of the same name, present only when there is more
 *   than one such sibling: `/domain/devices/disk[2]/driver`, but `/domain/devices/disk/driver` when
 *   the domain has one disk;
 * - an attribute as a last step `@name`: `/domain/devices/disk[2]/driver/@cache`;
 * - a missing element or attribute by the path it would have: `/domain/memory`, `/domain/@type`.
 *
 * Accepted but ignored (each has no effect in libvirt's QEMU driver either, or describes exactly
 * what virtkit does anyway; any other value of these attributes is rejected):
 * - `<domain id='N'>`: the runtime id of a running domain in `virsh dumpxml` output; libvirt
 *   ignores it when defining.
 * - `xmlns:*` namespace declarations (they carry no configuration themselves).
 * - `<vcpu placement='static'>`: the default placement.
 * - `<cpu check='none|partial'>`, `<cpu match='exact'>`, `<cpu migratable='on'>`: libvirt's
 *   defaults; virtkit asks QEMU for the model as given and lets QEMU report what it cannot provide.
 * - `<cpu><model fallback='allow|forbid'>`: virtkit never substitutes another model, which both
 *   values permit.
 * - `<os><type arch='x86_64'>` is mapped (the only architecture); `<type>hvm</type>` is required
 *   to be `hvm` when present.
 * - `<features><pae/></features>`: PAE has no command-line effect on x86_64 guests.
 * - `<devices><memballoon model='none'/></devices>`: "no balloon" (a `currentMemory` below `memory`
 *   still gets its balloon, which is how virtkit honours it).
 * - `<serial tty='…'>`, `<console tty='…'>` and a pty's `<source path='…'/>`: the pty that a
 *   running domain got, output only; libvirt ignores them when defining.
 * - `<serial><target type='isa-serial'><model name='isa-serial'/></target>` and
 *   `<target port='N'>` when N is the serial's index: the device virtkit always uses.
 * - `<disk><driver name='qemu'>`: the only driver.
 * - `<disk><target tray='open|closed'>`: the tray state a running domain reports; libvirt starts a
 *   domain with its media in whatever the document says.
 * - `<disk type='block'><source name='…'>`: a volume name KubeVirt writes; libvirt ignores it.
 * - An empty `<source/>` in an ethernet `<interface>` (KubeVirt writes one): an ethernet interface
 *   has no source.
 * - A `<console>` whose target is the first serial port (`<target type='serial' port='0'/>`, or
 *   no target) is folded into `<serial>` 0 as libvirt does; without any `<serial>`, it becomes
 *   serial 0. Its type and source must then match that serial's.
 */

/** The namespace of libvirt's QEMU command-line passthrough. @internal */
export const QEMU_NS = 'http://libvirt.org/schemas/domain/qemu/1.0';

/** The typed definition under construction: validation of the whole comes after the mapping. */
export type Obj = Record<string, unknown>;

interface Origin {
  readonly path: string;
  readonly line: number;
  readonly column: number;
}

/** Where each field of the typed definition came from, for errors found after the mapping. */
export class Origins {
  readonly #map = new Map<string, Origin>();

  note(field: string, el: XmlElement, attr?: string): void {
    this.#map.set(field, { path: attr ? `${el.path}/@${attr}` : el.path, line: el.line, column: el.column });
  }

  noteMissing(field: string, parent: XmlElement, step: string): void {
    this.#map.set(field, { path: `${parent.path}/${step}`, line: parent.line, column: parent.column });
  }

  find(field: string): Origin | undefined {
    const parts = field.split('.');
    for (let n = parts.length; n > 0; n--) {
      const hit = this.#map.get(parts.slice(0, n).join('.'));
      if (hit) return hit;
    }
    return this.#map.get('');
  }
}

/** Rewrites an error of the typed validation to name the XML element or attribute. */
export function relocate(err: unknown, origins: Origins): unknown {
  if (!VirtError.is(err)) return err;
  const field = typeof err.details.path === 'string' ? err.details.path : '';
  const origin = origins.find(field === '(root)' ? '' : field);
  if (!origin) return err;
  return new VirtError(
    err.code,
    `invalid domain XML at ${origin.path}: ${err.message}`,
    { ...err.details, path: origin.path, field, line: origin.line, column: origin.column },
    { cause: err },
  );
}

export function at(el: XmlElement, attr?: string): { path: string; line: number; column: number } {
  return { path: attr ? `${el.path}/@${attr}` : el.path, line: el.line, column: el.column };
}

export function invalid(el: XmlElement, message: string, attr?: string): VirtError {
  const where = at(el, attr);
  return new VirtError(ErrorCode.XML_ERROR, `invalid domain XML at ${where.path}: ${message}`, where);
}

export function missing(parent: XmlElement, step: string, message: string): VirtError {
  const path = `${parent.path}/${step}`;
  return new VirtError(ErrorCode.XML_ERROR, `invalid domain XML at ${path}: ${message}`, {
    path,
    line: parent.line,
    column: parent.column,
  });
}

export function unsupported(el: XmlElement, message: string, attr?: string): VirtError {
  const where = at(el, attr);
  return new VirtError(
    ErrorCode.CONFIG_UNSUPPORTED,
    `${where.path}: ${message} is not supported by virtkit; remove it or change it`,
    where,
  );
}

/** The name a child is matched by: its local name, `qemu:` + local name in the QEMU namespace. */
function keyOf(el: XmlElement): string {
  if (el.ns === '') return el.local;
  if (el.ns === QEMU_NS) return `qemu:${el.local}`;
  return `{${el.ns}}${el.local}`;
}

export interface Shape {
  /** Attributes the element may carry. */
  readonly attrs?: readonly string[];
  /** Child elements it may have (by {@link keyOf}). */
  readonly children?: readonly string[];
  /** Those of the children that may appear more than once. */
  readonly repeat?: readonly string[];
  /** True when character data is the element's value. */
  readonly text?: boolean;
}

/** Rejects whatever the element has beyond `shape`, in document order. */
export function check(el: XmlElement, shape: Shape): void {
  for (const name of el.attrs.keys()) {
    if (!shape.attrs?.includes(name)) throw unsupported(el, `the attribute ${name} of <${el.qname}>`, name);
  }
  const seen = new Set<string>();
  for (const child of el.children) {
    const key = keyOf(child);
    if (!shape.children?.includes(key)) {
      const ns = child.ns && child.ns !== QEMU_NS ? ` (namespace ${child.ns})` : '';
      throw unsupported(child, `the element <${child.qname}>${ns} in <${el.qname}>`);
    }
    if (seen.has(key) && !shape.repeat?.includes(key)) {
      throw invalid(child, `<${child.qname}> may appear only once in <${el.qname}>`);
    }
    seen.add(key);
  }
  if (!shape.text && el.text.trim() !== '') {
    throw invalid(el, `<${el.qname}> takes no text; found '${el.text.trim().slice(0, 40)}'`);
  }
}

export function child(el: XmlElement, key: string): XmlElement | undefined {
  return el.children.find((c) => keyOf(c) === key);
}

export function childrenOf(el: XmlElement, key: string): XmlElement[] {
  return el.children.filter((c) => keyOf(c) === key);
}

/** A text-only element (`<name>`, `<emulator>`…) as the value of `field`. */
export function textOf(origins: Origins, el: XmlElement, field: string): string {
  check(el, { text: true });
  origins.note(field, el);
  return el.text;
}

export function parseUint(el: XmlElement, value: string, what: string, attr?: string): number {
  const trimmed = value.trim();
  if (!/^[0-9]+$/.test(trimmed)) {
    throw invalid(el, `${what} must be a non-negative integer, not '${value.slice(0, 40)}'`, attr);
  }
  const n = Number(trimmed);
  if (!Number.isSafeInteger(n)) throw invalid(el, `${what} ${trimmed} is too large`, attr);
  return n;
}

export function intAttr(el: XmlElement, name: string): number | undefined {
  const value = el.attrs.get(name);
  return value === undefined ? undefined : parseUint(el, value, `the attribute ${name}`, name);
}

/**
 * A value out of a fixed set: `supported` maps, `known` are libvirt values virtkit does not
 * support (CONFIG_UNSUPPORTED); anything else is malformed (XML_ERROR).
 */
export function choice<T extends string>(
  el: XmlElement,
  value: string,
  what: string,
  supported: readonly T[],
  known: readonly string[] | 'any' = [],
  attr?: string,
): T {
  const v = attr === undefined ? value.trim() : value;
  if ((supported as readonly string[]).includes(v)) return v as T;
  const list = supported.map((s) => `'${s}'`).join(', ');
  if (known === 'any' ? v.trim() !== '' : known.includes(v)) {
    throw unsupported(el, `${what} '${v}' (virtkit supports ${list})`, attr);
  }
  throw invalid(el, `${what} must be one of ${list}, not '${v.slice(0, 40)}'`, attr);
}

/** An attribute accepted only with the values listed (see the list at the top of this file). */
export function ignoredAttr(el: XmlElement, name: string, harmless: readonly string[]): void {
  const value = el.attrs.get(name);
  if (value !== undefined && !harmless.includes(value)) {
    throw unsupported(el, `${name}='${value.slice(0, 40)}' on <${el.qname}>`, name);
  }
}

export function set(obj: Obj, key: string, value: unknown): void {
  if (value !== undefined) obj[key] = value;
}

import type { DomainDefinition, DomainDefinitionInput } from './schema.js';
import { resolveDefinition } from './validate.js';
import { parseCpu, parseCputune, parseVcpu } from './xml-parse-cpu.js';
import { parseDevices } from './xml-parse-devices.js';
import { parseMemory, parseMemoryBacking, parseMemtune, parseNumatune } from './xml-parse-memory.js';
import {
  parseClock,
  parseFeatures,
  parseMetadata,
  parseOs,
  parsePm,
  parseSysinfo,
} from './xml-parse-platform.js';
import {
  check,
  child,
  childrenOf,
  choice,
  invalid,
  missing,
  type Obj,
  Origins,
  parseUint,
  relocate,
  textOf,
} from './xml-parse-rules.js';
import { readXmlTree, type XmlElement } from './xml-tree.js';

/*
 * libvirt domain XML → the typed definition of schema.ts.
 *
 * The parser accepts exactly the subset of libvirt's domain XML that virtkit can honour and rejects
 * everything else. Nothing is dropped silently: every element and attribute of the document is
 * either mapped to a field of the definition, or listed as accepted-but-ignored, or rejected.
 *
 * This file walks `<domain>` and maps its small children itself; the rest is in its siblings:
 * - xml-parse-rules.ts: the error codes, the path format of `details.path`, the list of
 *   accepted-but-ignored items, and the element checks shared by all parts;
 * - xml-parse-memory.ts: `<memory>`, `<currentMemory>`, `<maxMemory>`, `<memoryBacking>`, `<memtune>`;
 * - xml-parse-cpu.ts: `<vcpu>`, `<cpu>`, `<cputune>`;
 * - xml-parse-devices.ts: `<devices>`.
 *
 * Typed API ↔ XML decisions:
 * - Features follow libvirt: without `<features>`, or without `<acpi/>` in it, ACPI is off, so a
 *   document without `<features>` parses to `features: { acpi: false, apic: false }`. (The typed
 *   API turns ACPI on when `features` is left out; formatDomainXml writes such a definition as
 *   `<features><acpi/><apic/></features>`, which reads back as `{ acpi: true, apic: true }`.)
 * - `<qemu:env name='X'/>` without a value sets X to the empty string.
 */

export { QEMU_NS } from './xml-parse-rules.js';

const DOMAIN_CHILDREN = [
  'name',
  'uuid',
  'title',
  'description',
  'metadata',
  'memory',
  'currentMemory',
  'maxMemory',
  'vcpu',
  'cpu',
  'os',
  'features',
  'clock',
  'pm',
  'sysinfo',
  'iothreads',
  'cputune',
  'memoryBacking',
  'memtune',
  'numatune',
  'on_poweroff',
  'on_reboot',
  'on_crash',
  'devices',
  'qemu:commandline',
] as const;

const DOMAIN_TYPES = ['xen', 'lxc', 'kqemu', 'hvf', 'vz', 'hyperv', 'bhyve', 'test', 'vmware', 'openvz'];

function parseDomain(origins: Origins, d: XmlElement): Obj {
  if (d.ns !== '' || d.local !== 'domain') {
    throw invalid(d, `expected a libvirt <domain> document, found <${d.qname}>`);
  }
  check(d, { attrs: ['type', 'id'], children: DOMAIN_CHILDREN });
  origins.note('', d);
  const out: Obj = {};
  const type = d.attrs.get('type');
  if (type === undefined) throw invalid(d, "<domain> needs a type, 'kvm' or 'qemu'", 'type');
  out.type = choice(d, type, 'the domain type', ['kvm', 'qemu'], DOMAIN_TYPES, 'type');
  const id = d.attrs.get('id');
  if (id !== undefined) parseUint(d, id, 'the attribute id', 'id');

  const name = child(d, 'name');
  if (!name) throw missing(d, 'name', 'the domain needs a <name>');
  out.name = textOf(origins, name, 'name');
  const uuid = child(d, 'uuid');
  if (uuid) {
    // libvirt reads 32 hex digits with dashes anywhere (virUUIDParse) and writes them 8-4-4-4-12.
    const raw = textOf(origins, uuid, 'uuid');
    const digits = raw.trim().replaceAll('-', '');
    out.uuid = /^[0-9a-fA-F]{32}$/.test(digits)
      ? digits.toLowerCase().replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, '$1-$2-$3-$4-$5')
      : raw;
  }
  for (const key of ['title', 'description'] as const) {
    const el = child(d, key);
    if (el) out[key] = textOf(origins, el, key);
  }
  const metadata = child(d, 'metadata');
  if (metadata) out.metadata = parseMetadata(origins, metadata);

  parseMemory(origins, d, out);

  /** Maps the child `key`, when present, to the field of the same name. */
  const optional = (key: string, parse: (origins: Origins, el: XmlElement) => Obj): void => {
    const el = child(d, key);
    if (el) out[key] = parse(origins, el);
  };
  optional('vcpu', parseVcpu);
  optional('cpu', parseCpu);
  const cells = (out.cpu as Obj | undefined)?.numa as Obj[] | undefined;
  optional('os', parseOs);
  out.features = parseFeatures(origins, d, child(d, 'features'));
  optional('clock', parseClock);
  optional('pm', parsePm);
  optional('sysinfo', parseSysinfo);
  // libvirt: a document without <uuid> takes the SMBIOS system uuid (KubeVirt writes only that).
  const smbiosUuid = ((out.sysinfo as Obj | undefined)?.system as Obj | undefined)?.uuid;
  if (out.uuid === undefined && typeof smbiosUuid === 'string') {
    const digits = smbiosUuid.trim().replaceAll('-', '');
    if (/^[0-9a-fA-F]{32}$/.test(digits)) {
      out.uuid = digits.toLowerCase().replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, '$1-$2-$3-$4-$5');
    }
  }
  const iothreads = child(d, 'iothreads');
  if (iothreads) {
    check(iothreads, { text: true });
    origins.note('iothreads', iothreads);
    out.iothreads = parseUint(iothreads, iothreads.text, '<iothreads>');
  }
  optional('cputune', parseCputune);
  optional('memoryBacking', parseMemoryBacking);
  optional('memtune', parseMemtune);
  optional('numatune', parseNumatune);
  const lifecycle = [
    ['on_poweroff', 'onPoweroff', ['destroy', 'restart'], ['preserve', 'rename-restart']],
    ['on_reboot', 'onReboot', ['restart', 'destroy'], ['preserve', 'rename-restart']],
    [
      'on_crash',
      'onCrash',
      ['destroy', 'restart', 'preserve', 'coredump-destroy', 'coredump-restart'],
      // libvirt's QEMU driver refuses it as well: renaming a running domain is libxl's.
      ['rename-restart'],
    ],
  ] as const;
  for (const [tag, field, supported, known] of lifecycle) {
    const el = child(d, tag);
    if (!el) continue;
    check(el, { text: true });
    origins.note(field, el);
    out[field] = choice(el, el.text, `<${tag}>`, supported, known);
  }
  const devices = child(d, 'devices');
  if (devices) parseDevices(origins, devices, out);
  // libvirt (virDomainDefPostParseMemory): with NUMA cells the domain's memory is theirs plus the
  // memory devices', whatever <memory> says.
  if (cells) {
    const devicesKiB = ((out.memoryDevices as Obj[] | undefined) ?? []).reduce(
      (sum, m) => sum + (typeof m.sizeKiB === 'number' ? m.sizeKiB : 0),
      0,
    );
    out.memoryKiB = cells.reduce((sum, c) => sum + (c.memoryKiB as number), 0) + devicesKiB;
  }
  const qemu = child(d, 'qemu:commandline');
  if (qemu) out.qemuCommandline = parseQemuCommandline(origins, qemu);
  return out;
}

function parseQemuCommandline(origins: Origins, el: XmlElement): Obj {
  check(el, { children: ['qemu:arg', 'qemu:env'], repeat: ['qemu:arg', 'qemu:env'] });
  origins.note('qemuCommandline', el);
  const out: Obj = {};
  const args = childrenOf(el, 'qemu:arg');
  if (args.length > 0) {
    out.args = args.map((a, i) => {
      check(a, { attrs: ['value'] });
      origins.note(`qemuCommandline.args.${i}`, a, 'value');
      const value = a.attrs.get('value');
      if (value === undefined) throw invalid(a, `<${a.qname}> needs a value`, 'value');
      return value;
    });
  }
  const env = childrenOf(el, 'qemu:env');
  if (env.length > 0) {
    out.env = env.map((e, i) => {
      check(e, { attrs: ['name', 'value'] });
      origins.note(`qemuCommandline.env.${i}`, e);
      origins.note(`qemuCommandline.env.${i}.name`, e, 'name');
      const name = e.attrs.get('name');
      if (name === undefined) throw invalid(e, `<${e.qname}> needs a name`, 'name');
      return { name, value: e.attrs.get('value') ?? '' };
    });
  }
  return out;
}

function read(xml: string): { input: Obj; origins: Origins } {
  const origins = new Origins();
  return { input: parseDomain(origins, readXmlTree(xml)), origins };
}
/**
 * Parses a libvirt domain XML document into a typed definition and validates it in full.
 *
 * @internal
 */
export function resolveDomainXml(xml: string): DomainDefinition {
  const { input, origins } = read(xml);
  try {
    return resolveDefinition(input);
  } catch (err) {
    throw relocate(err, origins);
  }
}

/**
 * Parses a libvirt domain XML document (the subset virtkit supports) into a typed definition.
 *
 * The result is validated as `defineDomain` would validate it, so it can be passed to
 * `defineDomain` as is; defaults are not applied (see `DomainDefinitionInput`). Note that a
 * document without `<features>` gets `features: { acpi: false, apic: false }`: in libvirt's XML the
 * absence of `<acpi/>` means "no ACPI".
 *
 * @param xml - a libvirt domain XML document, e.g. the output of `virsh dumpxml` or virt-install
 * @returns the typed definition the document describes
 * @throws {@link VirtError} `XML_ERROR` for a document over 1 MiB of UTF-8 (with `details.size`
 * and `details.limit`), for one that is not well-formed (with `details.line` and `details.column`) or holds a malformed or inconsistent value; `CONFIG_UNSUPPORTED` for an
 * element, attribute or value outside the subset virtkit supports. Both name the element or
 * attribute in `details.path`, e.g. `/domain/devices/graphics` or `/domain/devices/disk[2]/driver/@cache`.
 *
 * @public
 */
export function parseDomainXml(xml: string): DomainDefinitionInput {
  const { input, origins } = read(xml);
  try {
    resolveDefinition(input);
  } catch (err) {
    throw relocate(err, origins);
  }
  return input as DomainDefinitionInput;
}

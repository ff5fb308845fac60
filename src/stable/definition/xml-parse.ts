import { ErrorCode, VirtError } from '../errors.js';
import type { DomainDefinition, DomainDefinitionInput } from './schema.js';
import { resolveDefinition } from './validate.js';
import { readXmlTree, type XmlElement } from './xml-tree.js';

/*
 * libvirt domain XML → the typed definition of schema.ts.
 *
 * The parser accepts exactly the subset of libvirt's domain XML that virtkit can honour and rejects
 * everything else. Nothing is dropped silently: every element and attribute of the document is
 * either mapped to a field of the definition, or listed below as accepted-but-ignored, or rejected.
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
 * - `<devices><memballoon model='none'/></devices>`: "no balloon", which is what virtkit does.
 * - `<serial tty='…'>`, `<console tty='…'>` and a pty's `<source path='…'/>`: the pty that a
 *   running domain got, output only; libvirt ignores them when defining.
 * - `<serial><target type='isa-serial'><model name='isa-serial'/></target>` and
 *   `<target port='N'>` when N is the serial's index: the device virtkit always uses.
 * - `<disk><driver name='qemu'>`: the only driver.
 * - A `<console>` whose target is the first serial port (`<target type='serial' port='0'/>`, or
 *   no target) is folded into `<serial>` 0 as libvirt does; without any `<serial>`, it becomes
 *   serial 0. Its type and source must then match that serial's.
 *
 * Typed API ↔ XML decisions:
 * - Features follow libvirt: without `<features>`, or without `<acpi/>` in it, ACPI is off, so a
 *   document without `<features>` parses to `features: { acpi: false, apic: false }`. (The typed
 *   API turns ACPI on when `features` is left out; formatDomainXml writes such a definition as
 *   `<features><acpi/><apic/></features>`, which reads back as `{ acpi: true, apic: true }`.)
 * - An `<interface>` without `<model>` is rejected: libvirt would give it an rtl8139, which virtkit
 *   does not support.
 * - A `<target>` of a disk without `bus` is virtio for a `vd*` name, and rejected otherwise
 *   (libvirt would choose scsi or ide).
 * - A file `<serial>` without `<source path>` logs to the domain's console log, as in the typed API.
 * - `<qemu:env name='X'/>` without a value sets X to the empty string.
 */

/** The namespace of libvirt's QEMU command-line passthrough. @internal */
export const QEMU_NS = 'http://libvirt.org/schemas/domain/qemu/1.0';

interface Origin {
  readonly path: string;
  readonly line: number;
  readonly column: number;
}

type Obj = Record<string, unknown>;

/** Where each field of the typed definition came from, for errors found after the mapping. */
class Origins {
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

function at(el: XmlElement, attr?: string): { path: string; line: number; column: number } {
  return { path: attr ? `${el.path}/@${attr}` : el.path, line: el.line, column: el.column };
}

function invalid(el: XmlElement, message: string, attr?: string): VirtError {
  const where = at(el, attr);
  return new VirtError(ErrorCode.XML_ERROR, `invalid domain XML at ${where.path}: ${message}`, where);
}

function missing(parent: XmlElement, step: string, message: string): VirtError {
  const path = `${parent.path}/${step}`;
  return new VirtError(ErrorCode.XML_ERROR, `invalid domain XML at ${path}: ${message}`, {
    path,
    line: parent.line,
    column: parent.column,
  });
}

function unsupported(el: XmlElement, message: string, attr?: string): VirtError {
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

interface Shape {
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
function check(el: XmlElement, shape: Shape): void {
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

function child(el: XmlElement, key: string): XmlElement | undefined {
  return el.children.find((c) => keyOf(c) === key);
}

function childrenOf(el: XmlElement, key: string): XmlElement[] {
  return el.children.filter((c) => keyOf(c) === key);
}

function parseUint(el: XmlElement, value: string, what: string, attr?: string): number {
  const trimmed = value.trim();
  if (!/^[0-9]+$/.test(trimmed)) {
    throw invalid(el, `${what} must be a non-negative integer, not '${value.slice(0, 40)}'`, attr);
  }
  const n = Number(trimmed);
  if (!Number.isSafeInteger(n)) throw invalid(el, `${what} ${trimmed} is too large`, attr);
  return n;
}

function intAttr(el: XmlElement, name: string): number | undefined {
  const value = el.attrs.get(name);
  return value === undefined ? undefined : parseUint(el, value, `the attribute ${name}`, name);
}

/**
 * A value out of a fixed set: `supported` maps, `known` are libvirt values virtkit does not
 * support (CONFIG_UNSUPPORTED); anything else is malformed (XML_ERROR).
 */
function choice<T extends string>(
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
function ignoredAttr(el: XmlElement, name: string, harmless: readonly string[]): void {
  const value = el.attrs.get(name);
  if (value !== undefined && !harmless.includes(value)) {
    throw unsupported(el, `${name}='${value.slice(0, 40)}' on <${el.qname}>`, name);
  }
}

/** Bytes per unit, with libvirt's rules: case-insensitive, `KB` is 1000, `k` and `KiB` are 1024. */
function unitBytes(unit: string): bigint | undefined {
  const u = unit.toLowerCase();
  if (u === 'b' || u === 'byte' || u === 'bytes') return 1n;
  const m = /^([kmgtpe])(ib|b)?$/.exec(u);
  if (!m) return undefined;
  const power = BigInt('kmgtpe'.indexOf(m[1] as string) + 1);
  return (m[2] === 'b' ? 1000n : 1024n) ** power;
}

/** A size element (`<memory unit='MiB'>512</memory>`) in KiB. */
function sizeKiB(el: XmlElement): number {
  const unit = el.attrs.get('unit') ?? 'KiB';
  const scale = unitBytes(unit);
  if (scale === undefined) {
    throw invalid(
      el,
      `unknown unit '${unit.slice(0, 20)}'; use b, KiB, MiB, GiB, TiB, KB, MB, GB or TB`,
      'unit',
    );
  }
  const text = el.text.trim();
  if (!/^[0-9]+$/.test(text)) {
    throw invalid(el, `<${el.qname}> must hold a non-negative integer, not '${el.text.slice(0, 40)}'`);
  }
  const bytes = BigInt(text) * scale;
  if (bytes % 1024n !== 0n) {
    throw invalid(el, `${text} ${unit} is not a whole number of KiB`);
  }
  const kib = bytes / 1024n;
  if (kib > BigInt(Number.MAX_SAFE_INTEGER)) throw invalid(el, `${text} ${unit} is too large`);
  return Number(kib);
}

function set(obj: Obj, key: string, value: unknown): void {
  if (value !== undefined) obj[key] = value;
}

const DOMAIN_CHILDREN = [
  'name',
  'uuid',
  'title',
  'description',
  'memory',
  'currentMemory',
  'maxMemory',
  'vcpu',
  'cpu',
  'os',
  'features',
  'clock',
  'iothreads',
  'cputune',
  'memoryBacking',
  'memtune',
  'on_poweroff',
  'on_reboot',
  'on_crash',
  'devices',
  'qemu:commandline',
] as const;

const DOMAIN_TYPES = ['xen', 'lxc', 'kqemu', 'hvf', 'vz', 'hyperv', 'bhyve', 'test', 'vmware', 'openvz'];
const SCHEDULERS = ['fifo', 'rr', 'batch', 'idle', 'other'] as const;

class Mapper {
  readonly origins = new Origins();

  domain(d: XmlElement): Obj {
    if (d.ns !== '' || d.local !== 'domain') {
      throw invalid(d, `expected a libvirt <domain> document, found <${d.qname}>`);
    }
    check(d, { attrs: ['type', 'id'], children: DOMAIN_CHILDREN });
    this.origins.note('', d);
    const out: Obj = {};
    const type = d.attrs.get('type');
    if (type === undefined) throw invalid(d, "<domain> needs a type, 'kvm' or 'qemu'", 'type');
    out.type = choice(d, type, 'the domain type', ['kvm', 'qemu'], DOMAIN_TYPES, 'type');
    const id = d.attrs.get('id');
    if (id !== undefined) parseUint(d, id, 'the attribute id', 'id');

    const name = child(d, 'name');
    if (!name) throw missing(d, 'name', 'the domain needs a <name>');
    out.name = this.text(name, 'name');
    const uuid = child(d, 'uuid');
    if (uuid) {
      const raw = this.text(uuid, 'uuid');
      out.uuid = /^[0-9a-fA-F]{32}$/.test(raw)
        ? raw.replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, '$1-$2-$3-$4-$5')
        : raw;
    }
    for (const key of ['title', 'description'] as const) {
      const el = child(d, key);
      if (el) out[key] = this.text(el, key);
    }

    const memory = child(d, 'memory');
    if (!memory) throw missing(d, 'memory', 'the domain needs a <memory> size');
    out.memoryKiB = this.size(memory, 'memoryKiB');
    const current = child(d, 'currentMemory');
    if (current) out.currentMemoryKiB = this.size(current, 'currentMemoryKiB');
    const max = child(d, 'maxMemory');
    if (max) {
      check(max, { attrs: ['unit', 'slots'], text: true });
      this.origins.note('maxMemory', max);
      this.origins.note('maxMemory.slots', max, 'slots');
      const maxMemory: Obj = { kib: sizeKiB(max) };
      set(maxMemory, 'slots', intAttr(max, 'slots'));
      out.maxMemory = maxMemory;
    }

    const vcpu = child(d, 'vcpu');
    if (vcpu) out.vcpu = this.vcpu(vcpu);
    const cpu = child(d, 'cpu');
    if (cpu) out.cpu = this.cpu(cpu);
    const os = child(d, 'os');
    if (os) out.os = this.os(os);
    out.features = this.features(d, child(d, 'features'));
    const clock = child(d, 'clock');
    if (clock) {
      check(clock, { attrs: ['offset'] });
      this.origins.note('clock', clock);
      this.origins.note('clock.offset', clock, 'offset');
      const offset = clock.attrs.get('offset');
      out.clock =
        offset === undefined
          ? {}
          : {
              offset: choice(
                clock,
                offset,
                'the clock offset',
                ['utc', 'localtime'],
                ['timezone', 'variable', 'absolute'],
                'offset',
              ),
            };
    }
    const iothreads = child(d, 'iothreads');
    if (iothreads) {
      check(iothreads, { text: true });
      this.origins.note('iothreads', iothreads);
      out.iothreads = parseUint(iothreads, iothreads.text, '<iothreads>');
    }
    const cputune = child(d, 'cputune');
    if (cputune) out.cputune = this.cputune(cputune);
    const backing = child(d, 'memoryBacking');
    if (backing) {
      check(backing, { children: ['locked', 'hugepages'] });
      this.origins.note('memoryBacking', backing);
      const out2: Obj = {};
      for (const key of ['locked', 'hugepages'] as const) {
        const el = child(backing, key);
        if (el) {
          check(el, {});
          out2[key] = true;
        }
      }
      out.memoryBacking = out2;
    }
    const memtune = child(d, 'memtune');
    if (memtune) {
      check(memtune, { children: ['hard_limit'] });
      this.origins.note('memtune', memtune);
      const hard = child(memtune, 'hard_limit');
      out.memtune = hard ? { hardLimitKiB: this.size(hard, 'memtune.hardLimitKiB') } : {};
    }
    const lifecycle = [
      ['on_poweroff', 'onPoweroff', ['destroy', 'restart'], ['preserve', 'rename-restart']],
      ['on_reboot', 'onReboot', ['restart', 'destroy'], ['preserve', 'rename-restart']],
      [
        'on_crash',
        'onCrash',
        ['destroy'],
        ['restart', 'preserve', 'rename-restart', 'coredump-destroy', 'coredump-restart'],
      ],
    ] as const;
    for (const [tag, field, supported, known] of lifecycle) {
      const el = child(d, tag);
      if (!el) continue;
      check(el, { text: true });
      this.origins.note(field, el);
      out[field] = choice(el, el.text, `<${tag}>`, supported, known);
    }
    const devices = child(d, 'devices');
    if (devices) this.devices(devices, out);
    const qemu = child(d, 'qemu:commandline');
    if (qemu) out.qemuCommandline = this.qemuCommandline(qemu);
    return out;
  }

  text(el: XmlElement, field: string): string {
    check(el, { text: true });
    this.origins.note(field, el);
    return el.text;
  }

  size(el: XmlElement, field: string): number {
    check(el, { attrs: ['unit'], text: true });
    this.origins.note(field, el);
    return sizeKiB(el);
  }

  vcpu(el: XmlElement): Obj {
    check(el, { attrs: ['placement', 'current'], text: true });
    ignoredAttr(el, 'placement', ['static']);
    this.origins.note('vcpu', el);
    this.origins.note('vcpu.current', el, 'current');
    const out: Obj = { count: parseUint(el, el.text, '<vcpu>') };
    set(out, 'current', intAttr(el, 'current'));
    return out;
  }

  cpu(el: XmlElement): Obj {
    check(el, {
      attrs: ['mode', 'check', 'match', 'migratable'],
      children: ['model', 'topology', 'feature'],
      repeat: ['feature'],
    });
    this.origins.note('cpu', el);
    ignoredAttr(el, 'check', ['none', 'partial']);
    ignoredAttr(el, 'match', ['exact']);
    ignoredAttr(el, 'migratable', ['on']);
    const out: Obj = {};
    const mode = el.attrs.get('mode');
    if (mode !== undefined) {
      this.origins.note('cpu.mode', el, 'mode');
      out.mode = choice(
        el,
        mode,
        'the CPU mode',
        ['host-passthrough', 'host-model', 'custom'],
        ['maximum'],
        'mode',
      );
    }
    const model = child(el, 'model');
    if (model) {
      check(model, { attrs: ['fallback'], text: true });
      ignoredAttr(model, 'fallback', ['allow', 'forbid']);
      this.origins.note('cpu.model', model);
      out.model = model.text;
    }
    const topo = child(el, 'topology');
    if (topo) {
      check(topo, { attrs: ['sockets', 'dies', 'cores', 'threads'] });
      this.origins.note('cpu.topology', topo);
      const t: Obj = {};
      for (const key of ['sockets', 'dies', 'cores', 'threads'] as const) {
        this.origins.note(`cpu.topology.${key}`, topo, key);
        set(t, key, intAttr(topo, key));
      }
      out.topology = t;
    }
    const features = childrenOf(el, 'feature');
    if (features.length > 0) {
      out.features = features.map((f, i) => {
        check(f, { attrs: ['policy', 'name'] });
        this.origins.note(`cpu.features.${i}.policy`, f, 'policy');
        this.origins.note(`cpu.features.${i}.name`, f, 'name');
        const feature: Obj = {};
        const policy = f.attrs.get('policy');
        if (policy !== undefined) {
          set(
            feature,
            'policy',
            choice(
              f,
              policy,
              'the CPU feature policy',
              ['require', 'disable'],
              ['force', 'optional', 'forbid'],
              'policy',
            ),
          );
        }
        set(feature, 'name', f.attrs.get('name'));
        return feature;
      });
    }
    return out;
  }

  os(el: XmlElement): Obj {
    check(el, { children: ['type', 'kernel', 'initrd', 'cmdline', 'boot'], repeat: ['boot'] });
    this.origins.note('os', el);
    const out: Obj = {};
    const type = child(el, 'type');
    if (type) {
      check(type, { attrs: ['arch', 'machine'], text: true });
      choice(type, type.text, 'the OS type', ['hvm'], ['xen', 'linux', 'exe', 'xenpvh']);
      const arch = type.attrs.get('arch');
      if (arch !== undefined) {
        this.origins.note('os.arch', type, 'arch');
        out.arch = choice(type, arch, 'the architecture', ['x86_64'], 'any', 'arch');
      }
      const machine = type.attrs.get('machine');
      if (machine !== undefined) {
        this.origins.note('os.machine', type, 'machine');
        out.machine = machine;
      }
    }
    for (const key of ['kernel', 'initrd', 'cmdline'] as const) {
      const e = child(el, key);
      if (e) out[key] = this.text(e, `os.${key}`);
    }
    const boots = childrenOf(el, 'boot');
    if (boots.length > 0) {
      out.boot = boots.map((b, i) => {
        check(b, { attrs: ['dev'] });
        this.origins.note(`os.boot.${i}`, b, 'dev');
        const dev = b.attrs.get('dev');
        if (dev === undefined) throw invalid(b, '<boot> needs a dev', 'dev');
        return choice(b, dev, 'the boot device', ['hd', 'cdrom', 'network'], ['fd'], 'dev');
      });
    }
    return out;
  }

  features(d: XmlElement, el: XmlElement | undefined): Obj {
    if (!el) {
      this.origins.noteMissing('features', d, 'features');
      return { acpi: false, apic: false };
    }
    check(el, { children: ['acpi', 'apic', 'pae'] });
    this.origins.note('features', el);
    for (const c of el.children) check(c, {});
    return { acpi: child(el, 'acpi') !== undefined, apic: child(el, 'apic') !== undefined };
  }

  cputune(el: XmlElement): Obj {
    const kinds = ['vcpupin', 'emulatorpin', 'iothreadpin', 'vcpusched', 'iothreadsched'];
    check(el, { children: kinds, repeat: ['vcpupin', 'iothreadpin', 'vcpusched', 'iothreadsched'] });
    this.origins.note('cputune', el);
    const out: Obj = {};
    const pins = childrenOf(el, 'vcpupin');
    if (pins.length > 0) {
      out.vcpupin = pins.map((p, i) => {
        check(p, { attrs: ['vcpu', 'cpuset'] });
        this.origins.note(`cputune.vcpupin.${i}`, p);
        this.origins.note(`cputune.vcpupin.${i}.vcpu`, p, 'vcpu');
        this.origins.note(`cputune.vcpupin.${i}.cpuset`, p, 'cpuset');
        const pin: Obj = {};
        set(pin, 'vcpu', intAttr(p, 'vcpu'));
        set(pin, 'cpuset', p.attrs.get('cpuset'));
        return pin;
      });
    }
    const emu = child(el, 'emulatorpin');
    if (emu) {
      check(emu, { attrs: ['cpuset'] });
      this.origins.note('cputune.emulatorpin', emu, 'cpuset');
      const pin: Obj = {};
      set(pin, 'cpuset', emu.attrs.get('cpuset'));
      out.emulatorpin = pin;
    }
    const ioPins = childrenOf(el, 'iothreadpin');
    if (ioPins.length > 0) {
      out.iothreadpin = ioPins.map((p, i) => {
        check(p, { attrs: ['iothread', 'cpuset'] });
        this.origins.note(`cputune.iothreadpin.${i}`, p);
        this.origins.note(`cputune.iothreadpin.${i}.iothread`, p, 'iothread');
        this.origins.note(`cputune.iothreadpin.${i}.cpuset`, p, 'cpuset');
        const pin: Obj = {};
        set(pin, 'iothread', intAttr(p, 'iothread'));
        set(pin, 'cpuset', p.attrs.get('cpuset'));
        return pin;
      });
    }
    for (const [tag, idsAttr] of [
      ['vcpusched', 'vcpus'],
      ['iothreadsched', 'iothreads'],
    ] as const) {
      const entries = childrenOf(el, tag);
      if (entries.length === 0) continue;
      out[tag] = entries.map((s, i) => {
        check(s, { attrs: [idsAttr, 'scheduler', 'priority'] });
        const field = `cputune.${tag}.${i}`;
        this.origins.note(field, s);
        this.origins.note(`${field}.ids`, s, idsAttr);
        this.origins.note(`${field}.scheduler`, s, 'scheduler');
        this.origins.note(`${field}.priority`, s, 'priority');
        const entry: Obj = {};
        set(entry, 'ids', s.attrs.get(idsAttr));
        const scheduler = s.attrs.get('scheduler');
        if (scheduler !== undefined) {
          entry.scheduler = choice(s, scheduler, 'the scheduler', SCHEDULERS, [], 'scheduler');
        }
        set(entry, 'priority', intAttr(s, 'priority'));
        return entry;
      });
    }
    return out;
  }

  devices(el: XmlElement, out: Obj): void {
    check(el, {
      children: ['emulator', 'disk', 'interface', 'serial', 'console', 'memballoon'],
      repeat: ['disk', 'interface', 'serial', 'console'],
    });
    for (const field of ['disks', 'interfaces', 'serials']) this.origins.note(field, el);
    const emulator = child(el, 'emulator');
    if (emulator) out.emulator = this.text(emulator, 'emulator');
    const disks = childrenOf(el, 'disk');
    if (disks.length > 0) out.disks = disks.map((disk, i) => this.disk(disk, i));
    const nics = childrenOf(el, 'interface');
    if (nics.length > 0) out.interfaces = nics.map((nic, i) => this.nic(nic, i));
    const serials = childrenOf(el, 'serial').map((s, i) => this.serial(s, i));
    const [console, second] = childrenOf(el, 'console');
    if (second) throw unsupported(second, 'a second <console>');
    if (console) {
      // Without a serial port, the console becomes serial 0 (as libvirt does).
      const folded = this.console(
        console,
        serials[0]?.source,
        serials.length === 0 ? 'serials.0' : 'console',
      );
      if (serials.length === 0) serials.push({ source: folded, el: console });
    }
    if (serials.length > 0) {
      serials.forEach((s, i) => {
        this.origins.note(`serials.${i}`, s.el);
      });
      out.serials = serials.map((s) => s.source);
    }
    const balloon = child(el, 'memballoon');
    if (balloon) {
      check(balloon, { attrs: ['model'] });
      const model = balloon.attrs.get('model');
      if (model !== 'none') {
        throw unsupported(balloon, `a memory balloon (model '${model ?? ''}')`, 'model');
      }
    }
  }

  disk(el: XmlElement, i: number): Obj {
    check(el, {
      attrs: ['type', 'device'],
      children: ['driver', 'source', 'target', 'readonly', 'serial', 'boot', 'alias'],
    });
    const field = `disks.${i}`;
    this.origins.note(field, el);
    const out: Obj = {};
    const type = el.attrs.get('type');
    this.origins.note(`${field}.type`, el, 'type');
    if (type === undefined) throw invalid(el, "<disk> needs a type, 'file' or 'block'", 'type');
    out.type = choice(
      el,
      type,
      'the disk type',
      ['file', 'block'],
      ['dir', 'network', 'volume', 'nvme', 'vhostuser', 'vhostvdpa'],
      'type',
    );
    const device = el.attrs.get('device');
    if (device !== undefined) {
      out.device = choice(el, device, 'the disk device', ['disk', 'cdrom'], ['floppy', 'lun'], 'device');
    }
    const driver = child(el, 'driver');
    if (driver) {
      check(driver, { attrs: ['name', 'type'] });
      ignoredAttr(driver, 'name', ['qemu']);
      this.origins.note(`${field}.driver`, driver, 'type');
      const format = driver.attrs.get('type');
      out.driver =
        format === undefined
          ? {}
          : { type: choice(driver, format, 'the disk format', ['raw', 'qcow2'], 'any', 'type') };
    }
    const source = child(el, 'source');
    const sourceAttr = out.type === 'file' ? 'file' : 'dev';
    if (source) {
      check(source, { attrs: [sourceAttr] });
      this.origins.note(`${field}.source`, source, sourceAttr);
      set(out, 'source', source.attrs.get(sourceAttr));
    } else {
      this.origins.noteMissing(`${field}.source`, el, 'source');
    }
    const target = child(el, 'target');
    if (target) {
      check(target, { attrs: ['dev', 'bus'] });
      this.origins.note(`${field}.target`, target);
      this.origins.note(`${field}.target.dev`, target, 'dev');
      this.origins.note(`${field}.target.bus`, target, 'bus');
      const dev = target.attrs.get('dev');
      const bus = target.attrs.get('bus');
      const t: Obj = {};
      set(t, 'dev', dev);
      if (bus !== undefined) {
        t.bus = choice(
          target,
          bus,
          'the disk bus',
          ['virtio', 'sata'],
          ['ide', 'scsi', 'usb', 'xen', 'sd', 'fdc', 'uml'],
          'bus',
        );
      } else if (dev?.startsWith('vd')) {
        t.bus = 'virtio';
      } else if (dev !== undefined) {
        const where = at(target, 'bus');
        throw new VirtError(
          ErrorCode.CONFIG_UNSUPPORTED,
          `${where.path}: for a disk target '${dev.slice(0, 20)}' without bus, libvirt would choose scsi or ide, which virtkit does not support; add bus='sata' or bus='virtio'`,
          where,
        );
      }
      out.target = t;
    } else {
      this.origins.noteMissing(`${field}.target`, el, 'target');
    }
    const readonly = child(el, 'readonly');
    if (readonly) {
      check(readonly, {});
      out.readonly = true;
    }
    const serial = child(el, 'serial');
    if (serial) out.serial = this.text(serial, `${field}.serial`);
    const boot = child(el, 'boot');
    if (boot) {
      check(boot, { attrs: ['order'] });
      this.origins.note(`${field}.bootOrder`, boot, 'order');
      const order = intAttr(boot, 'order');
      if (order === undefined) throw invalid(boot, '<boot> needs an order', 'order');
      out.bootOrder = order;
    }
    const alias = this.alias(el, field);
    if (alias !== undefined) out.alias = alias;
    return out;
  }

  alias(el: XmlElement, field: string): string | undefined {
    const alias = child(el, 'alias');
    if (!alias) return undefined;
    check(alias, { attrs: ['name'] });
    this.origins.note(`${field}.alias`, alias, 'name');
    const name = alias.attrs.get('name');
    if (name === undefined) throw invalid(alias, '<alias> needs a name', 'name');
    return name;
  }

  nic(el: XmlElement, i: number): Obj {
    const field = `interfaces.${i}`;
    this.origins.note(field, el);
    const type = el.attrs.get('type');
    if (type === undefined) throw invalid(el, "<interface> needs a type, 'ethernet' or 'user'", 'type');
    const kind = choice(
      el,
      type,
      'the interface type',
      ['ethernet', 'user'],
      [
        'network',
        'bridge',
        'direct',
        'hostdev',
        'vhostuser',
        'server',
        'client',
        'mcast',
        'udp',
        'internal',
        'vdpa',
        'null',
        'vds',
      ],
      'type',
    );
    const ethernet = kind === 'ethernet';
    check(el, {
      attrs: ['type'],
      children: ethernet ? ['mac', 'target', 'model', 'driver', 'alias'] : ['mac', 'model', 'alias'],
    });
    const out: Obj = { type: kind };
    const mac = child(el, 'mac');
    if (mac) {
      check(mac, { attrs: ['address'] });
      this.origins.note(`${field}.mac`, mac, 'address');
      const address = mac.attrs.get('address');
      if (address === undefined) throw invalid(mac, '<mac> needs an address', 'address');
      out.mac = address;
    }
    const target = child(el, 'target');
    if (target) {
      check(target, { attrs: ['dev', 'managed'] });
      this.origins.note(`${field}.target`, target);
      this.origins.note(`${field}.target.dev`, target, 'dev');
      const t: Obj = {};
      set(t, 'dev', target.attrs.get('dev'));
      const managed = target.attrs.get('managed');
      if (managed !== undefined) {
        t.managed = choice(target, managed, 'managed', ['yes', 'no'], [], 'managed') === 'yes';
      }
      out.target = t;
    }
    const model = child(el, 'model');
    if (!model) {
      throw new VirtError(
        ErrorCode.CONFIG_UNSUPPORTED,
        `${el.path}/model: an interface without <model> is an rtl8139 in libvirt, which virtkit does not support; add <model type='virtio'/>`,
        { path: `${el.path}/model`, line: el.line, column: el.column },
      );
    }
    check(model, { attrs: ['type'] });
    this.origins.note(`${field}.model`, model, 'type');
    const modelType = model.attrs.get('type');
    if (modelType === undefined) throw invalid(model, '<model> needs a type', 'type');
    out.model = choice(model, modelType, 'the NIC model', ['virtio', 'e1000'], 'any', 'type');
    const driver = child(el, 'driver');
    if (driver) {
      check(driver, { attrs: ['queues'] });
      this.origins.note(`${field}.queues`, driver, 'queues');
      set(out, 'queues', intAttr(driver, 'queues'));
    }
    const alias = this.alias(el, field);
    if (alias !== undefined) out.alias = alias;
    return out;
  }

  /** The type and source of a `<serial>` or `<console>`. */
  charSource(el: XmlElement, field: string, targetShape: Shape): { source: Obj; target?: XmlElement } {
    const type = el.attrs.get('type');
    if (type === undefined) throw invalid(el, `<${el.qname}> needs a type, 'file' or 'pty'`, 'type');
    const kind = choice(
      el,
      type,
      `the ${el.local} type`,
      ['file', 'pty'],
      [
        'null',
        'vc',
        'dev',
        'pipe',
        'stdio',
        'udp',
        'tcp',
        'unix',
        'spicevmc',
        'spiceport',
        'nmdm',
        'qemu-vdagent',
        'dbus',
      ],
      'type',
    );
    check(el, { attrs: ['type', 'tty'], children: ['source', 'target'] });
    const source: Obj = { type: kind };
    const src = child(el, 'source');
    if (src) {
      check(src, { attrs: ['path'] });
      this.origins.note(`${field}.path`, src, 'path');
      // A pty's path is the one a running domain got: output only.
      if (kind === 'file') set(source, 'path', src.attrs.get('path'));
    }
    const target = child(el, 'target');
    if (target) check(target, targetShape);
    return target ? { source, target } : { source };
  }

  serial(el: XmlElement, i: number): { source: Obj; el: XmlElement } {
    const field = `serials.${i}`;
    this.origins.note(field, el);
    const { source, target } = this.charSource(el, field, { attrs: ['port', 'type'], children: ['model'] });
    if (target) {
      ignoredAttr(target, 'type', ['isa-serial']);
      const port = intAttr(target, 'port');
      if (port !== undefined && port !== i) {
        throw unsupported(
          target,
          `port ${port} for serial ${i} (virtkit numbers serial ports in document order)`,
          'port',
        );
      }
      const model = child(target, 'model');
      if (model) {
        check(model, { attrs: ['name'] });
        ignoredAttr(model, 'name', ['isa-serial']);
      }
    }
    return { source, el };
  }

  /** Checks that a console is an alias of serial 0 (`first`); returns its source. */
  console(el: XmlElement, first: Obj | undefined, field: string): Obj {
    const { source, target } = this.charSource(el, field, { attrs: ['type', 'port'] });
    if (target) {
      const type = target.attrs.get('type');
      if (type !== undefined) {
        choice(
          target,
          type,
          'the console target type',
          ['serial'],
          ['virtio', 'xen', 'uml', 'lxc', 'openvz', 'sclp', 'sclplm'],
          'type',
        );
      }
      const port = intAttr(target, 'port');
      if (port !== undefined && port !== 0) {
        throw unsupported(target, `a console on serial port ${port} (only the first serial port)`, 'port');
      }
    }
    if (first) {
      const samePath = source.path === undefined || source.path === first.path;
      if (source.type !== first.type || !samePath) {
        throw unsupported(
          el,
          'a <console> that differs from the first <serial> (libvirt makes it an alias of that serial port: give it the same type and source)',
        );
      }
    }
    return source;
  }

  qemuCommandline(el: XmlElement): Obj {
    check(el, { children: ['qemu:arg', 'qemu:env'], repeat: ['qemu:arg', 'qemu:env'] });
    this.origins.note('qemuCommandline', el);
    const out: Obj = {};
    const args = childrenOf(el, 'qemu:arg');
    if (args.length > 0) {
      out.args = args.map((a, i) => {
        check(a, { attrs: ['value'] });
        this.origins.note(`qemuCommandline.args.${i}`, a, 'value');
        const value = a.attrs.get('value');
        if (value === undefined) throw invalid(a, `<${a.qname}> needs a value`, 'value');
        return value;
      });
    }
    const env = childrenOf(el, 'qemu:env');
    if (env.length > 0) {
      out.env = env.map((e, i) => {
        check(e, { attrs: ['name', 'value'] });
        this.origins.note(`qemuCommandline.env.${i}`, e);
        this.origins.note(`qemuCommandline.env.${i}.name`, e, 'name');
        const name = e.attrs.get('name');
        if (name === undefined) throw invalid(e, `<${e.qname}> needs a name`, 'name');
        return { name, value: e.attrs.get('value') ?? '' };
      });
    }
    return out;
  }
}

/** Rewrites an error of the typed validation to name the XML element or attribute. */
function relocate(err: unknown, origins: Origins): unknown {
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

function read(xml: string): { input: Obj; origins: Origins } {
  const root = readXmlTree(xml);
  const mapper = new Mapper();
  return { input: mapper.domain(root), origins: mapper.origins };
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
 * @throws {@link VirtError} `XML_ERROR` for a document that is not well-formed (with `details.line`
 * and `details.column`) or holds a malformed or inconsistent value; `CONFIG_UNSUPPORTED` for an
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

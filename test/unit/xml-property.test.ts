import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { XMLParser } from 'fast-xml-parser';
import { describe, expect, it } from 'vitest';
import type { DomainDefinitionInput } from '../../src/stable/definition/schema.js';
import { resolveDefinition } from '../../src/stable/definition/validate.js';
import { xmlCanonical } from '../../src/stable/definition/xml.js';
import { ErrorCode, formatDomainXml, parseDomainXml, VirtError } from '../../src/stable/index.js';
import { formatCpuset } from '../../src/util/cpuset.js';

/* ---------- (a) generated valid definitions round-trip ---------- */

/** Characters XML can carry, biased towards the ones that need escaping. */
const xmlChar = fc.oneof(
  { weight: 3, arbitrary: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)) },
  fc.constantFrom('&', '<', '>', "'", '"', ';', '#', ']]>', '&amp;', ' ', '\t', '\n', '\r', 'é', '日', '😀'),
);
const xmlText = fc.string({ unit: xmlChar, maxLength: 30 });
const absPath = fc.string({ unit: xmlChar, maxLength: 20 }).map((s) => `/${s}`);
const ident = fc.stringMatching(/^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,15}$/);
const mac = fc
  .array(fc.integer({ min: 0, max: 255 }), { minLength: 6, maxLength: 6 })
  .map((b) => b.map((x) => x.toString(16).padStart(2, '0')).join(':'));

/** A cpuset naming exactly the given ids, in one of the forms libvirt users write. */
function cpusetOf(ids: readonly number[], variant: number): string {
  const base = formatCpuset(ids);
  if (variant === 1) return ids.join(', ');
  if (variant === 2 && ids.length > 0) {
    const max = Math.max(...ids);
    const gaps = Array.from({ length: max + 1 }, (_, i) => i).filter((i) => !ids.includes(i));
    return [`0-${max + 1}`, ...gaps.map((g) => `^${g}`), `^${max + 1}`].join(',');
  }
  return base;
}

/**
 * The properties stop at the first counterexample (`endOnFailure`): shrinking a definition built
 * with fc.gen() takes thousands of reruns, minutes rather than seconds.
 */
const RUN = { endOnFailure: true } as const;

/** Removes keys whose value is undefined, so toStrictEqual compares what matters. */
function compact<T>(value: T): T {
  if (Array.isArray(value)) return value.map(compact) as T;
  if (value && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value)
        .filter(([, v]) => v !== undefined)
        .map(([k, v]) => [k, compact(v)]),
    ) as T;
  }
  return value;
}

const pciAddressArb = fc.record(
  {
    type: fc.constant('pci' as const),
    domain: fc.constant(0 as const),
    bus: fc.integer({ min: 0, max: 255 }),
    slot: fc.integer({ min: 0, max: 31 }),
    function: fc.integer({ min: 0, max: 7 }),
    multifunction: fc.boolean(),
  },
  { requiredKeys: ['type', 'bus', 'slot'] },
);
const driveAddressArb = fc.record(
  {
    type: fc.constant('drive' as const),
    controller: fc.integer({ min: 0, max: 255 }),
    bus: fc.integer({ min: 0, max: 255 }),
    target: fc.integer({ min: 0, max: 255 }),
    unit: fc.integer({ min: 0, max: 255 }),
  },
  { requiredKeys: ['type', 'unit'] },
);
const controllerArb = fc.oneof(
  fc.record(
    {
      type: fc.constant('pci' as const),
      index: fc.integer({ min: 0, max: 255 }),
      model: fc.constantFrom('pci-root', 'pcie-root', 'pcie-root-port'),
      target: fc.record(
        { chassis: fc.integer({ min: 0, max: 255 }), port: fc.integer({ min: 0, max: 255 }) },
        { requiredKeys: [] },
      ),
      alias: xmlText,
      address: pciAddressArb,
    },
    { requiredKeys: ['type', 'model'] },
  ),
  fc.record(
    {
      type: fc.constant('sata' as const),
      index: fc.integer({ min: 0, max: 255 }),
      alias: xmlText,
      address: pciAddressArb,
    },
    { requiredKeys: ['type'] },
  ),
  fc.record(
    {
      type: fc.constant('usb' as const),
      index: fc.integer({ min: 0, max: 255 }),
      model: fc.constantFrom('none', 'piix3-uhci', 'qemu-xhci'),
      alias: xmlText,
      address: pciAddressArb,
    },
    { requiredKeys: ['type', 'model'] },
  ),
);

/** Valid typed definitions covering every field of the schema, respecting its semantic rules. */
const definitionArb: fc.Arbitrary<DomainDefinitionInput> = fc.gen().map((g) => {
  const maybe = <T>(arb: fc.Arbitrary<T>): T | undefined => g(() => fc.option(arb, { nil: undefined }));
  const bool = () => g(fc.boolean);
  const int = (min: number, max: number) => g(fc.integer, { min, max });
  const subset = (ids: number[]) => g(() => fc.subarray(ids, { minLength: 1 })).sort((a, b) => a - b);

  const topology = bool()
    ? {
        sockets: int(1, 4),
        dies: maybe(fc.integer({ min: 1, max: 2 })),
        cores: int(1, 4),
        threads: int(1, 2),
      }
    : undefined;
  const explicitVcpu = topology !== undefined || bool();
  const count = topology
    ? topology.sockets * (topology.dies ?? 1) * topology.cores * topology.threads
    : explicitVcpu
      ? int(1, 255)
      : 1;
  const vcpu = explicitVcpu ? { count, current: bool() ? int(1, count) : undefined } : undefined;
  const memoryKiB = int(1, 2 ** 40);
  const iothreads = maybe(fc.integer({ min: 0, max: 6 }));
  const vcpuIds = Array.from({ length: Math.min(count, 64) }, (_, i) => i);
  const ioIds = Array.from({ length: iothreads ?? 0 }, (_, i) => i + 1);
  const cpusetArb = fc
    .tuple(fc.uniqueArray(fc.integer({ min: 0, max: 300 }), { minLength: 1, maxLength: 5 }), fc.nat(2))
    .map(([ids, v]) => cpusetOf(ids, v));
  const sched = (ids: number[]) => {
    const scheduler = g(fc.constantFrom, 'fifo', 'rr', 'batch', 'idle', 'other');
    const realtime = scheduler === 'fifo' || scheduler === 'rr';
    return {
      ids: cpusetOf(subset(ids), int(0, 2)),
      scheduler,
      priority: realtime ? int(1, 99) : bool() ? 0 : undefined,
    };
  };
  const kernel = maybe(absPath);
  const devs = g(() => fc.uniqueArray(fc.stringMatching(/^(vd|sd|hd)[a-z]{1,2}$/), { maxLength: 4 }));

  const def: DomainDefinitionInput = {
    name: g(() => ident),
    uuid: maybe(fc.uuid()),
    title: maybe(xmlText),
    description: maybe(xmlText),
    type: g(fc.constantFrom, 'kvm', 'qemu'),
    memoryKiB,
    currentMemoryKiB: bool() ? int(1, memoryKiB) : undefined,
    maxMemory: bool() ? { kib: int(memoryKiB, 2 ** 52), slots: int(1, 256) } : undefined,
    vcpu,
    cpu:
      topology || bool()
        ? {
            mode: maybe(fc.constantFrom('host-passthrough', 'host-model', 'custom')),
            model: maybe(xmlText),
            topology,
          }
        : undefined,
    os: bool()
      ? {
          arch: maybe(fc.constant('x86_64')),
          machine: maybe(fc.string({ unit: xmlChar, minLength: 1, maxLength: 12 })),
          kernel,
          initrd: kernel ? maybe(absPath) : undefined,
          cmdline: kernel ? maybe(xmlText) : undefined,
          boot: maybe(fc.array(fc.constantFrom('hd', 'cdrom', 'network'), { maxLength: 3 })),
        }
      : undefined,
    features: maybe(fc.record({ acpi: fc.boolean(), apic: fc.boolean() }, { requiredKeys: [] })),
    clock: maybe(fc.record({ offset: fc.constantFrom('utc', 'localtime') }, { requiredKeys: [] })),
    iothreads,
    cputune: bool()
      ? {
          vcpupin: maybe(
            fc.array(fc.record({ vcpu: fc.integer({ min: 0, max: count - 1 }), cpuset: cpusetArb }), {
              maxLength: 3,
            }),
          ),
          emulatorpin: maybe(fc.record({ cpuset: cpusetArb })),
          iothreadpin:
            ioIds.length > 0
              ? maybe(
                  fc.array(
                    fc.record({ iothread: fc.integer({ min: 1, max: ioIds.length }), cpuset: cpusetArb }),
                    { maxLength: 3 },
                  ),
                )
              : undefined,
          vcpusched: bool() ? Array.from({ length: int(0, 2) }, () => sched(vcpuIds)) : undefined,
          iothreadsched:
            ioIds.length > 0 && bool() ? Array.from({ length: int(0, 2) }, () => sched(ioIds)) : undefined,
        }
      : undefined,
    memoryBacking: maybe(fc.record({ locked: fc.boolean(), hugepages: fc.boolean() }, { requiredKeys: [] })),
    memtune: maybe(fc.record({ hardLimitKiB: fc.integer({ min: 1, max: 2 ** 52 }) }, { requiredKeys: [] })),
    onPoweroff: maybe(fc.constantFrom('destroy', 'restart')),
    onReboot: maybe(fc.constantFrom('restart', 'destroy')),
    onCrash: maybe(fc.constant('destroy')),
    emulator: maybe(absPath),
    disks: devs.map((dev) => {
      const type = g(fc.constantFrom, 'file', 'block');
      const device = maybe(fc.constantFrom('disk', 'cdrom'));
      const driver = maybe(fc.record({ type: fc.constantFrom('raw', 'qcow2') }, { requiredKeys: [] }));
      const source = g(() => absPath);
      const bus = g(fc.constantFrom, 'virtio', 'sata');
      // A read-only sata disk is refused (QEMU's ide-hd cannot be read-only); a cdrom may be.
      const readonly = bus === 'sata' && device !== 'cdrom' ? undefined : maybe(fc.boolean());
      return {
        type,
        device,
        driver,
        source,
        target: { dev, bus },
        readonly,
        serial: maybe(fc.string({ unit: xmlChar, maxLength: 12 }).filter((v) => v.length <= 36)),
        bootOrder: maybe(fc.integer({ min: 1, max: 20 })),
        alias: maybe(xmlText),
        address: bus === 'virtio' ? maybe(pciAddressArb) : maybe(driveAddressArb),
      };
    }),
    interfaces: g(() =>
      fc.array(
        fc.oneof(
          fc.record(
            {
              type: fc.constant('ethernet' as const),
              mac,
              target: fc.record(
                {
                  dev: fc
                    .string({ unit: xmlChar, minLength: 1, maxLength: 15 })
                    .filter((d) => d.length <= 15),
                  managed: fc.boolean(),
                },
                { requiredKeys: ['dev'] },
              ),
              model: fc.constantFrom('virtio', 'e1000'),
              queues: fc.integer({ min: 1, max: 16 }),
              alias: xmlText,
              address: pciAddressArb,
            },
            { requiredKeys: ['type'] },
          ),
          fc.record(
            {
              type: fc.constant('user' as const),
              mac,
              model: fc.constantFrom('virtio', 'e1000'),
              alias: xmlText,
              address: pciAddressArb,
            },
            { requiredKeys: ['type'] },
          ),
        ),
        { maxLength: 3 },
      ),
    ),
    controllers: g(() => fc.array(controllerArb, { maxLength: 4 })),
    memballoon: maybe(
      fc.record(
        { model: fc.constant('virtio' as const), alias: xmlText, address: pciAddressArb },
        { requiredKeys: ['model'] },
      ),
    ),
    serials: g(() =>
      fc.array(
        fc.oneof(
          fc.record({ type: fc.constant('file' as const), path: absPath }, { requiredKeys: ['type'] }),
          fc.constant({ type: 'pty' as const }),
        ),
        { maxLength: 4 },
      ),
    ),
    qemuCommandline: maybe(
      fc.record(
        {
          args: fc.array(xmlText, { maxLength: 3 }),
          env: fc.array(
            fc.record({ name: fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,8}$/), value: xmlText }),
            {
              maxLength: 2,
            },
          ),
        },
        { requiredKeys: [] },
      ),
    ),
  };
  return compact(def);
});

describe('domain XML round trip (property)', () => {
  it('resolve → format → parse → resolve gives the same definition', () => {
    fc.assert(
      fc.property(definitionArb, (input) => {
        const def = resolveDefinition(input);
        const xml = formatDomainXml(def);
        const back = resolveDefinition(parseDomainXml(xml));
        expect(back).toStrictEqual(xmlCanonical(def));
        // Exact for every definition that has `features` and no empty boot list.
        if (def.features && def.os.boot?.length !== 0) expect(back).toStrictEqual(def);
        // And a fixed point from there on.
        expect(formatDomainXml(back)).toBe(xml);
      }),
      { ...RUN, numRuns: 300 },
    );
  });
});

/* ---------- (b) mutated documents never crash ---------- */

interface El {
  name: string;
  attrs: Array<[string, string]>;
  children: Array<El | string>;
}

const fxp = new XMLParser({
  preserveOrder: true,
  ignoreAttributes: false,
  attributeNamePrefix: '',
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: false,
  ignoreDeclaration: true,
  processEntities: true,
});

function toEl(node: Record<string, unknown>): El {
  const name = Object.keys(node).find((k) => k !== ':@') as string;
  const attrs = Object.entries((node[':@'] ?? {}) as Record<string, string>);
  const children = (node[name] as Array<Record<string, unknown>>).map((c) =>
    typeof c['#text'] === 'string' ? (c['#text'] as string) : toEl(c),
  );
  return { name, attrs, children };
}

const esc = (s: string) =>
  s.replace(
    /[&<>'\r]/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', "'": '&apos;', '\r': '&#13;' })[c] ?? c,
  );

function serialize(el: El): string {
  const attrs = el.attrs.map(([k, v]) => ` ${k}='${esc(v)}'`).join('');
  const inner = el.children.map((c) => (typeof c === 'string' ? esc(c) : serialize(c))).join('');
  return `<${el.name}${attrs}>${inner}</${el.name}>`;
}

function elements(el: El, out: Array<{ el: El; parent: El | undefined }> = [], parent?: El) {
  out.push({ el, parent });
  for (const c of el.children) if (typeof c !== 'string') elements(c, out, el);
  return out;
}

const NAMES = [
  'graphics',
  'disk',
  'interface',
  'serial',
  'console',
  'vcpu',
  'memory',
  'source',
  'target',
  'driver',
  'boot',
  'alias',
  'qemu:arg',
  'qemu:commandline',
  'foo:bar',
  'x',
  'cputune',
  'vcpupin',
  'acpi',
  'features',
];
const ATTRS = [
  'type',
  'unit',
  'dev',
  'bus',
  'file',
  'cache',
  'vcpu',
  'cpuset',
  'port',
  'xmlns',
  'xmlns:qemu',
  'x:y',
];
const JUNK = [
  '',
  ' ',
  '-1',
  '0',
  '1',
  '3',
  '1.5',
  'abc',
  '99999999999999999999999',
  '4096',
  'KiB',
  'MB',
  'yes',
  'no',
  'file',
  'block',
  'virtio',
  'sata',
  'vda',
  'fifo',
  '0-3,^9',
  '/abs/path',
  '😀',
  '&',
  '<x>',
  'http://libvirt.org/schemas/domain/qemu/1.0',
];

type Mutation =
  | { kind: 'delete' | 'duplicate'; at: number }
  | { kind: 'rename'; at: number; name: string }
  | { kind: 'dropAttr' | 'dupAttr'; at: number; attr: number }
  | { kind: 'renameAttr'; at: number; attr: number; name: string }
  | { kind: 'attrValue'; at: number; attr: number; value: string }
  | { kind: 'text'; at: number; value: string }
  | { kind: 'truncateText'; at: number; keep: number }
  | { kind: 'insert'; at: number; name: string; attr: string; value: string };

const pick = <T>(list: readonly T[], i: number): T | undefined =>
  list.length ? list[i % list.length] : undefined;

function mutate(root: El, m: Mutation): void {
  const all = elements(root);
  const target = pick(all, m.at);
  if (!target) return;
  const { el, parent } = target;
  switch (m.kind) {
    case 'delete':
      if (parent) parent.children.splice(parent.children.indexOf(el), 1);
      break;
    case 'duplicate':
      if (parent) parent.children.splice(parent.children.indexOf(el), 0, structuredClone(el));
      break;
    case 'rename':
      el.name = m.name;
      break;
    case 'dropAttr':
      if (el.attrs.length) el.attrs.splice(m.attr % el.attrs.length, 1);
      break;
    case 'dupAttr': {
      const a = pick(el.attrs, m.attr);
      if (a) el.attrs.push([a[0], a[1]]);
      break;
    }
    case 'renameAttr': {
      const a = pick(el.attrs, m.attr);
      if (a) a[0] = m.name;
      break;
    }
    case 'attrValue': {
      const a = pick(el.attrs, m.attr);
      if (a) a[1] = m.value;
      else el.attrs.push(['type', m.value]);
      break;
    }
    case 'text':
      el.children = [m.value, ...el.children.filter((c) => typeof c !== 'string')];
      break;
    case 'truncateText':
      el.children = el.children.map((c) => (typeof c === 'string' ? c.slice(0, m.keep) : c));
      break;
    case 'insert':
      el.children.push({ name: m.name, attrs: [[m.attr, m.value]], children: [] });
      break;
  }
}

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constantFrom('delete' as const, 'duplicate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('rename' as const), at: fc.nat(), name: fc.constantFrom(...NAMES) }),
  fc.record({ kind: fc.constantFrom('dropAttr' as const, 'dupAttr' as const), at: fc.nat(), attr: fc.nat() }),
  fc.record({
    kind: fc.constant('renameAttr' as const),
    at: fc.nat(),
    attr: fc.nat(),
    name: fc.constantFrom(...ATTRS),
  }),
  fc.record({
    kind: fc.constant('attrValue' as const),
    at: fc.nat(),
    attr: fc.nat(),
    value: fc.oneof(fc.constantFrom(...JUNK), fc.string({ maxLength: 8 })),
  }),
  fc.record({
    kind: fc.constant('text' as const),
    at: fc.nat(),
    value: fc.oneof(fc.constantFrom(...JUNK), fc.string({ maxLength: 8 })),
  }),
  fc.record({ kind: fc.constant('truncateText' as const), at: fc.nat(), keep: fc.nat(6) }),
  fc.record({
    kind: fc.constant('insert' as const),
    at: fc.nat(),
    name: fc.constantFrom(...NAMES),
    attr: fc.constantFrom(...ATTRS),
    value: fc.constantFrom(...JUNK),
  }),
);

/** Damage to the text itself: a truncated document, stray characters, a cut-out slice. */
type TextDamage =
  | { kind: 'none' }
  | { kind: 'truncate' | 'cut' | 'insert'; at: number; len: number; junk: string };

const textDamageArb: fc.Arbitrary<TextDamage> = fc.oneof(
  { weight: 3, arbitrary: fc.constant({ kind: 'none' as const }) },
  fc.record({
    kind: fc.constantFrom('truncate' as const, 'cut' as const, 'insert' as const),
    at: fc.nat(),
    len: fc.nat(20),
    junk: fc.oneof(
      fc.constantFrom(
        '<',
        '>',
        '&',
        '&#0;',
        '&#x110000;',
        '&nbsp;',
        '</a>',
        '<!DOCTYPE x>',
        '\u0001',
        ']]>',
        "'",
        '"',
      ),
      fc.string({ maxLength: 5 }),
    ),
  }),
);

function damage(xml: string, d: TextDamage): string {
  if (d.kind === 'none') return xml;
  const at = d.at % (xml.length + 1);
  if (d.kind === 'truncate') return xml.slice(0, at);
  if (d.kind === 'cut') return xml.slice(0, at) + xml.slice(at + d.len);
  return xml.slice(0, at) + d.junk + xml.slice(at);
}

const fixtureDir = join(import.meta.dirname, '../fixtures/xml');
const fixtures = readdirSync(fixtureDir)
  .filter((f) => f.endsWith('.xml'))
  .map((f) => readFileSync(join(fixtureDir, f), 'utf8'));
const seedArb = fc.oneof(
  fc.constantFrom(...fixtures),
  definitionArb.map((input) => formatDomainXml(resolveDefinition(input))),
);

function expectOnlyVirtErrors(xml: string): void {
  let input: DomainDefinitionInput;
  try {
    input = parseDomainXml(xml);
  } catch (err) {
    if (!VirtError.is(err))
      throw new Error(`parseDomainXml threw a non-VirtError: ${String(err)}`, { cause: err });
    expect(typeof err.code).toBe('string');
    expect([ErrorCode.XML_ERROR, ErrorCode.CONFIG_UNSUPPORTED]).toContain(err.code);
    expect(typeof err.message).toBe('string');
    return;
  }
  // Accepted documents resolve and format without a further error, and round-trip.
  const def = resolveDefinition(input);
  const again = resolveDefinition(parseDomainXml(formatDomainXml(def)));
  expect(again).toStrictEqual(xmlCanonical(def));
}

describe('mutated domain XML (property)', () => {
  it('never crashes, hangs or throws anything but a VirtError with a code', () => {
    fc.assert(
      fc.property(
        seedArb,
        fc.array(mutationArb, { minLength: 1, maxLength: 3 }),
        textDamageArb,
        (seed, mutations, textDamage) => {
          const root = toEl(
            (fxp.parse(seed) as Array<Record<string, unknown>>)[0] as Record<string, unknown>,
          );
          for (const m of mutations) mutate(root, m);
          expectOnlyVirtErrors(damage(serialize(root), textDamage));
        },
      ),
      { ...RUN, numRuns: 300 },
    );
  });

  it('raw text damage alone never crashes', () => {
    fc.assert(
      fc.property(seedArb, fc.array(textDamageArb, { minLength: 1, maxLength: 3 }), (seed, damages) => {
        expectOnlyVirtErrors(damages.reduce(damage, seed));
      }),
      { ...RUN, numRuns: 200 },
    );
  });
});

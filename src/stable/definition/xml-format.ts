import type { z } from 'zod';
import { ErrorCode, VirtError } from '../../errors.js';
import { isPciRoot, PCI_CONTROLLER_DEVICE, type PciControllerModel } from './pci-controllers.js';
import type { ControllerDefinition, DiskDefinition, DomainDefinition } from './schema.js';
import type { CharSource } from './schema-chardev.js';
import type { virtioOptions } from './schema-virtio.js';

const pciControllerDevice = (model: PciControllerModel): string | undefined =>
  isPciRoot(model) ? undefined : PCI_CONTROLLER_DEVICE[model as keyof typeof PCI_CONTROLLER_DEVICE];

import { resolveDefinition } from './validate.js';
import { QEMU_NS } from './xml-parse.js';
import { hasIllegalXmlChar } from './xml-tree.js';

/*
 * The typed definition → libvirt domain XML, in the shape `virsh dumpxml` writes: two-space indent,
 * single-quoted attributes, libvirt's element order, sizes in KiB. parseDomainXml reads everything
 * written here back to the same definition, with two equivalences the XML cannot tell apart (see
 * xmlCanonical): `features` left out is written as ACPI and APIC on, and `os.boot: []` as no <boot>.
 */

type AttrValue = string | number | undefined;

interface Node {
  readonly name: string;
  readonly attrs?: ReadonlyArray<readonly [string, AttrValue]>;
  /** Character data; an element has either text or children. */
  readonly text?: string;
  /** Markup written as is (already canonical XML, see xml-metadata.ts). */
  readonly raw?: string;
  readonly children?: ReadonlyArray<Node | undefined | false>;
}

/**
 * The `<source>` (two for udp), `<protocol>` and, with `withLog`, `<log>` of a chardev: a serial or
 * parallel port, or the console alias of serial 0.
 */
function charSourceNodes(
  src: CharSource | NonNullable<DomainDefinition['consoles']>[number],
  withLog: boolean,
): Array<Node | undefined> {
  const out: Array<Node | undefined> = [];
  switch (src.type) {
    case 'unix':
      out.push(
        node('source', [
          ['mode', src.mode],
          ['path', src.path],
        ]),
      );
      break;
    case 'tcp':
      out.push(
        node('source', [
          ['mode', src.mode],
          ['host', src.host],
          ['service', src.service],
        ]),
        node('protocol', [['type', src.protocol]]),
      );
      break;
    case 'udp':
      if (src.bindHost !== undefined || src.bindService !== undefined)
        out.push(
          node('source', [
            ['mode', 'bind'],
            ['host', src.bindHost],
            ['service', src.bindService],
          ]),
        );
      out.push(
        node('source', [
          ['mode', 'connect'],
          ['host', src.host],
          ['service', src.service],
        ]),
      );
      break;
    case 'file':
      out.push(
        src.path === undefined && src.append === undefined
          ? undefined
          : node('source', [
              ['path', src.path],
              ['append', src.append === undefined ? undefined : src.append ? 'on' : 'off'],
            ]),
      );
      break;
    case 'pty':
    case 'dev':
    case 'pipe':
      out.push(src.path === undefined ? undefined : node('source', [['path', src.path]]));
      break;
    default:
      break;
  }
  const log = 'log' in src ? src.log : undefined;
  if (withLog && log)
    out.push(
      node('log', [
        ['file', log.file],
        ['append', log.append ? 'on' : undefined],
      ]),
    );
  return out;
}

/** A network disk's `<source protocol name query>` with its host and protocol options. */
function networkSourceNode(net: NonNullable<DiskDefinition['network']>): Node {
  return node(
    'source',
    [
      ['protocol', net.protocol],
      ['name', net.name],
      ['query', net.query],
    ],
    [
      ...net.hosts.map((h) =>
        node('host', [
          ['transport', h.transport === 'tcp' ? undefined : h.transport],
          ['name', h.name],
          ['port', h.port],
          ['socket', h.socket],
        ]),
      ),
      net.initiator !== undefined && node('initiator', [], [node('iqn', [['name', net.initiator]])]),
      net.timeoutSeconds !== undefined && node('timeout', [['seconds', net.timeoutSeconds]]),
      net.readaheadBytes !== undefined && node('readahead', [['size', net.readaheadBytes]]),
      net.sslVerify !== undefined && node('ssl', [['verify', net.sslVerify ? 'yes' : 'no']]),
    ],
  );
}

function node(
  name: string,
  attrs: ReadonlyArray<readonly [string, AttrValue]> = [],
  children: ReadonlyArray<Node | undefined | false> = [],
): Node {
  return { name, attrs, children };
}

function textNode(
  name: string,
  text: string | number,
  attrs: ReadonlyArray<readonly [string, AttrValue]> = [],
): Node {
  return { name, attrs, text: String(text) };
}

const escapeText = (value: string): string =>
  value.replace(/[&<>\r]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '\r': '&#13;' })[c] ?? c);

const escapeAttr = (value: string): string =>
  value.replace(
    /[&<>'\n\r\t]/g,
    (c) =>
      ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', "'": '&apos;', '\n': '&#10;', '\r': '&#13;', '\t': '&#9;' })[
        c
      ] ?? c,
  );

function serialize(n: Node, indent: string, out: string[]): void {
  const attrs = (n.attrs ?? [])
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => ` ${k}='${escapeAttr(String(v))}'`)
    .join('');
  if (n.raw !== undefined) {
    out.push(`${indent}<${n.name}${attrs}>${n.raw}</${n.name}>`);
    return;
  }
  if (n.text !== undefined) {
    out.push(
      n.text === ''
        ? `${indent}<${n.name}${attrs}/>`
        : `${indent}<${n.name}${attrs}>${escapeText(n.text)}</${n.name}>`,
    );
    return;
  }
  const children = (n.children ?? []).filter((c): c is Node => Boolean(c));
  if (children.length === 0) {
    out.push(`${indent}<${n.name}${attrs}/>`);
    return;
  }
  out.push(`${indent}<${n.name}${attrs}>`);
  for (const c of children) serialize(c, `${indent}  `, out);
  out.push(`${indent}</${n.name}>`);
}

/** Rejects strings an XML document cannot carry (NUL and other control characters). */
function checkChars(value: unknown, path: string): void {
  if (typeof value === 'string') {
    if (hasIllegalXmlChar(value)) {
      throw new VirtError(
        ErrorCode.XML_ERROR,
        `${path} holds a control character that XML cannot represent; remove it to format the definition as XML`,
        { path },
      );
    }
  } else if (Array.isArray(value)) {
    value.forEach((v, i) => {
      checkChars(v, `${path}.${i}`);
    });
  } else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) checkChars(v, path ? `${path}.${k}` : k);
  }
}

const kib = (name: string, value: number, attrs: ReadonlyArray<readonly [string, AttrValue]> = []): Node =>
  textNode(name, value, [...attrs, ['unit', 'KiB']]);

const yesNo = (value: boolean | undefined): string | undefined =>
  value === undefined ? undefined : value ? 'yes' : 'no';
const onOff = (value: boolean): string => (value ? 'on' : 'off');

type Def = DomainDefinition;

function sysinfoNode(info: NonNullable<Def['sysinfo']>): Node {
  const entries = (name: string, map: Readonly<Record<string, string>> | undefined): Node | false =>
    map !== undefined &&
    node(
      name,
      [],
      Object.entries(map).map(([k, v]) => textNode('entry', v, [['name', k]])),
    );
  return node(
    'sysinfo',
    [['type', 'smbios']],
    [
      entries('bios', info.bios),
      entries('system', info.system),
      ...(info.baseBoard ?? []).map((b) => entries('baseBoard', b)),
      entries('chassis', info.chassis),
      info.oemStrings &&
        node(
          'oemStrings',
          [],
          info.oemStrings.map((v) => textNode('entry', v)),
        ),
    ],
  );
}

function featuresNode(f: NonNullable<Def['features']>): Node {
  const state = (name: string, value: boolean | undefined): Node | false =>
    value !== undefined && node(name, [['state', onOff(value)]]);
  const hv = f.hyperv;
  const kvm = f.kvm;
  return node(
    'features',
    [],
    [
      f.acpi && node('acpi'),
      f.apic && node('apic', [['eoi', f.apicEoi === undefined ? undefined : onOff(f.apicEoi)]]),
      f.pae && node('pae'),
      hv &&
        node(
          'hyperv',
          [['mode', hv.mode]],
          [
            hv.relaxed && state('relaxed', hv.relaxed.state),
            hv.vapic && state('vapic', hv.vapic.state),
            hv.spinlocks &&
              node('spinlocks', [
                ['state', onOff(hv.spinlocks.state)],
                ['retries', hv.spinlocks.retries],
              ]),
            hv.vpindex && state('vpindex', hv.vpindex.state),
            hv.runtime && state('runtime', hv.runtime.state),
            hv.synic && state('synic', hv.synic.state),
            hv.stimer &&
              node(
                'stimer',
                [['state', onOff(hv.stimer.state)]],
                [hv.stimer.direct !== undefined && state('direct', hv.stimer.direct)],
              ),
            hv.reset && state('reset', hv.reset.state),
            hv.vendorId &&
              node('vendor_id', [
                ['state', onOff(hv.vendorId.state)],
                ['value', hv.vendorId.value],
              ]),
            hv.frequencies && state('frequencies', hv.frequencies.state),
            hv.reenlightenment && state('reenlightenment', hv.reenlightenment.state),
            hv.tlbflush && state('tlbflush', hv.tlbflush.state),
            hv.ipi && state('ipi', hv.ipi.state),
            hv.evmcs && state('evmcs', hv.evmcs.state),
          ],
        ),
      kvm &&
        node(
          'kvm',
          [],
          [
            state('hidden', kvm.hidden),
            state('hint-dedicated', kvm.hintDedicated),
            state('poll-control', kvm.pollControl),
            state('pv-ipi', kvm.pvIpi),
          ],
        ),
      state('pvspinlock', f.pvspinlock),
      state('pmu', f.pmu),
      state('vmport', f.vmport),
      state('smm', f.smm),
      f.ioapic !== undefined && node('ioapic', [['driver', f.ioapic]]),
      state('vmcoreinfo', f.vmcoreinfo),
    ],
  );
}

function clockNode(c: NonNullable<Def['clock']>): Node {
  return node(
    'clock',
    [
      ['offset', c.offset],
      ['adjustment', c.adjustment],
      ['basis', c.basis],
    ],
    (c.timers ?? []).map((t) =>
      node('timer', [
        ['name', t.name],
        ['tickpolicy', t.tickpolicy],
        ['track', t.track],
        ['frequency', t.frequency],
        ['present', yesNo(t.present)],
      ]),
    ),
  );
}

const hex = (value: number, width: number): string => `0x${value.toString(16).padStart(width, '0')}`;

/** `<address>`, in libvirt's hexadecimal form. */
function addressNode(address: DiskDefinition['address']): Node | undefined {
  if (!address) return undefined;
  if (address.type === 'usb') {
    return node('address', [
      ['type', 'usb'],
      ['bus', address.bus],
      ['port', address.port],
    ]);
  }
  if (address.type === 'drive') {
    return node('address', [
      ['type', 'drive'],
      ['controller', address.controller],
      ['bus', address.bus],
      ['target', address.target],
      ['unit', address.unit],
    ]);
  }
  return node('address', [
    ['type', 'pci'],
    ['domain', hex(address.domain, 4)],
    ['bus', hex(address.bus, 2)],
    ['slot', hex(address.slot, 2)],
    ['function', hex(address.function, 1)],
    ['multifunction', address.multifunction === undefined ? undefined : address.multifunction ? 'on' : 'off'],
  ]);
}

const aliasNode = (alias: string | undefined): Node | undefined =>
  alias === undefined ? undefined : node('alias', [['name', alias]]);

type VirtioOpts = z.output<typeof virtioOptions>;

/** The `<driver>` attributes of virtio options (schema-virtio.ts). */
function virtioAttrs(v: VirtioOpts): Array<readonly [string, AttrValue]> {
  const oo = (b: boolean | undefined) => (b === undefined ? undefined : onOff(b));
  return [
    ['iommu', oo(v?.iommu)],
    ['ats', oo(v?.ats)],
    ['packed', oo(v?.packed)],
    ['page_per_vq', oo(v?.pagePerVq)],
    ['event_idx', oo(v?.eventIdx)],
  ];
}

/** A `<driver>` of virtio options and `extra` attributes, or nothing when it would be empty. */
function driverNode(v: VirtioOpts, extra: Array<readonly [string, AttrValue]> = []): Node | undefined {
  const attrs = [...extra, ...virtioAttrs(v)];
  return attrs.some(([, value]) => value !== undefined) ? node('driver', attrs) : undefined;
}

/** `<memoryBacking>` in libvirt's order: hugepages, locked, source, access, allocation, discard. */
function memoryBackingNode(b: NonNullable<DomainDefinition['memoryBacking']>): Node {
  return node(
    'memoryBacking',
    [],
    [
      b.hugepages &&
        node(
          'hugepages',
          [],
          (b.pages ?? []).map((p) =>
            node('page', [
              ['size', p.sizeKiB],
              ['unit', 'KiB'],
              ['nodeset', p.nodeset],
            ]),
          ),
        ),
      b.locked && node('locked'),
      b.source !== undefined && node('source', [['type', b.source]]),
      b.access !== undefined && node('access', [['mode', b.access]]),
      b.allocation &&
        node('allocation', [
          ['mode', b.allocation.mode],
          ['threads', b.allocation.threads],
        ]),
      b.discard && node('discard'),
    ],
  );
}

function controllerNode(c: ControllerDefinition): Node {
  return node(
    'controller',
    [
      ['type', c.type],
      ['index', c.index],
      ['model', 'model' in c ? c.model : undefined],
      ['ports', c.type === 'usb' || c.type === 'virtio-serial' ? c.ports : undefined],
      ['vectors', c.type === 'virtio-serial' ? c.vectors : undefined],
    ],
    [
      c.type === 'pci' &&
        !isPciRoot(c.model) &&
        node('model', [['name', c.modelName ?? pciControllerDevice(c.model)]]),
      c.type === 'pci' &&
        c.target &&
        node(
          'target',
          [
            ['chassisNr', c.target.chassisNr],
            ['chassis', c.target.chassis],
            ['port', c.target.port === undefined ? undefined : hex(c.target.port, 0)],
            ['busNr', c.target.busNr],
            ['hotplug', c.target.hotplug === undefined ? undefined : onOff(c.target.hotplug)],
          ],
          [c.target.node !== undefined && textNode('node', c.target.node)],
        ),
      c.type === 'pci' && c.pcihole64KiB !== undefined && kib('pcihole64', c.pcihole64KiB),
      c.type === 'usb' && c.master && node('master', [['startport', c.master.startport]]),
      c.type === 'scsi' &&
        driverNode(c.virtio, [
          ['queues', c.driver?.queues],
          ['cmd_per_lun', c.driver?.cmdPerLun],
          ['max_sectors', c.driver?.maxSectors],
          ['ioeventfd', c.driver?.ioeventfd === undefined ? undefined : onOff(c.driver.ioeventfd)],
          ['iothread', c.driver?.iothread],
        ]),
      c.type === 'virtio-serial' && driverNode(c.virtio),
      aliasNode(c.alias),
      addressNode(c.address),
    ],
  );
}

/** An audio backend's `<input>` or `<output>`. */
function audioDirectionNode(name: string, d: NonNullable<NonNullable<Def['audios']>[number]['input']>): Node {
  return node(
    name,
    [
      ['mixingEngine', yesNo(d.mixingEngine)],
      ['fixedSettings', yesNo(d.fixedSettings)],
      ['voices', d.voices],
      ['bufferLength', d.bufferLength],
      ['dev', d.dev],
      ['bufferCount', d.bufferCount],
      ['tryPoll', yesNo(d.tryPoll)],
    ],
    [
      d.settings &&
        node('settings', [
          ['frequency', d.settings.frequency],
          ['channels', d.settings.channels],
          ['format', d.settings.format],
        ]),
    ],
  );
}

/** The devices of schema-devices.ts, in libvirt's order around the balloon. */
function extraDeviceNodes(def: Def): { before: Node[]; after: Node[] } {
  const before: Node[] = [
    ...(def.channels ?? []).map((c) =>
      node(
        'channel',
        [['type', 'unix']],
        [
          node('source', [
            ['mode', 'bind'],
            ['path', c.path],
          ]),
          node('target', [
            ['type', 'virtio'],
            ['name', c.name],
          ]),
          aliasNode(c.alias),
        ],
      ),
    ),
    ...(def.inputs ?? []).map((i) =>
      node(
        'input',
        [
          ['type', i.type],
          ['bus', i.bus],
          ['model', i.model],
        ],
        [driverNode(i.virtio), aliasNode(i.alias), addressNode(i.address)],
      ),
    ),
    ...(def.graphics ?? []).map((g) =>
      node(
        'graphics',
        [
          ['type', 'vnc'],
          ['port', g.port],
          ['listen', g.listen],
        ],
        [
          g.socket !== undefined &&
            node('listen', [
              ['type', 'socket'],
              ['socket', g.socket],
            ]),
          g.audio !== undefined && node('audio', [['id', g.audio]]),
        ],
      ),
    ),
    ...(def.sounds ?? []).map((snd) =>
      node(
        'sound',
        [['model', snd.model]],
        [
          ...(snd.codecs ?? []).map((c) => node('codec', [['type', c]])),
          snd.audio !== undefined && node('audio', [['id', snd.audio]]),
          aliasNode(snd.alias),
          addressNode(snd.address),
        ],
      ),
    ),
    ...(def.audios ?? []).map((a) =>
      node(
        'audio',
        [
          ['id', a.id],
          ['type', a.type],
          ['timerPeriod', a.timerPeriod],
          ['path', a.path],
          ['tryMMap', yesNo(a.tryMMap)],
          ['exclusive', yesNo(a.exclusive)],
          ['dspPolicy', a.dspPolicy],
        ],
        [a.input && audioDirectionNode('input', a.input), a.output && audioDirectionNode('output', a.output)],
      ),
    ),
    ...(def.videos ?? []).map((v) =>
      node(
        'video',
        [],
        [
          node('model', [
            ['type', v.model],
            ['ram', v.ram],
            ['vram', v.vram],
            ['vram64', v.vram64],
            ['vgamem', v.vgamem],
            ['heads', v.heads],
            ['primary', yesNo(v.primary)],
          ]),
          driverNode(v.virtio),
          aliasNode(v.alias),
          addressNode(v.address),
        ],
      ),
    ),
  ];
  const watchdogs: Node[] = (def.watchdogs ?? []).map((w) =>
    node(
      'watchdog',
      [
        ['model', w.model],
        ['action', w.action],
      ],
      [aliasNode(w.alias), addressNode(w.address)],
    ),
  );
  const rngs: Node[] = (def.rngs ?? []).map((r) =>
    node(
      'rng',
      [['model', r.model]],
      [
        r.rate &&
          node('rate', [
            ['bytes', r.rate.bytes],
            ['period', r.rate.periodMs],
          ]),
        textNode('backend', r.backend, [['model', 'random']]),
        driverNode(r.virtio),
        aliasNode(r.alias),
        addressNode(r.address),
      ],
    ),
  );
  const filesystems: Node[] = (def.filesystems ?? []).map((f) =>
    node(
      'filesystem',
      [
        ['type', 'mount'],
        ['accessmode', f.accessmode],
        ['model', f.model],
        ['multidevs', f.multidevs],
        ['fmode', f.fmode === undefined ? undefined : f.fmode.toString(8).padStart(4, '0')],
        ['dmode', f.dmode === undefined ? undefined : f.dmode.toString(8).padStart(4, '0')],
      ],
      [
        node('driver', [
          ['type', 'path'],
          ['wrpolicy', f.wrpolicy],
        ]),
        node('source', [['dir', f.source]]),
        node('target', [['dir', f.target]]),
        f.readonly && node('readonly'),
        aliasNode(f.alias),
        addressNode(f.address),
      ],
    ),
  );
  const dimms: Node[] = (def.memoryDevices ?? []).map((m) =>
    node(
      'memory',
      [['model', m.model]],
      [
        node('target', [], [kib('size', m.sizeKiB), m.node !== undefined && textNode('node', m.node)]),
        aliasNode(m.alias),
        m.slot !== undefined &&
          node('address', [
            ['type', 'dimm'],
            ['slot', m.slot],
          ]),
      ],
    ),
  );
  const panics: Node[] = (def.panics ?? []).map((p) =>
    node(
      'panic',
      [['model', p.model]],
      [
        p.iobase !== undefined &&
          node('address', [
            ['type', 'isa'],
            ['iobase', `0x${p.iobase.toString(16)}`],
          ]),
      ],
    ),
  );
  const iommu = def.iommu;
  const iommus: Node[] = iommu
    ? [
        node(
          'iommu',
          [['model', iommu.model]],
          [
            iommu.driver &&
              node('driver', [
                ['intremap', iommu.driver.intremap === undefined ? undefined : onOff(iommu.driver.intremap)],
                [
                  'caching_mode',
                  iommu.driver.cachingMode === undefined ? undefined : onOff(iommu.driver.cachingMode),
                ],
                ['eim', iommu.driver.eim === undefined ? undefined : onOff(iommu.driver.eim)],
                ['iotlb', iommu.driver.iotlb === undefined ? undefined : onOff(iommu.driver.iotlb)],
                ['aw_bits', iommu.driver.awBits],
              ]),
            aliasNode(iommu.alias),
          ],
        ),
      ]
    : [];
  return {
    before: [...filesystems, ...before, ...watchdogs],
    after: [...rngs, ...panics, ...dimms, ...iommus],
  };
}

function domainNode(def: DomainDefinition): Node {
  const tune = def.cputune;
  const features = def.features ?? { acpi: true, apic: true };
  const cpu = def.cpu;
  const devices = node(
    'devices',
    [],
    [
      def.emulator !== undefined && textNode('emulator', def.emulator),
      ...def.disks.map((disk) =>
        node(
          'disk',
          [
            ['type', disk.type],
            ['device', disk.device],
            ['model', disk.model],
          ],
          [
            node('driver', [
              ['name', 'qemu'],
              ['type', disk.driver.type],
              ['cache', disk.driver.cache],
              ['error_policy', disk.driver.errorPolicy],
              ['rerror_policy', disk.driver.rerrorPolicy],
              ['io', disk.driver.io],
              ['discard', disk.driver.discard],
              ['iothread', disk.driver.iothread],
              ...virtioAttrs(disk.virtio),
            ]),
            disk.source !== undefined &&
              node('source', [[disk.type === 'file' ? 'file' : 'dev', disk.source]]),
            disk.network && networkSourceNode(disk.network),
            disk.backingStore &&
              node(
                'backingStore',
                [['type', disk.backingStore.type]],
                [
                  node('format', [['type', disk.backingStore.format]]),
                  node('source', [
                    [disk.backingStore.type === 'file' ? 'file' : 'dev', disk.backingStore.source],
                  ]),
                ],
              ),
            node('target', [
              ['dev', disk.target.dev],
              ['bus', disk.target.bus],
            ]),
            disk.readonly && node('readonly'),
            disk.serial !== undefined && textNode('serial', disk.serial),
            disk.bootOrder !== undefined && node('boot', [['order', disk.bootOrder]]),
            aliasNode(disk.alias),
            addressNode(disk.address),
          ],
        ),
      ),
      ...def.controllers.map(controllerNode),
      ...def.interfaces.map((nic) =>
        node(
          'interface',
          [['type', nic.type]],
          [
            nic.mac !== undefined && node('mac', [['address', nic.mac]]),
            nic.type === 'ethernet' &&
              nic.target !== undefined &&
              node('target', [
                ['dev', nic.target.dev],
                ['managed', nic.target.managed ? 'yes' : 'no'],
              ]),
            node('model', [['type', nic.model]]),
            driverNode(nic.virtio, [['queues', nic.type === 'ethernet' ? nic.queues : undefined]]),
            nic.rom &&
              node('rom', [
                ['bar', nic.rom.bar === undefined ? undefined : nic.rom.bar ? 'on' : 'off'],
                ['file', nic.rom.file],
                ['enabled', yesNo(nic.rom.enabled)],
              ]),
            aliasNode(nic.alias),
            addressNode(nic.address),
          ],
        ),
      ),
      ...(def.parallels ?? []).map((parallel, i) =>
        node(
          'parallel',
          [['type', parallel.type]],
          [...charSourceNodes(parallel, true), node('target', [['port', i]])],
        ),
      ),
      ...def.serials.map((serial, i) =>
        node(
          'serial',
          [['type', serial.type]],
          [
            ...charSourceNodes(serial, true),
            node(
              'target',
              [
                ['type', 'isa-serial'],
                ['port', i],
              ],
              [node('model', [['name', 'isa-serial']])],
            ),
          ],
        ),
      ),
      // libvirt's console alias of the first serial port.
      ...def.serials.slice(0, 1).map((serial) =>
        node(
          'console',
          [
            ['type', serial.type],
            // libvirt names a running domain's console pty here too.
            ['tty', serial.type === 'pty' ? serial.path : undefined],
          ],
          [
            ...charSourceNodes(serial, false),
            node('target', [
              ['type', 'serial'],
              ['port', 0],
            ]),
          ],
        ),
      ),
      ...(def.consoles ?? []).map((c) =>
        node(
          'console',
          [
            ['type', c.type],
            ['tty', c.path],
          ],
          [
            ...charSourceNodes(c, false),
            node('target', [
              ['type', 'virtio'],
              ['port', 0],
            ]),
          ],
        ),
      ),
      ...extraDeviceNodes(def).before,
      def.memballoon &&
        node(
          'memballoon',
          [
            ['model', def.memballoon.model],
            [
              'freePageReporting',
              def.memballoon.freePageReporting === undefined
                ? undefined
                : def.memballoon.freePageReporting
                  ? 'on'
                  : 'off',
            ],
          ],
          [
            def.memballoon.statsPeriod !== undefined &&
              node('stats', [['period', def.memballoon.statsPeriod]]),
            driverNode(def.memballoon.virtio),
            aliasNode(def.memballoon.alias),
            addressNode(def.memballoon.address),
          ],
        ),
      ...extraDeviceNodes(def).after,
    ],
  );

  return node(
    'domain',
    [
      ['type', def.type],
      ['xmlns:qemu', def.qemuCommandline ? QEMU_NS : undefined],
    ],
    [
      textNode('name', def.name),
      textNode('uuid', def.uuid),
      def.title !== undefined && textNode('title', def.title),
      def.description !== undefined && textNode('description', def.description),
      def.metadata !== undefined && { name: 'metadata', raw: def.metadata },
      def.maxMemory && kib('maxMemory', def.maxMemory.kib, [['slots', def.maxMemory.slots]]),
      kib('memory', def.memoryKiB),
      def.currentMemoryKiB !== undefined && kib('currentMemory', def.currentMemoryKiB),
      def.memtune &&
        node(
          'memtune',
          [],
          [def.memtune.hardLimitKiB !== undefined && kib('hard_limit', def.memtune.hardLimitKiB)],
        ),
      def.numatune &&
        node(
          'numatune',
          [],
          [
            def.numatune.memory &&
              node('memory', [
                ['mode', def.numatune.memory.mode],
                ['nodeset', def.numatune.memory.nodeset],
              ]),
            ...(def.numatune.memnodes ?? []).map((m) =>
              node('memnode', [
                ['cellid', m.cellid],
                ['mode', m.mode],
                ['nodeset', m.nodeset],
              ]),
            ),
          ],
        ),
      def.memoryBacking && memoryBackingNode(def.memoryBacking),
      textNode('vcpu', def.vcpu.count, [
        ['placement', 'static'],
        ['cpuset', def.vcpu.cpuset],
        ['current', def.vcpu.current],
      ]),
      def.iothreads > 0 && textNode('iothreads', def.iothreads),
      tune &&
        node(
          'cputune',
          [],
          [
            ...tune.vcpupin.map((p) =>
              node('vcpupin', [
                ['vcpu', p.vcpu],
                ['cpuset', p.cpuset],
              ]),
            ),
            tune.emulatorpin && node('emulatorpin', [['cpuset', tune.emulatorpin.cpuset]]),
            ...tune.iothreadpin.map((p) =>
              node('iothreadpin', [
                ['iothread', p.iothread],
                ['cpuset', p.cpuset],
              ]),
            ),
            ...tune.vcpusched.map((s) =>
              node('vcpusched', [
                ['vcpus', s.ids],
                ['scheduler', s.scheduler],
                ['priority', s.priority],
              ]),
            ),
            ...tune.iothreadsched.map((s) =>
              node('iothreadsched', [
                ['iothreads', s.ids],
                ['scheduler', s.scheduler],
                ['priority', s.priority],
              ]),
            ),
          ],
        ),
      def.sysinfo && sysinfoNode(def.sysinfo),
      node(
        'os',
        [['firmware', def.os.firmware]],
        [
          textNode('type', 'hvm', [
            ['arch', def.os.arch],
            ['machine', def.os.machine],
          ]),
          def.os.loader &&
            textNode('loader', def.os.loader.path, [
              ['readonly', yesNo(def.os.loader.readonly)],
              ['secure', yesNo(def.os.loader.secure)],
              ['type', def.os.loader.type],
            ]),
          def.os.nvram && textNode('nvram', def.os.nvram.path ?? '', [['template', def.os.nvram.template]]),
          def.os.kernel !== undefined && textNode('kernel', def.os.kernel),
          def.os.initrd !== undefined && textNode('initrd', def.os.initrd),
          def.os.cmdline !== undefined && textNode('cmdline', def.os.cmdline),
          ...(def.os.boot ?? []).map((dev) => node('boot', [['dev', dev]])),
          def.os.bootmenu &&
            node('bootmenu', [
              ['enable', yesNo(def.os.bootmenu.enable)],
              ['timeout', def.os.bootmenu.timeout],
            ]),
          def.os.smbios && node('smbios', [['mode', def.os.smbios]]),
        ],
      ),
      featuresNode(features),
      cpu &&
        node(
          'cpu',
          [['mode', cpu.mode]],
          [
            cpu.model !== undefined && textNode('model', cpu.model),
            cpu.topology &&
              node('topology', [
                ['sockets', cpu.topology.sockets],
                ['dies', cpu.topology.dies],
                ['cores', cpu.topology.cores],
                ['threads', cpu.topology.threads],
              ]),
            cpu.cache &&
              node('cache', [
                ['level', cpu.cache.level],
                ['mode', cpu.cache.mode],
              ]),
            cpu.maxphysaddr &&
              node('maxphysaddr', [
                ['mode', cpu.maxphysaddr.mode],
                ['bits', cpu.maxphysaddr.bits],
              ]),
            ...(cpu.features ?? []).map((f) =>
              node('feature', [
                ['policy', f.policy],
                ['name', f.name],
              ]),
            ),
            cpu.numa &&
              node(
                'numa',
                [],
                cpu.numa.map((cell, i) =>
                  node('cell', [
                    ['id', cell.id ?? i],
                    ['cpus', cell.cpus],
                    ['memory', cell.memoryKiB],
                    ['unit', 'KiB'],
                    ['memAccess', cell.memAccess],
                    ['discard', yesNo(cell.discard)],
                  ]),
                ),
              ),
          ],
        ),
      def.clock && clockNode(def.clock),
      textNode('on_poweroff', def.onPoweroff),
      textNode('on_reboot', def.onReboot),
      textNode('on_crash', def.onCrash),
      def.pm &&
        node(
          'pm',
          [],
          [
            def.pm.suspendToMem !== undefined &&
              node('suspend-to-mem', [['enabled', yesNo(def.pm.suspendToMem)]]),
            def.pm.suspendToDisk !== undefined &&
              node('suspend-to-disk', [['enabled', yesNo(def.pm.suspendToDisk)]]),
          ],
        ),
      devices,
      def.qemuCommandline &&
        node(
          'qemu:commandline',
          [],
          [
            ...def.qemuCommandline.args.map((value) => node('qemu:arg', [['value', value]])),
            ...def.qemuCommandline.env.map((e) =>
              node('qemu:env', [
                ['name', e.name],
                ['value', e.value],
              ]),
            ),
          ],
        ),
    ],
  );
}

/**
 * Formats a domain definition as libvirt domain XML, as `virsh dumpxml` would show it.
 *
 * `parseDomainXml` reads the result back to the same definition, except for two things the XML
 * cannot tell apart: a definition without `features` is written with ACPI and APIC on (what the
 * typed API means by leaving them out) and reads back as `features: { acpi: true, apic: true }`,
 * and an empty `os.boot` list reads back as no list.
 *
 * @param def - a domain definition, e.g. from `Domain.getDefinition()`; it is validated first
 * @returns the XML document, two-space indented, ending with a newline
 * @throws {@link VirtError} `XML_ERROR` or `CONFIG_UNSUPPORTED` when `def` is not a valid
 * definition, or `XML_ERROR` when one of its strings holds a control character XML cannot carry.
 *
 * @public
 */
export function formatDomainXml(def: DomainDefinition): string {
  const resolved = resolveDefinition(def);
  checkChars(resolved, '');
  const out: string[] = [];
  serialize(domainNode(resolved), '', out);
  return `${out.join('\n')}\n`;
}

/**
 * The definition that `parseDomainXml(formatDomainXml(def))` resolves to: `def` with `features`
 * filled in (ACPI and APIC on when left out) and an empty `os.boot` removed. For a definition that
 * has `features` and no empty boot list, it is `def` itself.
 *
 * @internal
 */
export function xmlCanonical(def: DomainDefinition): DomainDefinition {
  let out = def;
  if (!def.features) out = { ...out, features: { acpi: true, apic: true } };
  if (def.os.boot && def.os.boot.length === 0) {
    const { boot: _boot, ...os } = def.os;
    out = { ...out, os };
  }
  return out;
}

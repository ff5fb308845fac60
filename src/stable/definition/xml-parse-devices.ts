import { parseAddress, parseController, parseDeviceAlias, parseMemballoon } from './xml-parse-addresses.js';
import { parseCharSource } from './xml-parse-chardev.js';
import { EXTRA_DEVICES, parseExtraDevices } from './xml-parse-devices-extra.js';
import { parseNetworkSource, refuseAuth } from './xml-parse-network-disk.js';
import {
  check,
  child,
  childrenOf,
  choice,
  ignoredAttr,
  intAttr,
  invalid,
  type Obj,
  type Origins,
  type Shape,
  set,
  textOf,
  unsupported,
} from './xml-parse-rules.js';
import { parseVirtioDriver, VIRTIO_DRIVER_ATTRS } from './xml-parse-virtio.js';
import type { XmlElement } from './xml-tree.js';

/*
 * The domain XML's `<devices>`: emulator, disks, interfaces, serial ports and console, balloon.
 *
 * Typed API ↔ XML decisions:
 * - An `<interface>` without `<model>` is an rtl8139, libvirt's default for x86 QEMU guests (the
 *   typed API's default is virtio).
 * - A `<target>` of a disk without `bus` is virtio for a `vd*` name, ide for `hd*` (as libvirt),
 *   and rejected otherwise (libvirt would choose scsi).
 * - A file `<serial>` without `<source path>` logs to the domain's console log, as in the typed API.
 * - A `<console>` with a serial target next to a `<serial>` is libvirt's alias of serial 0: its own
 *   type and source are discarded, as libvirt discards them.
 */

/** `<devices>`, into `out` (the devices are fields of the definition itself). */
export function parseDevices(origins: Origins, el: XmlElement, out: Obj): void {
  check(el, {
    children: [
      'emulator',
      'disk',
      'controller',
      'interface',
      'serial',
      'parallel',
      'console',
      'memballoon',
      ...EXTRA_DEVICES,
    ],
    repeat: ['disk', 'controller', 'interface', 'serial', 'parallel', 'console', ...EXTRA_DEVICES],
  });
  for (const field of ['disks', 'interfaces', 'serials', 'controllers']) origins.note(field, el);
  const emulator = child(el, 'emulator');
  if (emulator) out.emulator = textOf(origins, emulator, 'emulator');
  const disks = childrenOf(el, 'disk');
  if (disks.length > 0) out.disks = disks.map((disk, i) => parseDisk(origins, disk, i));
  const controllers = childrenOf(el, 'controller');
  if (controllers.length > 0) out.controllers = controllers.map((c, i) => parseController(origins, c, i));
  const nics = childrenOf(el, 'interface');
  if (nics.length > 0) out.interfaces = nics.map((nic, i) => parseInterface(origins, nic, i));
  const serials = childrenOf(el, 'serial').map((s, i) => parseSerial(origins, s, i));
  const allConsoles = childrenOf(el, 'console');
  const virtio = allConsoles.filter((c) => child(c, 'target')?.attrs.get('type') === 'virtio');
  if (virtio.length > 0) out.consoles = virtio.map((c, i) => parseVirtioConsole(origins, c, i));
  const [console, second] = allConsoles.filter((c) => !virtio.includes(c));
  if (second) throw unsupported(second, 'a second <console>');
  if (console) {
    // Without a serial port, the console becomes serial 0 (as libvirt does).
    const folded = parseConsole(
      origins,
      console,
      serials[0]?.source,
      serials.length === 0 ? 'serials.0' : 'console',
    );
    if (serials.length === 0) serials.push({ source: folded, el: console });
  }
  if (serials.length > 0) {
    serials.forEach((s, i) => {
      origins.note(`serials.${i}`, s.el);
    });
    out.serials = serials.map((s) => s.source);
  }
  const parallels = childrenOf(el, 'parallel');
  if (parallels.length > 0) {
    origins.note('parallels', el);
    out.parallels = parallels.map((p, i) => parseParallel(origins, p, i));
  }
  parseExtraDevices(origins, el, out);
  const balloon = child(el, 'memballoon');
  if (balloon) parseMemballoon(origins, balloon, out);
}

function parseDisk(origins: Origins, el: XmlElement, i: number): Obj {
  check(el, {
    attrs: ['type', 'device', 'model'],
    children: [
      'driver',
      'auth',
      'source',
      'backingStore',
      'target',
      'readonly',
      'serial',
      'wwn',
      'vendor',
      'product',
      'boot',
      'alias',
      'address',
    ],
  });
  const field = `disks.${i}`;
  origins.note(field, el);
  const out: Obj = {};
  // libvirt's default disk type is file.
  const type = el.attrs.get('type') ?? 'file';
  origins.note(`${field}.type`, el, 'type');
  out.type = choice(
    el,
    type,
    'the disk type',
    ['file', 'block', 'network'],
    ['dir', 'volume', 'nvme', 'vhostuser', 'vhostvdpa'],
    'type',
  );
  const auth = child(el, 'auth');
  if (auth) refuseAuth(auth);
  const device = el.attrs.get('device');
  if (device !== undefined) {
    out.device = choice(el, device, 'the disk device', ['disk', 'cdrom', 'floppy'], ['lun'], 'device');
  }
  const model = el.attrs.get('model');
  if (model !== undefined) {
    origins.note(`${field}.model`, el, 'model');
    out.model = choice(
      el,
      model,
      'the disk model',
      ['virtio', 'virtio-transitional', 'virtio-non-transitional'],
      [],
      'model',
    );
  }
  const driver = child(el, 'driver');
  if (driver) {
    out.driver = parseDiskDriver(origins, driver, `${field}.driver`);
  }
  const source = child(el, 'source');
  const sourceAttr = out.type === 'file' ? 'file' : 'dev';
  if (source && out.type === 'network') {
    parseNetworkSource(origins, source, field, out);
  } else if (source) {
    // KubeVirt writes the volume's name on a block source; libvirt ignores it.
    check(source, { attrs: out.type === 'block' ? [sourceAttr, 'name'] : [sourceAttr] });
    origins.note(`${field}.source`, source, sourceAttr);
    set(out, 'source', source.attrs.get(sourceAttr));
  } else {
    origins.noteMissing(`${field}.source`, el, 'source');
  }
  const backing = child(el, 'backingStore');
  if (backing) parseBackingStore(origins, backing, field, out);
  const target = child(el, 'target');
  if (target) {
    check(target, { attrs: ['dev', 'bus', 'tray'] });
    // The tray is state a running domain reports; libvirt starts a domain with its media in.
    const tray = target.attrs.get('tray');
    if (tray !== undefined) choice(target, tray, 'the tray state', ['open', 'closed'], [], 'tray');
    origins.note(`${field}.target`, target);
    origins.note(`${field}.target.dev`, target, 'dev');
    origins.note(`${field}.target.bus`, target, 'bus');
    const dev = target.attrs.get('dev');
    const bus = target.attrs.get('bus');
    const t: Obj = {};
    set(t, 'dev', dev);
    if (bus !== undefined) {
      t.bus = choice(
        target,
        bus,
        'the disk bus',
        ['virtio', 'sata', 'ide', 'scsi', 'usb', 'fdc'],
        ['xen', 'sd', 'uml'],
        'bus',
      );
    } else if (dev?.startsWith('vd')) {
      t.bus = 'virtio';
    } else if (dev?.startsWith('fd')) {
      t.bus = 'fdc';
    } else if (dev?.startsWith('hd')) {
      // libvirt's choice for an hd* target on x86.
      t.bus = 'ide';
    } else if (dev?.startsWith('sd')) {
      // libvirt's choice for an sd* target.
      t.bus = 'scsi';
    }
    out.target = t;
  } else {
    origins.noteMissing(`${field}.target`, el, 'target');
  }
  if (driver)
    parseVirtioDriver(origins, driver, field, out, (out.target as Obj | undefined)?.bus === 'virtio');
  const readonly = child(el, 'readonly');
  if (readonly) {
    check(readonly, {});
    out.readonly = true;
  }
  const serial = child(el, 'serial');
  if (serial) out.serial = textOf(origins, serial, `${field}.serial`);
  for (const key of ['wwn', 'vendor', 'product'] as const) {
    const e = child(el, key);
    if (e) out[key] = textOf(origins, e, `${field}.${key}`).trim();
  }
  const boot = child(el, 'boot');
  if (boot) {
    check(boot, { attrs: ['order'] });
    origins.note(`${field}.bootOrder`, boot, 'order');
    const order = intAttr(boot, 'order');
    if (order === undefined) throw invalid(boot, '<boot> needs an order', 'order');
    out.bootOrder = order;
  }
  parseDeviceAlias(origins, el, field, out);
  parseAddress(origins, el, field, out, ['pci', 'drive', 'usb']);
  return out;
}

/**
 * A disk's `<backingStore>`: one raw image under the overlay. An empty `<backingStore/>` (libvirt's
 * "no backing image") is accepted inside it, where a raw image has none anyway; an empty one right
 * under `<disk>` would ask QEMU to ignore the overlay's header, which virtkit does not do.
 */
function parseBackingStore(origins: Origins, el: XmlElement, field: string, out: Obj): void {
  check(el, { attrs: ['type', 'index'], children: ['format', 'source', 'backingStore'] });
  origins.note(`${field}.backingStore`, el);
  const type = el.attrs.get('type');
  if (type === undefined) throw unsupported(el, 'an empty <backingStore/> directly under <disk>');
  const kind = choice(
    el,
    type,
    'the backing store type',
    ['file', 'block'],
    ['network', 'volume', 'dir'],
    'type',
  );
  const format = child(el, 'format');
  if (!format) throw invalid(el, "a <backingStore> needs <format type='raw'/>");
  check(format, { attrs: ['type'] });
  origins.note(`${field}.backingStore.format`, format, 'type');
  const formatType = format.attrs.get('type') ?? '';
  choice(
    format,
    formatType,
    'the backing image format (virtkit supports a raw backing image)',
    ['raw'],
    'any',
    'type',
  );
  const source = child(el, 'source');
  const attr = kind === 'file' ? 'file' : 'dev';
  if (!source) throw invalid(el, `a <backingStore> needs <source ${attr}='/…'/>`);
  check(source, { attrs: [attr] });
  origins.note(`${field}.backingStore.source`, source, attr);
  const inner = child(el, 'backingStore');
  if (inner && (inner.attrs.size > 0 || inner.children.length > 0)) {
    throw unsupported(inner, 'a backing chain of more than one image (a raw image has no backing image)');
  }
  const b: Obj = { type: kind, format: 'raw' };
  set(b, 'source', source.attrs.get(attr));
  out.backingStore = b;
}

/** A disk's `<driver>`: format, cache mode, AIO engine, discard, error policies, iothread. */
function parseDiskDriver(origins: Origins, driver: XmlElement, field: string): Obj {
  check(driver, {
    attrs: [
      'name',
      'type',
      'cache',
      'io',
      'discard',
      'error_policy',
      'rerror_policy',
      'iothread',
      'event_idx',
      ...VIRTIO_DRIVER_ATTRS,
    ],
  });
  ignoredAttr(driver, 'name', ['qemu']);
  origins.note(field, driver, 'type');
  const out: Obj = {};
  const format = driver.attrs.get('type');
  if (format !== undefined)
    out.type = choice(driver, format, 'the disk format', ['raw', 'qcow2'], 'any', 'type');
  const pick = (
    attr: string,
    key: string,
    what: string,
    values: readonly string[],
    known: readonly string[],
  ) => {
    const value = driver.attrs.get(attr);
    if (value === undefined) return;
    origins.note(`${field}.${key}`, driver, attr);
    out[key] = choice(driver, value, what, values, known, attr);
  };
  pick(
    'cache',
    'cache',
    'the cache mode',
    ['default', 'none', 'writethrough', 'writeback', 'directsync', 'unsafe'],
    [],
  );
  pick('io', 'io', 'the I/O mode', ['native', 'threads', 'io_uring'], ['default']);
  pick('discard', 'discard', 'the discard mode', ['unmap', 'ignore'], ['default']);
  pick(
    'error_policy',
    'errorPolicy',
    'the error policy',
    ['stop', 'report', 'ignore', 'enospace'],
    ['default'],
  );
  pick('rerror_policy', 'rerrorPolicy', 'the read error policy', ['stop', 'report', 'ignore'], ['default']);
  if (driver.attrs.has('iothread')) {
    origins.note(`${field}.iothread`, driver, 'iothread');
    out.iothread = intAttr(driver, 'iothread');
  }
  return out;
}

function parseNicModel(origins: Origins, model: XmlElement, field: string, out: Obj): void {
  check(model, { attrs: ['type'] });
  origins.note(`${field}.model`, model, 'type');
  const modelType = model.attrs.get('type');
  if (modelType === undefined) throw invalid(model, '<model> needs a type', 'type');
  out.model = choice(
    model,
    modelType,
    'the NIC model',
    ['virtio', 'virtio-transitional', 'virtio-non-transitional', 'e1000', 'e1000e', 'rtl8139'],
    'any',
    'type',
  );
}

function parseInterface(origins: Origins, el: XmlElement, i: number): Obj {
  const field = `interfaces.${i}`;
  origins.note(field, el);
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
    children: ethernet
      ? ['mac', 'source', 'target', 'model', 'driver', 'rom', 'alias', 'address']
      : ['mac', 'model', 'driver', 'rom', 'alias', 'address'],
  });
  // An ethernet interface has no source; KubeVirt writes an empty one.
  const source = child(el, 'source');
  if (source) check(source, {});
  const out: Obj = { type: kind };
  const mac = child(el, 'mac');
  if (mac) {
    check(mac, { attrs: ['address'] });
    origins.note(`${field}.mac`, mac, 'address');
    const address = mac.attrs.get('address');
    if (address === undefined) throw invalid(mac, '<mac> needs an address', 'address');
    out.mac = address;
  }
  const target = child(el, 'target');
  if (target) {
    check(target, { attrs: ['dev', 'managed'] });
    origins.note(`${field}.target`, target);
    origins.note(`${field}.target.dev`, target, 'dev');
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
    // libvirt's default NIC for x86 QEMU guests.
    out.model = 'rtl8139';
  } else {
    parseNicModel(origins, model, field, out);
  }
  const rom = child(el, 'rom');
  if (rom) {
    check(rom, { attrs: ['enabled', 'bar', 'file'] });
    origins.note(`${field}.rom`, rom);
    const r: Obj = {};
    for (const [attr, key, values] of [
      ['enabled', 'enabled', ['yes', 'no']],
      ['bar', 'bar', ['on', 'off']],
    ] as const) {
      const value = rom.attrs.get(attr);
      if (value !== undefined) r[key] = choice(rom, value, `the ROM ${attr}`, values, [], attr) === values[0];
    }
    origins.note(`${field}.rom.file`, rom, 'file');
    set(r, 'file', rom.attrs.get('file'));
    out.rom = r;
  }
  const driver = child(el, 'driver');
  if (driver) {
    // Queues need a TAP per queue: ethernet only.
    check(driver, {
      attrs: [...(kind === 'ethernet' ? ['queues'] : []), 'event_idx', ...VIRTIO_DRIVER_ATTRS],
    });
    origins.note(`${field}.queues`, driver, 'queues');
    set(out, 'queues', intAttr(driver, 'queues'));
    parseVirtioDriver(origins, driver, field, out, String(out.model).startsWith('virtio'));
  }
  parseDeviceAlias(origins, el, field, out);
  parseAddress(origins, el, field, out, ['pci']);
  return out;
}

function parseSerial(origins: Origins, el: XmlElement, i: number): { source: Obj; el: XmlElement } {
  const field = `serials.${i}`;
  origins.note(field, el);
  const { source, target } = parseCharSource(origins, el, field, {
    attrs: ['port', 'type'],
    children: ['model'],
  });
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

/** `<parallel>`: an isa-parallel port on its chardev, `<target port>` its index. */
function parseParallel(origins: Origins, el: XmlElement, i: number): Obj {
  const field = `parallels.${i}`;
  origins.note(field, el);
  const { source, target } = parseCharSource(origins, el, field, { attrs: ['port'] });
  const port = target ? intAttr(target, 'port') : undefined;
  if (target && port !== undefined && port !== i) {
    throw unsupported(
      target,
      `port ${port} for parallel ${i} (virtkit numbers parallel ports in document order)`,
      'port',
    );
  }
  return source;
}

/** A `<console>` with a virtio target: a virtconsole on virtio-serial port 0 (one only). */
function parseVirtioConsole(origins: Origins, el: XmlElement, i: number): Obj {
  const field = `consoles.${i}`;
  origins.note(field, el);
  if (i > 0) throw unsupported(el, 'a second virtio <console> (virtkit gives one console port 0)');
  const { source, target } = parseCharSource(origins, el, field, { attrs: ['type', 'port'] });
  if (source.type !== 'pty') {
    throw unsupported(
      el,
      `a virtio console of type '${String(source.type)}' (virtkit supports 'pty')`,
      'type',
    );
  }
  const port = target ? intAttr(target, 'port') : undefined;
  if (target && port !== undefined && port !== 0) {
    throw unsupported(target, `a virtio console on port ${port} (only port 0)`, 'port');
  }
  return { type: 'pty', target: 'virtio' };
}

/** Checks that a console is an alias of serial 0 (`first`); returns its source. */
function parseConsole(origins: Origins, el: XmlElement, first: Obj | undefined, field: string): Obj {
  const { source, target } = parseCharSource(origins, el, field, { attrs: ['type', 'port'] });
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
  // With a serial port, a serial console is an alias of serial 0, whatever source it names: libvirt
  // (virDomainDefAddConsoleCompat) discards a differing one, as KubeVirt's pty console next to its
  // unix serial port relies on.
  return first ?? source;
}

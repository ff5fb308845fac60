import { parseAddress } from './xml-parse-addresses.js';
import { audioRef, parseAudio, parseSound } from './xml-parse-audio.js';
import { parseFilesystem } from './xml-parse-filesystem.js';
import { sizeToKiB } from './xml-parse-memory.js';
import { boolAttr } from './xml-parse-platform.js';
import {
  check,
  child,
  childrenOf,
  choice,
  intAttr,
  invalid,
  type Obj,
  type Origins,
  set,
  unsupported,
} from './xml-parse-rules.js';
import { parseVirtioDriver, VIRTIO_DRIVER_ATTRS } from './xml-parse-virtio.js';
import type { XmlElement } from './xml-tree.js';

/*
 * `<input>`, `<graphics>`, `<video>`, `<rng>`, `<channel>`, `<watchdog>`, `<memory>` and `<panic>`
 * of `<devices>` (`<audio>` and `<sound>`: xml-parse-audio.ts).
 *
 * Typed API ↔ XML decisions:
 * - An input without `bus` is PS/2 for a mouse or keyboard and USB for a tablet, as in libvirt.
 * - `<graphics type='vnc' port='-1' autoport='yes'>` without a listen address listens on a UNIX
 *   socket under the root's `run/`: virtkit never opens a TCP port nobody asked for.
 * - `<channel type='unix'><source mode='bind'/>` without a path gets a socket under `run/`.
 */

/** The element names this file handles, for `<devices>`' check. */
export const EXTRA_DEVICES = [
  'input',
  'graphics',
  'video',
  'rng',
  'channel',
  'audio',
  'sound',
  'watchdog',
  'memory',
  'panic',
  'filesystem',
  'iommu',
] as const;

function alias(origins: Origins, el: XmlElement, field: string, out: Obj): void {
  const a = child(el, 'alias');
  if (!a) return;
  check(a, { attrs: ['name'] });
  origins.note(`${field}.alias`, a, 'name');
  set(out, 'alias', a.attrs.get('name'));
}

export function parseExtraDevices(origins: Origins, el: XmlElement, out: Obj): void {
  const list = <T>(tag: string, field: string, parse: (e: XmlElement, f: string) => T | undefined): void => {
    const items = childrenOf(el, tag);
    if (items.length === 0) return;
    origins.note(field, el);
    const parsed = items.map((e, i) => parse(e, `${field}.${i}`)).filter((x): x is T => x !== undefined);
    out[field] = parsed;
  };
  list('input', 'inputs', (e, f) => parseInput(origins, e, f));
  list('graphics', 'graphics', (e, f) => parseGraphics(origins, e, f));
  list('video', 'videos', (e, f) => parseVideo(origins, e, f));
  list('rng', 'rngs', (e, f) => parseRng(origins, e, f));
  list('channel', 'channels', (e, f) => parseChannel(origins, e, f));
  list('audio', 'audios', (e, f) => parseAudio(origins, e, f));
  list('sound', 'sounds', (e, f) => parseSound(origins, e, f));
  list('watchdog', 'watchdogs', (e, f) => parseWatchdog(origins, e, f));
  list('memory', 'memoryDevices', (e, f) => parseMemoryDevice(origins, e, f));
  list('panic', 'panics', (e, f) => parsePanic(origins, e, f));
  list('filesystem', 'filesystems', (e, f) => parseFilesystem(origins, e, f));
  const iommus = childrenOf(el, 'iommu');
  if (iommus[1]) throw invalid(iommus[1], 'a domain has one <iommu>');
  if (iommus[0]) out.iommu = parseIommu(origins, iommus[0]);
}

/** `<iommu model='intel'>` with its `<driver>` (libvirt's virDomainIOMMUDef). */
function parseIommu(origins: Origins, el: XmlElement): Obj {
  check(el, { attrs: ['model'], children: ['driver', 'alias', 'address'] });
  origins.note('iommu', el);
  const model = el.attrs.get('model');
  if (model === undefined) throw invalid(el, "<iommu> needs a model ('intel')", 'model');
  origins.note('iommu.model', el, 'model');
  const out: Obj = {
    model: choice(el, model, "the IOMMU model (smmuv3 is ARM's)", ['intel'], ['virtio', 'smmuv3'], 'model'),
  };
  const driver = child(el, 'driver');
  if (driver) {
    check(driver, { attrs: ['intremap', 'caching_mode', 'eim', 'iotlb', 'aw_bits'] });
    const d: Obj = {};
    for (const [attr, key] of [
      ['intremap', 'intremap'],
      ['caching_mode', 'cachingMode'],
      ['eim', 'eim'],
      ['iotlb', 'iotlb'],
    ] as const) {
      origins.note(`iommu.driver.${key}`, driver, attr);
      set(d, key, boolAttr(driver, attr));
    }
    origins.note('iommu.driver.awBits', driver, 'aw_bits');
    set(d, 'awBits', intAttr(driver, 'aw_bits'));
    out.driver = d;
  }
  alias(origins, el, 'iommu', out);
  // An intel-iommu is a system device: it has no address (libvirt writes none).
  if (child(el, 'address'))
    throw invalid(child(el, 'address') as XmlElement, 'an intel IOMMU takes no address');
  return out;
}

/**
 * `<panic model='isa|hyperv'>`; without a model an x86 guest's is `isa`, as libvirt fills it in.
 * An ISA one may name its port, `<address type='isa' iobase='0x505'/>`.
 */
function parsePanic(origins: Origins, el: XmlElement, field: string): Obj {
  check(el, { attrs: ['model'], children: ['address', 'alias'] });
  origins.note(field, el);
  const model = el.attrs.get('model');
  if (model !== undefined) origins.note(`${field}.model`, el, 'model');
  const out: Obj = {
    model:
      model === undefined
        ? 'isa'
        : choice(
            el,
            model,
            'the panic model',
            ['isa', 'hyperv'],
            // pvpanic-pci is libvirt 9.1's; the others are other architectures' devices.
            ['pvpanic', 'pseries', 's390', 'default'],
            'model',
          ),
  };
  // libvirt formats no alias for a panic device (QEMU's has no id): one read back is dropped.
  const a = child(el, 'alias');
  if (a) check(a, { attrs: ['name'] });
  const address = child(el, 'address');
  if (address) {
    check(address, { attrs: ['type', 'iobase'] });
    const type = address.attrs.get('type');
    if (type !== 'isa' || out.model !== 'isa')
      throw invalid(address, "only an ISA panic device takes an address, type='isa'", 'type');
    const iobase = address.attrs.get('iobase');
    if (iobase !== undefined) {
      origins.note(`${field}.iobase`, address, 'iobase');
      const t = iobase.trim();
      if (!/^(0x[0-9a-fA-F]+|[0-9]+)$/.test(t))
        throw invalid(
          address,
          `iobase must be a port number such as 0x505, not '${t.slice(0, 40)}'`,
          'iobase',
        );
      out.iobase = Number(t);
    }
  }
  return out;
}

/** `<memory model='dimm'><target><size/><node/></target><address type='dimm' slot/></memory>`. */
function parseMemoryDevice(origins: Origins, el: XmlElement, field: string): Obj {
  check(el, { attrs: ['model', 'access', 'discard'], children: ['target', 'alias', 'address'] });
  origins.note(field, el);
  const model = el.attrs.get('model');
  if (model === undefined) throw invalid(el, "<memory> needs a model (model='dimm')", 'model');
  const out: Obj = {
    model: choice(
      el,
      model,
      'the memory model',
      ['dimm'],
      ['nvdimm', 'virtio-pmem', 'virtio-mem', 'sgx-epc'],
      'model',
    ),
  };
  const target = child(el, 'target');
  if (!target) throw invalid(el, '<memory> needs a <target> with its <size>');
  check(target, { children: ['size', 'node'] });
  const size = child(target, 'size');
  if (!size) throw invalid(target, '<target> of <memory> needs a <size>');
  check(size, { attrs: ['unit'], text: true });
  origins.note(`${field}.sizeKiB`, size);
  out.sizeKiB = sizeToKiB(size, size.text, size.attrs.get('unit') ?? 'KiB');
  const node = child(target, 'node');
  if (node) {
    check(node, { text: true });
    origins.note(`${field}.node`, node);
    if (!/^[0-9]+$/.test(node.text.trim())) throw invalid(node, '<node> must hold a NUMA node number');
    out.node = Number(node.text.trim());
  }
  alias(origins, el, field, out);
  const address = child(el, 'address');
  if (address) {
    check(address, { attrs: ['type', 'slot', 'base'] });
    if (address.attrs.get('type') !== 'dimm')
      throw invalid(address, "a memory device's address is type='dimm'", 'type');
    origins.note(`${field}.slot`, address, 'slot');
    set(out, 'slot', intAttr(address, 'slot'));
  }
  return out;
}

function parseWatchdog(origins: Origins, el: XmlElement, field: string): Obj {
  check(el, { attrs: ['model', 'action'], children: ['alias', 'address'] });
  origins.note(field, el);
  const model = el.attrs.get('model');
  if (model === undefined) throw invalid(el, '<watchdog> needs a model', 'model');
  origins.note(`${field}.model`, el, 'model');
  const out: Obj = {
    model: choice(el, model, 'the watchdog model', ['i6300esb', 'ib700'], ['diag288', 'itco'], 'model'),
  };
  const action = el.attrs.get('action');
  if (action !== undefined) {
    origins.note(`${field}.action`, el, 'action');
    out.action = choice(
      el,
      action,
      'the watchdog action',
      ['reset', 'shutdown', 'poweroff', 'pause', 'none', 'inject-nmi'],
      ['dump'],
      'action',
    );
  }
  alias(origins, el, field, out);
  parseAddress(origins, el, field, out, out.model === 'i6300esb' ? ['pci'] : []);
  return out;
}

function parseInput(origins: Origins, el: XmlElement, field: string): Obj {
  check(el, { attrs: ['type', 'bus', 'model'], children: ['driver', 'alias', 'address'] });
  origins.note(field, el);
  const type = el.attrs.get('type');
  if (type === undefined) throw invalid(el, '<input> needs a type', 'type');
  const kind = choice(
    el,
    type,
    'the input type',
    ['mouse', 'keyboard', 'tablet'],
    ['passthrough', 'evdev'],
    'type',
  );
  const bus = el.attrs.get('bus') ?? (kind === 'tablet' ? 'usb' : 'ps2');
  const out: Obj = {
    type: kind,
    bus: choice(el, bus, 'the input bus', ['ps2', 'usb', 'virtio'], ['xen', 'none'], 'bus'),
  };
  const model = el.attrs.get('model');
  if (model !== undefined) {
    origins.note(`${field}.model`, el, 'model');
    out.model = choice(
      el,
      model,
      'the input model (QEMU has no (non-)transitional virtio input devices)',
      ['virtio'],
      ['virtio-transitional', 'virtio-non-transitional'],
      'model',
    );
    if (out.bus !== 'virtio')
      throw invalid(el, `an input model needs bus='virtio', not '${out.bus}'`, 'model');
  }
  const driver = child(el, 'driver');
  if (driver) {
    check(driver, { attrs: VIRTIO_DRIVER_ATTRS });
    parseVirtioDriver(origins, driver, field, out, out.bus === 'virtio');
  }
  alias(origins, el, field, out);
  // A USB input's <address type='usb'> is its port on the controller: QEMU's own choice.
  const address = child(el, 'address');
  if (address?.attrs.get('type') === 'usb') {
    check(address, { attrs: ['type', 'bus', 'port'] });
  } else parseAddress(origins, el, field, out, ['pci']);
  return out;
}

function parseGraphics(origins: Origins, el: XmlElement, field: string): Obj {
  const type = el.attrs.get('type');
  if (type === undefined) throw invalid(el, '<graphics> needs a type', 'type');
  choice(
    el,
    type,
    'the graphics type',
    ['vnc'],
    ['spice', 'sdl', 'rdp', 'desktop', 'egl-headless', 'dbus'],
    'type',
  );
  check(el, { attrs: ['type', 'port', 'autoport', 'listen', 'keymap'], children: ['listen', 'audio'] });
  origins.note(field, el);
  const out: Obj = { type: 'vnc' };
  set(out, 'audio', audioRef(origins, el, field));
  const port = el.attrs.get('port');
  if (port !== undefined) out.port = port === '-1' ? -1 : intAttr(el, 'port');
  const autoport = boolAttr(el, 'autoport');
  if (autoport) out.port = -1;
  // The keymap only matters for a client without the extended key event; libvirt passes -k.
  if (el.attrs.has('keymap')) throw unsupported(el, 'a VNC keymap', 'keymap');
  let listen = el.attrs.get('listen');
  const l = child(el, 'listen');
  if (l) {
    check(l, { attrs: ['type', 'address', 'socket', 'network'] });
    const lt = choice(
      l,
      l.attrs.get('type') ?? 'address',
      'the listen type',
      ['address', 'socket', 'none'],
      ['network'],
      'type',
    );
    if (lt === 'address') listen = l.attrs.get('address') ?? listen;
    if (lt === 'socket') set(out, 'socket', l.attrs.get('socket'));
  }
  if (listen !== undefined) {
    origins.note(`${field}.listen`, el, 'listen');
    out.listen = listen;
  }
  return out;
}

const VIDEO_MODELS = ['vga', 'cirrus', 'virtio', 'bochs', 'qxl', 'none', 'ramfb'] as const;

function parseVideo(origins: Origins, el: XmlElement, field: string): Obj {
  check(el, { children: ['model', 'alias', 'address', 'driver'] });
  origins.note(field, el);
  const model = child(el, 'model');
  const out: Obj = {};
  if (!model) throw invalid(el, '<video> needs a <model>');
  check(model, {
    attrs: ['type', 'vram', 'heads', 'primary', 'ram', 'vgamem', 'vram64'],
    children: ['acceleration'],
  });
  const accel = child(model, 'acceleration');
  if (accel) {
    // 2D acceleration is what every model does; 3D needs a GL renderer QEMU here lacks (no display).
    check(accel, { attrs: ['accel3d', 'accel2d', 'rendernode'] });
    if (boolAttr(accel, 'accel3d') === true || accel.attrs.has('rendernode'))
      throw unsupported(accel, '3D video acceleration (virtio-gpu-gl needs an OpenGL display)', 'accel3d');
  }
  const type = model.attrs.get('type');
  if (type === undefined) throw invalid(model, '<model> needs a type', 'type');
  out.model = choice(model, type, 'the video model', VIDEO_MODELS, ['xen', 'vbox', 'gop', 'vmvga'], 'type');
  origins.note(`${field}.vram`, model, 'vram');
  set(out, 'vram', intAttr(model, 'vram'));
  set(out, 'heads', intAttr(model, 'heads'));
  set(out, 'primary', boolAttr(model, 'primary'));
  for (const a of ['ram', 'vgamem', 'vram64'] as const) {
    const v = intAttr(model, a);
    if (v === undefined) continue;
    origins.note(`${field}.${a}`, model, a);
    // libvirt's rules: qxl only (and vgamem for vga, bochs too: their framebuffer is vram).
    if (out.model !== 'qxl') throw invalid(model, `${a} is a qxl attribute, not ${String(out.model)}'s`, a);
    if (a === 'vgamem' && (v < 1024 || (v & (v - 1)) !== 0))
      throw invalid(model, `vgamem must be a power of two of at least 1024 KiB, not ${v}`, a);
    out[a] = v;
  }
  const driver = child(el, 'driver');
  if (driver) {
    check(driver, { attrs: ['name', ...VIRTIO_DRIVER_ATTRS] });
    const name = driver.attrs.get('name');
    if (name !== undefined)
      choice(
        driver,
        name,
        'the video driver (vhost-user-gpu needs its own process)',
        ['qemu'],
        ['vhostuser'],
        'name',
      );
    parseVirtioDriver(origins, driver, field, out, out.model === 'virtio');
  }
  alias(origins, el, field, out);
  parseAddress(origins, el, field, out, ['pci']);
  return out;
}

function parseRng(origins: Origins, el: XmlElement, field: string): Obj {
  check(el, { attrs: ['model'], children: ['backend', 'rate', 'driver', 'alias', 'address'] });
  origins.note(field, el);
  const model = el.attrs.get('model');
  if (model === undefined) throw invalid(el, '<rng> needs a model', 'model');
  const out: Obj = {
    model: choice(
      el,
      model,
      'the RNG model',
      ['virtio', 'virtio-transitional', 'virtio-non-transitional'],
      [],
      'model',
    ),
  };
  const backend = child(el, 'backend');
  if (!backend) throw invalid(el, '<rng> needs a <backend>');
  check(backend, { attrs: ['model'], text: true });
  choice(
    backend,
    backend.attrs.get('model') ?? '',
    'the RNG backend',
    ['random'],
    ['egd', 'builtin'],
    'model',
  );
  origins.note(`${field}.backend`, backend);
  if (backend.text.trim() !== '') out.backend = backend.text.trim();
  const rate = child(el, 'rate');
  if (rate) {
    check(rate, { attrs: ['bytes', 'period'] });
    origins.note(`${field}.rate`, rate);
    const r: Obj = {};
    set(r, 'bytes', intAttr(rate, 'bytes'));
    set(r, 'periodMs', intAttr(rate, 'period'));
    out.rate = r;
  }
  const driver = child(el, 'driver');
  if (driver) {
    check(driver, { attrs: VIRTIO_DRIVER_ATTRS });
    parseVirtioDriver(origins, driver, field, out, true);
  }
  alias(origins, el, field, out);
  parseAddress(origins, el, field, out, ['pci']);
  return out;
}

function parseChannel(origins: Origins, el: XmlElement, field: string): Obj {
  const type = el.attrs.get('type');
  if (type === undefined) throw invalid(el, '<channel> needs a type', 'type');
  choice(
    el,
    type,
    'the channel type',
    ['unix'],
    ['spicevmc', 'pty', 'file', 'tcp', 'udp', 'qemu-vdagent', 'dbus', 'spiceport', 'pipe'],
    'type',
  );
  check(el, { attrs: ['type'], children: ['source', 'target', 'alias', 'address'] });
  origins.note(field, el);
  const out: Obj = { type: 'unix' };
  const source = child(el, 'source');
  if (source) {
    check(source, { attrs: ['mode', 'path'] });
    choice(
      source,
      source.attrs.get('mode') ?? 'bind',
      'the channel source mode',
      ['bind'],
      ['connect'],
      'mode',
    );
    origins.note(`${field}.path`, source, 'path');
    set(out, 'path', source.attrs.get('path'));
  }
  const target = child(el, 'target');
  if (!target) throw invalid(el, '<channel> needs a <target>');
  check(target, { attrs: ['type', 'name', 'state'] });
  choice(
    target,
    target.attrs.get('type') ?? '',
    'the channel target',
    ['virtio'],
    ['guestfwd', 'xen'],
    'type',
  );
  origins.note(`${field}.name`, target, 'name');
  const name = target.attrs.get('name');
  if (name === undefined) throw invalid(target, 'a virtio channel needs a name', 'name');
  out.name = name;
  alias(origins, el, field, out);
  // Its <address type='virtio-serial' controller='0' bus='0' port='N'/>: the port virtkit gives it.
  const address = child(el, 'address');
  if (address) {
    check(address, { attrs: ['type', 'controller', 'bus', 'port'] });
    choice(address, address.attrs.get('type') ?? '', 'the channel address', ['virtio-serial'], [], 'type');
  }
  return out;
}

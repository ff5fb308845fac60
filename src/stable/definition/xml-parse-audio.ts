import { parseAddress } from './xml-parse-addresses.js';
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
} from './xml-parse-rules.js';
import type { XmlElement } from './xml-tree.js';

/*
 * `<audio>` backends and `<sound>` cards (schema-audio.ts).
 *
 * Typed API ↔ XML decisions:
 * - `<audio>` without `id` is id 1, as libvirt numbers a lone backend.
 * - A `<sound>` without `<codec>` is one duplex codec for ich6/ich9, as libvirt's command line.
 */

const SUPPORTED = ['none', 'alsa', 'oss', 'file'] as const;
// QEMU's modules for these are absent here (qemu-system-gui), or their display is (spice, dbus).
const KNOWN = ['coreaudio', 'jack', 'pulseaudio', 'sdl', 'spice', 'dbus', 'pipewire'];

/** Attributes of `<input>`/`<output>` per backend, besides the common ones. */
const DIRECTION_EXTRA: Record<(typeof SUPPORTED)[number], readonly string[]> = {
  none: [],
  file: [],
  alsa: ['dev'],
  oss: ['dev', 'bufferCount', 'tryPoll'],
};

function parseDirection(el: XmlElement, type: (typeof SUPPORTED)[number]): Obj {
  check(el, {
    attrs: ['mixingEngine', 'fixedSettings', 'voices', 'bufferLength', ...DIRECTION_EXTRA[type]],
    children: ['settings'],
  });
  const out: Obj = {};
  set(out, 'mixingEngine', boolAttr(el, 'mixingEngine'));
  set(out, 'fixedSettings', boolAttr(el, 'fixedSettings'));
  set(out, 'voices', intAttr(el, 'voices'));
  set(out, 'bufferLength', intAttr(el, 'bufferLength'));
  set(out, 'dev', el.attrs.get('dev'));
  set(out, 'bufferCount', intAttr(el, 'bufferCount'));
  set(out, 'tryPoll', boolAttr(el, 'tryPoll'));
  const settings = child(el, 'settings');
  if (settings) {
    check(settings, { attrs: ['frequency', 'channels', 'format'] });
    const s: Obj = {};
    set(s, 'frequency', intAttr(settings, 'frequency'));
    set(s, 'channels', intAttr(settings, 'channels'));
    const format = settings.attrs.get('format');
    if (format !== undefined)
      s.format = choice(
        settings,
        format,
        'the sample format',
        ['u8', 's8', 'u16', 's16', 'u32', 's32', 'f32'],
        [],
        'format',
      );
    out.settings = s;
  }
  return out;
}

export function parseAudio(origins: Origins, el: XmlElement, field: string): Obj {
  origins.note(field, el);
  const typeAttr = el.attrs.get('type');
  if (typeAttr === undefined) throw invalid(el, '<audio> needs a type', 'type');
  const type = choice(
    el,
    typeAttr,
    "the audio backend (QEMU here has no pulseaudio, sdl, jack or pipewire module, coreaudio is macOS's, spice and dbus need their display)",
    SUPPORTED,
    KNOWN,
    'type',
  );
  const attrs = ['id', 'type', 'timerPeriod'];
  if (type === 'file') attrs.push('path');
  if (type === 'oss') attrs.push('tryMMap', 'exclusive', 'dspPolicy');
  check(el, { attrs, children: ['input', 'output'] });
  const out: Obj = { id: intAttr(el, 'id') ?? 1, type };
  origins.note(`${field}.id`, el, 'id');
  set(out, 'timerPeriod', intAttr(el, 'timerPeriod'));
  set(out, 'path', el.attrs.get('path'));
  set(out, 'tryMMap', boolAttr(el, 'tryMMap'));
  set(out, 'exclusive', boolAttr(el, 'exclusive'));
  const policy = el.attrs.get('dspPolicy');
  if (policy !== undefined) {
    origins.note(`${field}.dspPolicy`, el, 'dspPolicy');
    if (!/^-?[0-9]+$/.test(policy.trim()))
      throw invalid(el, `dspPolicy must be a number, not '${policy.slice(0, 20)}'`, 'dspPolicy');
    out.dspPolicy = Number(policy.trim());
  }
  for (const dir of ['input', 'output'] as const) {
    const d = child(el, dir);
    if (!d) continue;
    origins.note(`${field}.${dir}`, d);
    out[dir] = parseDirection(d, type);
  }
  return out;
}

/** A `<audio id>` reference inside `<sound>` or `<graphics>`. */
export function audioRef(origins: Origins, el: XmlElement, field: string): number | undefined {
  const ref = child(el, 'audio');
  if (!ref) return undefined;
  check(ref, { attrs: ['id'] });
  origins.note(`${field}.audio`, ref, 'id');
  const id = intAttr(ref, 'id');
  if (id === undefined) throw invalid(ref, '<audio> in a device needs the id of a backend', 'id');
  return id;
}

export function parseSound(origins: Origins, el: XmlElement, field: string): Obj {
  check(el, {
    attrs: ['model'],
    children: ['codec', 'audio', 'alias', 'address'],
    repeat: ['codec'],
  });
  origins.note(field, el);
  const model = el.attrs.get('model');
  if (model === undefined) throw invalid(el, '<sound> needs a model', 'model');
  origins.note(`${field}.model`, el, 'model');
  const out: Obj = {
    model: choice(
      el,
      model,
      'the sound model',
      ['ich6', 'ich9', 'ac97', 'es1370', 'sb16', 'usb'],
      // ich7 is QEMU 8's; pcspk is a machine property libvirt wires only with its own audio defaults.
      ['ich7', 'pcspk', 'ics2000'],
      'model',
    ),
  };
  const codecs = childrenOf(el, 'codec');
  if (codecs.length > 0) {
    if (out.model !== 'ich6' && out.model !== 'ich9')
      throw invalid(codecs[0] as XmlElement, `a ${String(out.model)} sound card has no HD Audio codecs`);
    origins.note(`${field}.codecs`, codecs[0] as XmlElement);
    out.codecs = codecs.map((c) => {
      check(c, { attrs: ['type'] });
      return choice(
        c,
        c.attrs.get('type') ?? '',
        'the codec type',
        ['duplex', 'micro', 'output'],
        [],
        'type',
      );
    });
  }
  set(out, 'audio', audioRef(origins, el, field));
  const a = child(el, 'alias');
  if (a) {
    check(a, { attrs: ['name'] });
    origins.note(`${field}.alias`, a, 'name');
    set(out, 'alias', a.attrs.get('name'));
  }
  const address = child(el, 'address');
  // A USB sound device's port on the controller is QEMU's choice, as for USB inputs; an ISA card has none.
  if (address?.attrs.get('type') === 'usb' && out.model === 'usb')
    check(address, { attrs: ['type', 'bus', 'port'] });
  else parseAddress(origins, el, field, out, out.model === 'sb16' || out.model === 'usb' ? [] : ['pci']);
  return out;
}

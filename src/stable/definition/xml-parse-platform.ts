import { metadataText } from './xml-metadata.js';
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
  parseUint,
  set,
  textOf,
  unsupported,
} from './xml-parse-rules.js';
import type { XmlElement } from './xml-tree.js';

/*
 * The domain XML's platform: `<os>` (firmware, loader, NVRAM, boot menu, SMBIOS source),
 * `<sysinfo>`, `<pm>`, `<clock>` with its timers, `<features>` and `<metadata>`.
 *
 * Typed API ↔ XML decisions:
 * - `yes`/`no` and `on`/`off` attributes are booleans.
 * - `<features>` children that are on when present (`<acpi/>`, `<pae/>`, `<vmcoreinfo/>`) map to
 *   `true`; those with a `state` attribute (`<smm state='off'/>`) to its value, on when absent.
 */

/** `yes`/`no` (libvirt's virTristateBool) or `on`/`off` (virTristateSwitch) as a boolean. */
export function boolAttr(el: XmlElement, name: string): boolean | undefined {
  const value = el.attrs.get(name);
  if (value === undefined) return undefined;
  if (value === 'yes' || value === 'on') return true;
  if (value === 'no' || value === 'off') return false;
  throw invalid(el, `${name} must be 'yes', 'no', 'on' or 'off', not '${value.slice(0, 20)}'`, name);
}

export function parseMetadata(origins: Origins, el: XmlElement): string {
  if (el.text.trim() !== '') throw invalid(el, '<metadata> holds elements, not text');
  check(el, { children: el.children.map((c) => keyOfAny(c)), repeat: el.children.map((c) => keyOfAny(c)) });
  origins.note('metadata', el);
  return metadataText(el);
}

function keyOfAny(el: XmlElement): string {
  return el.ns === '' ? el.local : `{${el.ns}}${el.local}`;
}

const OS_CHILDREN = [
  'type',
  'loader',
  'nvram',
  'kernel',
  'initrd',
  'cmdline',
  'boot',
  'bootmenu',
  'smbios',
  'firmware',
] as const;

/**
 * libvirt 9.0's rule for `<loader>` under `<os firmware=…>`: auto-selection picks the image, its
 * type and whether it is read-only, so a document that names them contradicts it. (`secure='no'`
 * stays a constraint virtkit meets: it never picks a secure-boot build.)
 */
function checkAutoLoader(loader: XmlElement, l: Obj): void {
  const conflict =
    l.path !== undefined ? 'a loader path' : (['type', 'readonly'] as const).find((a) => loader.attrs.has(a));
  if (conflict === undefined) return;
  const what = conflict === 'a loader path' ? conflict : `the loader attribute '${conflict}'`;
  throw invalid(
    loader,
    `${what} contradicts firmware auto-selection (<os firmware=…>): remove the firmware attribute to name the firmware yourself, or remove it from <loader>`,
    conflict === 'a loader path' ? undefined : conflict,
  );
}

export function parseOs(origins: Origins, el: XmlElement): Obj {
  check(el, { attrs: ['firmware'], children: OS_CHILDREN, repeat: ['boot'] });
  origins.note('os', el);
  const out: Obj = {};
  const firmware = el.attrs.get('firmware');
  if (firmware !== undefined) {
    origins.note('os.firmware', el, 'firmware');
    out.firmware = choice(el, firmware, 'the firmware', ['efi', 'bios'], [], 'firmware');
  }
  const type = child(el, 'type');
  if (type) {
    check(type, { attrs: ['arch', 'machine'], text: true });
    choice(type, type.text, 'the OS type', ['hvm'], ['xen', 'linux', 'exe', 'xenpvh']);
    const arch = type.attrs.get('arch');
    if (arch !== undefined) {
      origins.note('os.arch', type, 'arch');
      out.arch = choice(type, arch, 'the architecture', ['x86_64'], 'any', 'arch');
    }
    const machine = type.attrs.get('machine');
    if (machine !== undefined) {
      origins.note('os.machine', type, 'machine');
      out.machine = machine;
    }
  }
  const fw = child(el, 'firmware');
  if (fw && firmware === undefined) {
    // libvirt: the features only steer auto-selection, which a document without firmware= turns off.
    throw invalid(
      fw,
      "<firmware> features steer firmware auto-selection, which is off without <os firmware='efi|bios'>: add the firmware attribute, or remove <firmware>",
    );
  }
  if (fw) {
    // libvirt's firmware auto-selection features (secure-boot, enrolled-keys).
    check(fw, { children: ['feature'], repeat: ['feature'] });
    for (const f of childrenOf(fw, 'feature')) {
      check(f, { attrs: ['enabled', 'name'] });
      const name = f.attrs.get('name') ?? '';
      const enabled = boolAttr(f, 'enabled');
      if (enabled)
        throw unsupported(
          f,
          `the firmware feature '${name.slice(0, 30)}' (virtkit picks OVMF without secure boot)`,
        );
    }
  }
  const loader = child(el, 'loader');
  if (loader) {
    check(loader, { attrs: ['readonly', 'type', 'secure', 'format'], text: true });
    origins.note('os.loader', loader);
    ignoredAttr(loader, 'format', ['raw']);
    const l: Obj = {};
    if (loader.text.trim() !== '') l.path = loader.text.trim();
    const t = loader.attrs.get('type');
    if (t !== undefined) l.type = choice(loader, t, 'the loader type', ['pflash', 'rom'], [], 'type');
    set(l, 'readonly', boolAttr(loader, 'readonly'));
    set(l, 'secure', boolAttr(loader, 'secure'));
    if (firmware !== undefined) checkAutoLoader(loader, l);
    else if (l.path === undefined) {
      throw invalid(
        loader,
        "a <loader> without a path needs firmware auto-selection: give the firmware image's path, or <os firmware='efi'> without the loader",
      );
    }
    // `<loader secure='no'/>` without a path is only a constraint on auto-selection.
    if (l.path !== undefined) out.loader = l;
    else if (l.secure)
      throw unsupported(loader, 'secure boot (virtkit picks OVMF without secure boot)', 'secure');
  }
  const nvram = child(el, 'nvram');
  if (nvram) {
    check(nvram, { attrs: ['template', 'format'], text: true });
    ignoredAttr(nvram, 'format', ['raw']);
    origins.note('os.nvram', nvram);
    const n: Obj = {};
    if (nvram.text.trim() !== '') n.path = nvram.text.trim();
    set(n, 'template', nvram.attrs.get('template'));
    out.nvram = n;
  }
  for (const key of ['kernel', 'initrd', 'cmdline'] as const) {
    const e = child(el, key);
    if (e) out[key] = textOf(origins, e, `os.${key}`);
  }
  const boots = childrenOf(el, 'boot');
  if (boots.length > 0) {
    out.boot = boots.map((b, i) => {
      check(b, { attrs: ['dev'] });
      origins.note(`os.boot.${i}`, b, 'dev');
      const dev = b.attrs.get('dev');
      if (dev === undefined) throw invalid(b, '<boot> needs a dev', 'dev');
      return choice(b, dev, 'the boot device', ['hd', 'cdrom', 'fd', 'network'], [], 'dev');
    });
  }
  const menu = child(el, 'bootmenu');
  if (menu) {
    check(menu, { attrs: ['enable', 'timeout'] });
    origins.note('os.bootmenu', menu);
    const m: Obj = {};
    set(m, 'enable', boolAttr(menu, 'enable'));
    origins.note('os.bootmenu.timeout', menu, 'timeout');
    set(m, 'timeout', intAttr(menu, 'timeout'));
    out.bootmenu = m;
  }
  const smbios = child(el, 'smbios');
  if (smbios) {
    check(smbios, { attrs: ['mode'] });
    origins.note('os.smbios', smbios, 'mode');
    const mode = smbios.attrs.get('mode');
    if (mode === undefined) throw invalid(smbios, '<smbios> needs a mode', 'mode');
    out.smbios = choice(smbios, mode, 'the SMBIOS mode', ['sysinfo', 'emulate'], ['host'], 'mode');
  }
  return out;
}

const SMBIOS_BLOCKS = ['bios', 'system', 'baseBoard', 'chassis', 'oemStrings'] as const;

export function parseSysinfo(origins: Origins, el: XmlElement): Obj {
  const type = el.attrs.get('type');
  if (type === undefined) throw invalid(el, "<sysinfo> needs a type, 'smbios'", 'type');
  choice(el, type, 'the sysinfo type', ['smbios'], ['fwcfg'], 'type');
  check(el, { attrs: ['type'], children: SMBIOS_BLOCKS, repeat: ['baseBoard'] });
  origins.note('sysinfo', el);
  const out: Obj = {};
  const entries = (block: XmlElement): Record<string, string> => {
    check(block, { children: ['entry'], repeat: ['entry'] });
    const map: Record<string, string> = {};
    for (const e of childrenOf(block, 'entry')) {
      check(e, { attrs: ['name'], text: true });
      const name = e.attrs.get('name');
      if (name === undefined) throw invalid(e, '<entry> needs a name', 'name');
      if (name in map) throw invalid(e, `the entry ${name.slice(0, 20)} is given twice`, 'name');
      map[name] = e.text;
    }
    return map;
  };
  for (const key of ['bios', 'system', 'chassis'] as const) {
    const block = child(el, key);
    if (block) out[key] = entries(block);
  }
  const boards = childrenOf(el, 'baseBoard');
  if (boards.length > 0) out.baseBoard = boards.map(entries);
  const oem = child(el, 'oemStrings');
  if (oem) {
    check(oem, { children: ['entry'], repeat: ['entry'] });
    out.oemStrings = childrenOf(oem, 'entry').map((e) => {
      check(e, { text: true });
      return e.text;
    });
  }
  return out;
}

export function parsePm(origins: Origins, el: XmlElement): Obj {
  check(el, { children: ['suspend-to-mem', 'suspend-to-disk'] });
  origins.note('pm', el);
  const out: Obj = {};
  for (const [tag, key] of [
    ['suspend-to-mem', 'suspendToMem'],
    ['suspend-to-disk', 'suspendToDisk'],
  ] as const) {
    const e = child(el, tag);
    if (!e) continue;
    check(e, { attrs: ['enabled'] });
    set(out, key, boolAttr(e, 'enabled'));
  }
  return out;
}

const TIMERS = ['rtc', 'pit', 'hpet', 'kvmclock', 'hypervclock', 'tsc'] as const;

export function parseClock(origins: Origins, el: XmlElement): Obj {
  check(el, { attrs: ['offset', 'adjustment', 'basis'], children: ['timer'], repeat: ['timer'] });
  origins.note('clock', el);
  origins.note('clock.offset', el, 'offset');
  const out: Obj = {};
  const offset = el.attrs.get('offset');
  if (offset !== undefined) {
    out.offset = choice(
      el,
      offset,
      'the clock offset',
      ['utc', 'localtime', 'variable'],
      ['timezone', 'absolute'],
      'offset',
    );
  }
  const adjustment = el.attrs.get('adjustment');
  if (adjustment !== undefined) {
    origins.note('clock.adjustment', el, 'adjustment');
    if (adjustment === 'reset') {
      // `reset` (utc/localtime only) asks for no adjustment: what virtkit does.
      if (out.offset === 'variable')
        throw invalid(el, "adjustment='reset' needs offset utc or localtime", 'adjustment');
    } else if (/^[+-]?[0-9]+$/.test(adjustment.trim())) {
      const n = Number(adjustment.trim());
      if (out.offset === 'variable') out.adjustment = n;
      else if (n !== 0)
        throw unsupported(
          el,
          `an adjustment with offset '${out.offset ?? 'utc'}' (use offset='variable')`,
          'adjustment',
        );
    } else {
      throw invalid(
        el,
        `the adjustment must be a number of seconds, not '${adjustment.slice(0, 20)}'`,
        'adjustment',
      );
    }
  }
  const basis = el.attrs.get('basis');
  if (basis !== undefined) {
    origins.note('clock.basis', el, 'basis');
    out.basis = choice(el, basis, 'the clock basis', ['utc', 'localtime'], [], 'basis');
  }
  const timers = childrenOf(el, 'timer');
  if (timers.length > 0) {
    out.timers = timers.map((t, i) => {
      check(t, {
        attrs: ['name', 'present', 'tickpolicy', 'track', 'frequency', 'mode'],
        children: ['catchup'],
      });
      const field = `clock.timers.${i}`;
      origins.note(field, t);
      const name = t.attrs.get('name');
      if (name === undefined) throw invalid(t, '<timer> needs a name', 'name');
      const timer: Obj = {
        name: choice(t, name, 'the timer', TIMERS, ['platform', 'armvtimer'], 'name'),
      };
      set(timer, 'present', boolAttr(t, 'present'));
      const policy = t.attrs.get('tickpolicy');
      if (policy !== undefined) {
        origins.note(`${field}.tickpolicy`, t, 'tickpolicy');
        timer.tickpolicy = choice(
          t,
          policy,
          'the tick policy',
          ['delay', 'catchup', 'merge', 'discard'],
          [],
          'tickpolicy',
        );
      }
      const track = t.attrs.get('track');
      if (track !== undefined) {
        origins.note(`${field}.track`, t, 'track');
        timer.track = choice(t, track, 'the timer track', ['boot', 'guest', 'wall', 'realtime'], [], 'track');
      }
      origins.note(`${field}.frequency`, t, 'frequency');
      set(timer, 'frequency', intAttr(t, 'frequency'));
      // The TSC mode (auto, native, emulate, smpsafe) is a Xen setting; libvirt's QEMU driver ignores it.
      ignoredAttr(t, 'mode', ['auto']);
      const catchup = child(t, 'catchup');
      if (catchup) throw unsupported(catchup, 'the catch-up tuning of a timer');
      return timer;
    });
  }
  return out;
}

const FEATURE_CHILDREN = [
  'acpi',
  'apic',
  'pae',
  'smm',
  'vmport',
  'pvspinlock',
  'pmu',
  'hyperv',
  'kvm',
  'ioapic',
  'vmcoreinfo',
  'hap',
  'privnet',
] as const;

export function parseFeatures(origins: Origins, d: XmlElement, el: XmlElement | undefined): Obj {
  if (!el) {
    origins.noteMissing('features', d, 'features');
    return { acpi: false, apic: false };
  }
  check(el, { children: FEATURE_CHILDREN });
  origins.note('features', el);
  const out: Obj = { acpi: false, apic: false };
  const state = (e: XmlElement, attr = 'state'): boolean => boolAttr(e, attr) ?? true;
  for (const c of el.children) {
    const key = c.local;
    origins.note(`features.${key}`, c);
    switch (key) {
      case 'acpi':
      case 'pae':
      case 'vmcoreinfo':
        check(c, { attrs: key === 'vmcoreinfo' ? ['state'] : [] });
        out[key] = state(c);
        break;
      case 'hap':
      case 'privnet':
        // Xen's hardware-assisted paging and LXC's private network: no effect on QEMU.
        check(c, { attrs: ['state'] });
        break;
      case 'apic':
        check(c, { attrs: ['eoi'] });
        out.apic = true;
        set(out, 'apicEoi', boolAttr(c, 'eoi'));
        break;
      case 'smm':
        check(c, { attrs: ['state'], children: ['tseg'] });
        if (child(c, 'tseg')) throw unsupported(child(c, 'tseg') as XmlElement, 'the size of the SMM TSEG');
        out.smm = state(c);
        break;
      case 'vmport':
      case 'pvspinlock':
      case 'pmu':
        check(c, { attrs: ['state'] });
        out[key] = state(c);
        break;
      case 'ioapic': {
        check(c, { attrs: ['driver'] });
        const driver = c.attrs.get('driver');
        if (driver !== undefined)
          out.ioapic = choice(c, driver, 'the I/O APIC driver', ['kvm', 'qemu'], [], 'driver');
        break;
      }
      case 'kvm':
        out.kvm = parseKvm(c);
        break;
      case 'hyperv':
        out.hyperv = parseHyperv(origins, c);
        break;
    }
  }
  return out;
}

function parseKvm(el: XmlElement): Obj {
  const map = {
    hidden: 'hidden',
    'hint-dedicated': 'hintDedicated',
    'poll-control': 'pollControl',
    'pv-ipi': 'pvIpi',
  } as const;
  check(el, { children: Object.keys(map), repeat: [] });
  const out: Obj = {};
  for (const c of el.children) {
    check(c, { attrs: ['state'] });
    out[map[c.local as keyof typeof map]] = boolAttr(c, 'state') ?? true;
  }
  return out;
}

const HYPERV_SIMPLE = [
  'relaxed',
  'vapic',
  'vpindex',
  'runtime',
  'synic',
  'reset',
  'frequencies',
  'reenlightenment',
  'tlbflush',
  'ipi',
  'evmcs',
] as const;

function parseHyperv(origins: Origins, el: XmlElement): Obj {
  check(el, {
    attrs: ['mode'],
    children: [...HYPERV_SIMPLE, 'spinlocks', 'stimer', 'vendor_id'],
  });
  origins.note('features.hyperv', el);
  const out: Obj = {};
  const mode = el.attrs.get('mode');
  if (mode !== undefined)
    out.mode = choice(el, mode, 'the Hyper-V mode', ['custom', 'passthrough'], [], 'mode');
  for (const c of el.children) {
    const stateOf = (): boolean => {
      const s = boolAttr(c, 'state');
      if (s === undefined) throw invalid(c, `<${c.qname}> needs a state`, 'state');
      return s;
    };
    switch (c.local) {
      case 'spinlocks': {
        check(c, { attrs: ['state', 'retries'] });
        const entry: Obj = { state: stateOf() };
        set(entry, 'retries', intAttr(c, 'retries'));
        origins.note('features.hyperv.spinlocks', c, 'retries');
        out.spinlocks = entry;
        break;
      }
      case 'stimer': {
        check(c, { attrs: ['state'], children: ['direct'] });
        const entry: Obj = { state: stateOf() };
        const direct = child(c, 'direct');
        if (direct) {
          check(direct, { attrs: ['state'] });
          entry.direct = boolAttr(direct, 'state') ?? true;
        }
        out.stimer = entry;
        break;
      }
      case 'vendor_id': {
        check(c, { attrs: ['state', 'value'] });
        const entry: Obj = { state: stateOf() };
        origins.note('features.hyperv.vendorId', c, 'value');
        set(entry, 'value', c.attrs.get('value'));
        out.vendorId = entry;
        break;
      }
      default:
        check(c, { attrs: ['state'] });
        out[c.local] = { state: stateOf() };
    }
  }
  return out;
}

/** `<vcpu cpuset>`, when present, as the text libvirt gave. */
export function vcpuCpuset(origins: Origins, el: XmlElement): string | undefined {
  const cpuset = el.attrs.get('cpuset');
  if (cpuset !== undefined) origins.note('vcpu.cpuset', el, 'cpuset');
  return cpuset;
}

/** A non-negative integer attribute that libvirt may write in hex. */
export function uintOrHex(el: XmlElement, name: string): number | undefined {
  const v = el.attrs.get(name);
  if (v === undefined) return undefined;
  if (/^0x[0-9a-f]+$/i.test(v.trim())) return Number.parseInt(v.trim().slice(2), 16);
  return parseUint(el, v, `the attribute ${name}`, name);
}

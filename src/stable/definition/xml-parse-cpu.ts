import { sizeToKiB } from './xml-parse-memory.js';
import { boolAttr, vcpuCpuset } from './xml-parse-platform.js';
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
} from './xml-parse-rules.js';
import type { XmlElement } from './xml-tree.js';

function cellKiB(el: XmlElement, value: string, unit: string): number {
  return sizeToKiB(el, value, unit, 'memory');
}

/* The domain XML's vCPUs and CPU: `<vcpu>`, `<cpu>` and the pinning and scheduling of `<cputune>`. */

const SCHEDULERS = ['fifo', 'rr', 'batch', 'idle', 'other'] as const;

export function parseVcpu(origins: Origins, el: XmlElement): Obj {
  check(el, { attrs: ['placement', 'current', 'cpuset'], text: true });
  ignoredAttr(el, 'placement', ['static']);
  origins.note('vcpu', el);
  origins.note('vcpu.current', el, 'current');
  const out: Obj = { count: parseUint(el, el.text, '<vcpu>') };
  set(out, 'current', intAttr(el, 'current'));
  set(out, 'cpuset', vcpuCpuset(origins, el));
  return out;
}

export function parseCpu(origins: Origins, el: XmlElement): Obj {
  check(el, {
    attrs: ['mode', 'check', 'match', 'migratable'],
    children: ['model', 'topology', 'feature', 'numa', 'cache', 'maxphysaddr'],
    repeat: ['feature'],
  });
  origins.note('cpu', el);
  ignoredAttr(el, 'check', ['none', 'partial']);
  ignoredAttr(el, 'match', ['exact']);
  ignoredAttr(el, 'migratable', ['on']);
  const out: Obj = {};
  const mode = el.attrs.get('mode');
  if (mode !== undefined) {
    origins.note('cpu.mode', el, 'mode');
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
    origins.note('cpu.model', model);
    out.model = model.text;
  }
  const topo = child(el, 'topology');
  if (topo) {
    check(topo, { attrs: ['sockets', 'dies', 'cores', 'threads'] });
    origins.note('cpu.topology', topo);
    const t: Obj = {};
    for (const key of ['sockets', 'dies', 'cores', 'threads'] as const) {
      origins.note(`cpu.topology.${key}`, topo, key);
      set(t, key, intAttr(topo, key));
    }
    out.topology = t;
  }
  const numa = child(el, 'numa');
  if (numa) out.numa = parseNuma(origins, numa);
  const cache = child(el, 'cache');
  if (cache) {
    check(cache, { attrs: ['mode', 'level'] });
    origins.note('cpu.cache', cache);
    origins.note('cpu.cache.mode', cache, 'mode');
    origins.note('cpu.cache.level', cache, 'level');
    const mode = cache.attrs.get('mode');
    if (mode === undefined) throw invalid(cache, '<cache> needs a mode', 'mode');
    const c: Obj = {
      mode: choice(cache, mode, 'the CPU cache mode', ['emulate', 'passthrough', 'disable'], [], 'mode'),
    };
    set(c, 'level', intAttr(cache, 'level'));
    out.cache = c;
  }
  const addr = child(el, 'maxphysaddr');
  if (addr) {
    check(addr, { attrs: ['mode', 'bits'] });
    origins.note('cpu.maxphysaddr', addr);
    origins.note('cpu.maxphysaddr.mode', addr, 'mode');
    origins.note('cpu.maxphysaddr.bits', addr, 'bits');
    const mode = addr.attrs.get('mode');
    if (mode === undefined) throw invalid(addr, '<maxphysaddr> needs a mode', 'mode');
    const a: Obj = {
      mode: choice(addr, mode, 'the physical address mode', ['emulate', 'passthrough'], [], 'mode'),
    };
    set(a, 'bits', intAttr(addr, 'bits'));
    out.maxphysaddr = a;
  }
  const features = childrenOf(el, 'feature');
  if (features.length > 0) {
    out.features = features.map((f, i) => {
      check(f, { attrs: ['policy', 'name'] });
      origins.note(`cpu.features.${i}.policy`, f, 'policy');
      origins.note(`cpu.features.${i}.name`, f, 'name');
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
            ['force', 'require', 'optional', 'disable', 'forbid'],
            [],
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

function parseNuma(origins: Origins, el: XmlElement): Obj[] {
  check(el, { children: ['cell'], repeat: ['cell'] });
  origins.note('cpu.numa', el);
  // libvirt stores a cell at the index its id names, so cells may come in any order.
  const elements = childrenOf(el, 'cell');
  const ids = elements.map((c) => c.attrs.get('id'));
  const permutation =
    ids.every((id) => id !== undefined && /^[0-9]+$/.test(id) && Number(id) < ids.length) &&
    new Set(ids).size === ids.length;
  const ordered = permutation
    ? [...elements].sort((a, b) => Number(a.attrs.get('id')) - Number(b.attrs.get('id')))
    : elements;
  return ordered.map((c, i) => {
    check(c, { attrs: ['id', 'cpus', 'memory', 'unit', 'memAccess', 'discard'] });
    const field = `cpu.numa.${i}`;
    origins.note(field, c);
    origins.note(`${field}.cpus`, c, 'cpus');
    origins.note(`${field}.memoryKiB`, c, 'memory');
    const cell: Obj = {};
    cell.id = intAttr(c, 'id') ?? i;
    set(cell, 'cpus', c.attrs.get('cpus'));
    const memory = c.attrs.get('memory');
    if (memory === undefined) throw invalid(c, 'a NUMA <cell> needs a memory size', 'memory');
    cell.memoryKiB = cellKiB(c, memory, c.attrs.get('unit') ?? 'KiB');
    origins.note(`${field}.discard`, c, 'discard');
    set(cell, 'discard', boolAttr(c, 'discard'));
    const access = c.attrs.get('memAccess');
    if (access !== undefined) {
      origins.note(`${field}.memAccess`, c, 'memAccess');
      cell.memAccess = choice(c, access, 'the memory access', ['shared', 'private'], [], 'memAccess');
    }
    return cell;
  });
}

export function parseCputune(origins: Origins, el: XmlElement): Obj {
  const kinds = ['vcpupin', 'emulatorpin', 'iothreadpin', 'vcpusched', 'iothreadsched'];
  check(el, { children: kinds, repeat: ['vcpupin', 'iothreadpin', 'vcpusched', 'iothreadsched'] });
  origins.note('cputune', el);
  const out: Obj = {};
  const pins = childrenOf(el, 'vcpupin');
  if (pins.length > 0) {
    out.vcpupin = pins.map((p, i) => {
      check(p, { attrs: ['vcpu', 'cpuset'] });
      origins.note(`cputune.vcpupin.${i}`, p);
      origins.note(`cputune.vcpupin.${i}.vcpu`, p, 'vcpu');
      origins.note(`cputune.vcpupin.${i}.cpuset`, p, 'cpuset');
      const pin: Obj = {};
      set(pin, 'vcpu', intAttr(p, 'vcpu'));
      set(pin, 'cpuset', p.attrs.get('cpuset'));
      return pin;
    });
  }
  const emu = child(el, 'emulatorpin');
  if (emu) {
    check(emu, { attrs: ['cpuset'] });
    origins.note('cputune.emulatorpin', emu, 'cpuset');
    const pin: Obj = {};
    set(pin, 'cpuset', emu.attrs.get('cpuset'));
    out.emulatorpin = pin;
  }
  const ioPins = childrenOf(el, 'iothreadpin');
  if (ioPins.length > 0) {
    out.iothreadpin = ioPins.map((p, i) => {
      check(p, { attrs: ['iothread', 'cpuset'] });
      origins.note(`cputune.iothreadpin.${i}`, p);
      origins.note(`cputune.iothreadpin.${i}.iothread`, p, 'iothread');
      origins.note(`cputune.iothreadpin.${i}.cpuset`, p, 'cpuset');
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
      origins.note(field, s);
      origins.note(`${field}.ids`, s, idsAttr);
      origins.note(`${field}.scheduler`, s, 'scheduler');
      origins.note(`${field}.priority`, s, 'priority');
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

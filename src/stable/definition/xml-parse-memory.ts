import {
  check,
  child,
  childrenOf,
  choice,
  intAttr,
  invalid,
  missing,
  type Obj,
  type Origins,
  parseUint,
  set,
  unsupported,
} from './xml-parse-rules.js';
import type { XmlElement } from './xml-tree.js';

/*
 * The domain XML's memory: the sizes (`<memory>`, `<currentMemory>`, `<maxMemory>`), their units,
 * `<memoryBacking>` and `<memtune>`.
 */

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
  return sizeToKiB(el, el.text, el.attrs.get('unit') ?? 'KiB');
}

/** A size and its unit, from the element's text or from the attribute `attr`, in KiB. */
export function sizeToKiB(el: XmlElement, value: string, unit: string, attr?: string): number {
  const scale = unitBytes(unit);
  if (scale === undefined) {
    throw invalid(
      el,
      `unknown unit '${unit.slice(0, 20)}'; use b, KiB, MiB, GiB, TiB, KB, MB, GB or TB`,
      'unit',
    );
  }
  const text = value.trim();
  if (!/^[0-9]+$/.test(text)) {
    const what = attr ? `the attribute ${attr}` : `<${el.qname}>`;
    throw invalid(el, `${what} must hold a non-negative integer, not '${value.slice(0, 40)}'`, attr);
  }
  // Like libvirt, a size that is not a whole number of KiB is rounded up.
  const bytes = BigInt(text) * scale;
  const kib = (bytes + 1023n) / 1024n;
  if (kib > BigInt(Number.MAX_SAFE_INTEGER)) throw invalid(el, `${text} ${unit} is too large`, attr);
  return Number(kib);
}

function size(origins: Origins, el: XmlElement, field: string): number {
  check(el, { attrs: ['unit'], text: true });
  origins.note(field, el);
  return sizeKiB(el);
}

/** `<memory>` (required), `<currentMemory>` and `<maxMemory>` of `<domain>`, into `out`. */
export function parseMemory(origins: Origins, d: XmlElement, out: Obj): void {
  const memory = child(d, 'memory');
  // Without <memory>, NUMA cells give the size (see parseDomain).
  const hasCells = child(d, 'cpu')?.children.some((c) => c.local === 'numa');
  if (!memory && !hasCells) throw missing(d, 'memory', 'the domain needs a <memory> size');
  if (memory) out.memoryKiB = size(origins, memory, 'memoryKiB');
  const current = child(d, 'currentMemory');
  if (current) out.currentMemoryKiB = size(origins, current, 'currentMemoryKiB');
  const max = child(d, 'maxMemory');
  if (max) {
    check(max, { attrs: ['unit', 'slots'], text: true });
    origins.note('maxMemory', max);
    origins.note('maxMemory.slots', max, 'slots');
    const maxMemory: Obj = { kib: sizeKiB(max) };
    set(maxMemory, 'slots', intAttr(max, 'slots'));
    out.maxMemory = maxMemory;
  }
}

/**
 * `<memoryBacking>`: `locked`, `hugepages` (with `<page size unit nodeset>`), `source type`,
 * `access mode`, `allocation mode threads` and `discard`. `nosharepages` (KSM) stays refused.
 */
export function parseMemoryBacking(origins: Origins, backing: XmlElement): Obj {
  check(backing, { children: ['locked', 'hugepages', 'source', 'access', 'allocation', 'discard'] });
  origins.note('memoryBacking', backing);
  const out: Obj = {};
  for (const key of ['locked', 'discard'] as const) {
    const el = child(backing, key);
    if (el) {
      check(el, {});
      origins.note(`memoryBacking.${key}`, el);
      out[key] = true;
    }
  }
  const hugepages = child(backing, 'hugepages');
  if (hugepages) {
    check(hugepages, { children: ['page'], repeat: ['page'] });
    origins.note('memoryBacking.hugepages', hugepages);
    out.hugepages = true;
    const pages = childrenOf(hugepages, 'page');
    if (pages.length > 0) {
      out.pages = pages.map((p, i) => {
        check(p, { attrs: ['size', 'unit', 'nodeset'] });
        origins.note(`memoryBacking.pages.${i}`, p);
        origins.note(`memoryBacking.pages.${i}.nodeset`, p, 'nodeset');
        const size = p.attrs.get('size');
        if (size === undefined) throw invalid(p, 'a <page> needs a size', 'size');
        const page: Obj = { sizeKiB: sizeToKiB(p, size, p.attrs.get('unit') ?? 'KiB', 'size') };
        set(page, 'nodeset', p.attrs.get('nodeset'));
        return page;
      });
    }
  }
  const source = child(backing, 'source');
  if (source) {
    check(source, { attrs: ['type'] });
    origins.note('memoryBacking.source', source, 'type');
    const type = source.attrs.get('type');
    if (type === undefined) throw invalid(source, '<source> needs a type', 'type');
    out.source = choice(source, type, 'the memory source', ['anonymous', 'file', 'memfd'], [], 'type');
  }
  const access = child(backing, 'access');
  if (access) {
    check(access, { attrs: ['mode'] });
    origins.note('memoryBacking.access', access, 'mode');
    const mode = access.attrs.get('mode');
    if (mode === undefined) throw invalid(access, '<access> needs a mode', 'mode');
    out.access = choice(access, mode, 'the memory access', ['shared', 'private'], [], 'mode');
  }
  const allocation = child(backing, 'allocation');
  if (allocation) {
    check(allocation, { attrs: ['mode', 'threads'] });
    origins.note('memoryBacking.allocation', allocation);
    origins.note('memoryBacking.allocation.threads', allocation, 'threads');
    const a: Obj = {};
    const mode = allocation.attrs.get('mode');
    if (mode !== undefined) {
      a.mode = choice(allocation, mode, 'the memory allocation', ['immediate', 'ondemand'], [], 'mode');
    }
    set(a, 'threads', intAttr(allocation, 'threads'));
    out.allocation = a;
  }
  return out;
}

/**
 * `<numatune>`: `<memory mode nodeset>` and `<memnode cellid mode nodeset>`. `placement='auto'`
 * needs numad and `mode='restrictive'` only cgroups' cpuset.mems: both refused.
 */
export function parseNumatune(origins: Origins, el: XmlElement): Obj {
  check(el, { children: ['memory', 'memnode'], repeat: ['memnode'] });
  origins.note('numatune', el);
  const out: Obj = {};
  const entry = (e: XmlElement, field: string, attrs: string[]): Obj => {
    check(e, { attrs });
    origins.note(field, e);
    const o: Obj = {};
    const placement = e.attrs.get('placement');
    if (placement !== undefined && placement !== 'static')
      throw unsupported(
        e,
        `placement='${placement.slice(0, 20)}' (it needs numad; give a nodeset)`,
        'placement',
      );
    const mode = e.attrs.get('mode');
    if (mode !== undefined)
      o.mode = choice(
        e,
        mode,
        'the NUMA mode',
        ['strict', 'interleave', 'preferred'],
        ['restrictive'],
        'mode',
      );
    const nodeset = e.attrs.get('nodeset');
    if (nodeset === undefined) throw unsupported(e, 'a numatune entry without a nodeset', 'nodeset');
    o.nodeset = nodeset;
    return o;
  };
  const memory = child(el, 'memory');
  if (memory) out.memory = entry(memory, 'numatune.memory', ['mode', 'nodeset', 'placement']);
  const memnodes = childrenOf(el, 'memnode');
  if (memnodes.length > 0) {
    out.memnodes = memnodes.map((m, i) => {
      const o = entry(m, `numatune.memnodes.${i}`, ['cellid', 'mode', 'nodeset']);
      const cellid = m.attrs.get('cellid');
      if (cellid === undefined) throw invalid(m, '<memnode> needs a cellid', 'cellid');
      return { cellid: parseUint(m, cellid, 'cellid', 'cellid'), ...o };
    });
  }
  return out;
}

export function parseMemtune(origins: Origins, memtune: XmlElement): Obj {
  check(memtune, { children: ['hard_limit'] });
  origins.note('memtune', memtune);
  const hard = child(memtune, 'hard_limit');
  return hard ? { hardLimitKiB: size(origins, hard, 'memtune.hardLimitKiB') } : {};
}

import { parseAddress } from './xml-parse-addresses.js';
import {
  check,
  child,
  choice,
  invalid,
  type Obj,
  type Origins,
  set,
  unsupported,
} from './xml-parse-rules.js';
import type { XmlElement } from './xml-tree.js';

/*
 * `<filesystem type='mount'>`: a host directory shared with the guest over virtio-9p (QEMU's
 * `-fsdev local` and `virtio-9p-pci`), as libvirt's qemuBuildFSStr builds it. virtiofs needs the
 * virtiofsd daemon, the `handle` driver is gone from QEMU 7.2, and the other types (`block`,
 * `file`, `template`, `ram`, `bind`, `volume`) are not QEMU's: all refused with their path.
 */

/** `<filesystem>` of `<devices>` at `field`. */
export function parseFilesystem(origins: Origins, el: XmlElement, field: string): Obj {
  check(el, {
    attrs: ['type', 'accessmode', 'model', 'multidevs', 'fmode', 'dmode'],
    children: ['driver', 'source', 'target', 'readonly', 'alias', 'address'],
  });
  origins.note(field, el);
  const type = el.attrs.get('type');
  if (type !== undefined) {
    choice(
      el,
      type,
      'the filesystem type',
      ['mount'],
      ['block', 'file', 'template', 'ram', 'bind', 'volume'],
      'type',
    );
  }
  const out: Obj = {};
  const mode = el.attrs.get('accessmode');
  if (mode !== undefined) {
    origins.note(`${field}.accessmode`, el, 'accessmode');
    out.accessmode = choice(
      el,
      mode,
      'the access mode',
      ['passthrough', 'mapped', 'squash'],
      [],
      'accessmode',
    );
  }
  const model = el.attrs.get('model');
  if (model !== undefined) {
    origins.note(`${field}.model`, el, 'model');
    out.model = choice(
      el,
      model,
      'the filesystem model',
      ['virtio', 'virtio-transitional', 'virtio-non-transitional'],
      [],
      'model',
    );
  }
  const multidevs = el.attrs.get('multidevs');
  if (multidevs !== undefined) {
    origins.note(`${field}.multidevs`, el, 'multidevs');
    out.multidevs = choice(
      el,
      multidevs,
      'multidevs',
      ['default', 'remap', 'forbid', 'warn'],
      [],
      'multidevs',
    );
  }
  for (const attr of ['fmode', 'dmode'] as const) {
    const value = el.attrs.get(attr);
    if (value === undefined) continue;
    origins.note(`${field}.${attr}`, el, attr);
    if (!/^0?[0-7]{3}$/.test(value)) throw invalid(el, `${attr} must be an octal mode such as 644`, attr);
    out[attr] = Number.parseInt(value, 8);
  }
  const driver = child(el, 'driver');
  if (driver) {
    check(driver, { attrs: ['type', 'wrpolicy'] });
    const dtype = driver.attrs.get('type');
    if (dtype !== undefined) {
      choice(
        driver,
        dtype,
        'the filesystem driver',
        ['path'],
        ['handle', 'virtiofs', 'loop', 'nbd', 'ploop'],
        'type',
      );
    }
    const wrpolicy = driver.attrs.get('wrpolicy');
    if (wrpolicy !== undefined) {
      origins.note(`${field}.wrpolicy`, driver, 'wrpolicy');
      out.wrpolicy = choice(driver, wrpolicy, 'the write policy', ['immediate'], [], 'wrpolicy');
    }
  }
  const source = child(el, 'source');
  if (!source) throw invalid(el, 'a <filesystem> needs a <source dir>');
  check(source, { attrs: ['dir', 'socket'] });
  if (source.attrs.has('socket')) throw unsupported(source, 'a virtiofs socket', 'socket');
  const dir = source.attrs.get('dir');
  if (dir === undefined) throw invalid(source, '<source> needs a dir', 'dir');
  origins.note(`${field}.source`, source, 'dir');
  out.source = dir;
  const target = child(el, 'target');
  if (!target) throw invalid(el, 'a <filesystem> needs a <target dir> (the mount tag)');
  check(target, { attrs: ['dir'] });
  const tag = target.attrs.get('dir');
  if (tag === undefined) throw invalid(target, '<target> needs a dir', 'dir');
  origins.note(`${field}.target`, target, 'dir');
  out.target = tag;
  const readonly = child(el, 'readonly');
  if (readonly) {
    check(readonly, {});
    out.readonly = true;
  }
  const alias = child(el, 'alias');
  if (alias) {
    check(alias, { attrs: ['name'] });
    origins.note(`${field}.alias`, alias, 'name');
    set(out, 'alias', alias.attrs.get('name'));
  }
  parseAddress(origins, el, field, out, ['pci']);
  return out;
}

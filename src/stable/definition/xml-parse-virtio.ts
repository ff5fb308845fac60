import { boolAttr } from './xml-parse-platform.js';
import { invalid, type Obj, type Origins } from './xml-parse-rules.js';
import type { XmlElement } from './xml-tree.js';

/*
 * The virtio options of a device's `<driver>` (schema-virtio.ts). The caller checks the element's
 * attributes, listing {@link VIRTIO_DRIVER_ATTRS} (and `event_idx` where it applies) among them.
 */

/** The `<driver>` attributes every virtio device takes. */
export const VIRTIO_DRIVER_ATTRS = ['iommu', 'ats', 'packed', 'page_per_vq'] as const;

const KEYS = [
  ['iommu', 'iommu'],
  ['ats', 'ats'],
  ['packed', 'packed'],
  ['page_per_vq', 'pagePerVq'],
  ['event_idx', 'eventIdx'],
] as const;

/**
 * Reads the virtio options of `driver` into `out.virtio`; `virtio` says whether the device is a
 * virtio one (the options are an error on any other, as in libvirt).
 */
export function parseVirtioDriver(
  origins: Origins,
  driver: XmlElement,
  field: string,
  out: Obj,
  virtio: boolean,
): void {
  const options: Obj = {};
  for (const [attr, key] of KEYS) {
    const value = boolAttr(driver, attr);
    if (value === undefined) continue;
    if (!virtio) throw invalid(driver, `${attr} is an option of virtio devices only`, attr);
    origins.note(`${field}.virtio.${key}`, driver, attr);
    options[key] = value;
  }
  if (Object.keys(options).length > 0) out.virtio = options;
}

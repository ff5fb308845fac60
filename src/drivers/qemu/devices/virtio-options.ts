import type { QapiValue } from './qapi.js';

/** A device's virtio options (schema-virtio.ts). */
export interface VirtioOptions {
  readonly iommu?: boolean | undefined;
  readonly ats?: boolean | undefined;
  readonly packed?: boolean | undefined;
  readonly pagePerVq?: boolean | undefined;
  readonly eventIdx?: boolean | undefined;
}

/** The QEMU properties of `v`, as libvirt's qemuBuildVirtioOptionsProps (and event_idx) sets them. */
export function virtioProps(v: VirtioOptions | undefined): Record<string, QapiValue> {
  const out: Record<string, QapiValue> = {};
  if (!v) return out;
  if (v.iommu !== undefined) out.iommu_platform = v.iommu;
  if (v.ats !== undefined) out.ats = v.ats;
  if (v.packed !== undefined) out.packed = v.packed;
  if (v.pagePerVq !== undefined) out['page-per-vq'] = v.pagePerVq;
  if (v.eventIdx !== undefined) out.event_idx = v.eventIdx;
  return out;
}

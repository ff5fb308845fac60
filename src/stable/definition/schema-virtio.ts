import { z } from 'zod';

/**
 * The options every virtio device takes (libvirt's `<driver iommu ats packed page_per_vq>`, and
 * `event_idx` of a virtio disk or NIC): QEMU's `iommu_platform`, `ats`, `packed`, `page-per-vq` and
 * `event_idx` properties. Unset: QEMU's default.
 */
export const virtioOptions = z
  .strictObject({
    /** DMA through the platform IOMMU (the guest sees VIRTIO_F_ACCESS_PLATFORM). */
    iommu: z.boolean().optional(),
    /** PCIe Address Translation Services. */
    ats: z.boolean().optional(),
    /** Packed virtqueues (VIRTIO_F_RING_PACKED). */
    packed: z.boolean().optional(),
    /** One notification page per virtqueue. */
    pagePerVq: z.boolean().optional(),
    /** Interrupt suppression with the used/available event index (disks and NICs only). */
    eventIdx: z.boolean().optional(),
  })
  .optional();

import { z } from 'zod';
import { audioSchema, soundSchema } from './schema-audio.js';
import { virtioOptions } from './schema-virtio.js';

/*
 * The devices real tools add besides disks and NICs: input devices, VNC graphics, video, the
 * virtio RNG, the guest-agent channel and audio backends. Field names follow libvirt's XML.
 */

/** A PCI address as schema.ts defines it (passed in to keep one definition). */
export function deviceSchemas<A extends z.ZodType>(pciAddress: A) {
  const alias = z.string().optional();
  return {
    /** `<input>`: PS/2 devices are the machine's own; USB ones sit on the USB controller. */
    inputs: z
      .array(
        z.strictObject({
          type: z.enum(['mouse', 'keyboard', 'tablet']),
          bus: z.enum(['ps2', 'usb', 'virtio']),
          /**
           * A virtio input's model: `virtio` only, as libvirt (QEMU's virtio input devices have no
           * transitional or non-transitional variants).
           */
          model: z.literal('virtio').optional(),
          /** Virtio options of a virtio input. */
          virtio: virtioOptions,
          alias,
          address: pciAddress.optional(),
        }),
      )
      .optional(),
    /** `<graphics type='vnc'>`: on a UNIX socket under the root's `run/` unless a listen address is given. */
    graphics: z
      .array(
        z.strictObject({
          type: z.literal('vnc'),
          /** A loopback or other address to listen on, with `port` (-1 or absent: the first free from 5900). */
          listen: z.string().min(1).optional(),
          port: z.number().int().min(-1).max(65535).optional(),
          /** A UNIX socket path; without it and without `listen`, `<root>/run/<uuid>.vnc`. */
          socket: z.string().startsWith('/').optional(),
          /** The `audios` backend a VNC client with audio support hears (libvirt's `<audio id>`). */
          audio: z.number().int().min(1).optional(),
        }),
      )
      .max(1)
      .optional(),
    /** `<video><model type=…>`. */
    videos: z
      .array(
        z.strictObject({
          model: z.enum(['vga', 'cirrus', 'virtio', 'bochs', 'qxl', 'none', 'ramfb']),
          /** Video memory in KiB (vga, cirrus, qxl). */
          vram: z.number().int().positive().optional(),
          heads: z.number().int().min(1).max(16).optional(),
          /** qxl: its RAM bar in KiB (QEMU's `ram_size`). */
          ram: z.number().int().positive().optional(),
          /** qxl: the VGA framebuffer in KiB (QEMU's `vgamem_mb`), a power of two of at least 1 MiB. */
          vgamem: z.number().int().positive().optional(),
          /** qxl: the 64-bit VRAM bar in KiB (QEMU's `vram64_size_mb`). */
          vram64: z.number().int().positive().optional(),
          primary: z.boolean().optional(),
          /** Virtio options of a virtio GPU. */
          virtio: virtioOptions,
          alias,
          address: pciAddress.optional(),
        }),
      )
      .optional(),
    /**
     * `<memory model='dimm'>`: hot-pluggable memory (a QEMU pc-dimm). Needs `maxMemory`; as in
     * libvirt, its size counts in `memoryKiB`, which is the total of the boot memory and the DIMMs.
     */
    memoryDevices: z
      .array(
        z.strictObject({
          model: z.literal('dimm'),
          /** Size in KiB; a Linux guest onlines it in blocks of 128 MiB. */
          sizeKiB: z.number().int().positive(),
          /** The guest NUMA node. */
          node: z.number().int().min(0).optional(),
          /** The DIMM slot, 0 to `maxMemory.slots` - 1; the first free one when absent. */
          slot: z.number().int().min(0).max(255).optional(),
          alias,
        }),
      )
      .optional(),
    /**
     * `<filesystem type='mount'>`: a host directory shared with the guest over virtio-9p (QEMU's
     * `-fsdev local` and `virtio-9p-pci`); the guest mounts it by its tag (`target`).
     */
    filesystems: z
      .array(
        z.strictObject({
          /** The host directory. */
          source: z.string().startsWith('/').max(4096),
          /** The mount tag the guest sees. */
          target: z.string().min(1).max(255),
          /**
           * How guest file owners and modes map to the host's (QEMU's `security_model`):
           * `passthrough` as they are (the default), `mapped` in extended attributes, `squash` not at all.
           */
          accessmode: z.enum(['passthrough', 'mapped', 'squash']).default('passthrough'),
          /** The virtio flavour. */
          model: z.enum(['virtio', 'virtio-transitional', 'virtio-non-transitional']).optional(),
          /** Files of several host devices under the directory: QEMU's `multidevs`. */
          multidevs: z.enum(['default', 'remap', 'forbid', 'warn']).optional(),
          /** Mode of files and directories the guest creates (`mapped` only), e.g. 0o644. */
          fmode: z.number().int().min(0).max(0o777).optional(),
          dmode: z.number().int().min(0).max(0o777).optional(),
          /** `immediate`: writes reach the host's disk before the guest sees them done. */
          wrpolicy: z.literal('immediate').optional(),
          readonly: z.boolean().optional(),
          alias,
          address: pciAddress.optional(),
        }),
      )
      .optional(),
    /** `<rng model='virtio'>` with a random-device backend. */
    rngs: z
      .array(
        z.strictObject({
          /** The virtio flavour (`virtio-non-transitional`: modern only). */
          model: z.enum(['virtio', 'virtio-transitional', 'virtio-non-transitional']),
          /** Virtio options (libvirt's `<driver iommu ats packed page_per_vq>`). */
          virtio: virtioOptions,
          backend: z.enum(['/dev/urandom', '/dev/random', '/dev/hwrng']).default('/dev/urandom'),
          rate: z
            .strictObject({
              bytes: z.number().int().positive(),
              periodMs: z.number().int().positive().optional(),
            })
            .optional(),
          alias,
          address: pciAddress.optional(),
        }),
      )
      .optional(),
    /**
     * `<console type='pty'>` with a virtio target: a `virtconsole` on port 0 of the virtio-serial
     * controller (`hvc0` in the guest; the controller is added when missing, as libvirt does), on a
     * pseudo-terminal QEMU allocates at start. `path` is output only, as a pty serial port's.
     */
    consoles: z
      .array(
        z.strictObject({
          type: z.literal('pty'),
          target: z.literal('virtio'),
          path: z.string().startsWith('/').max(4096).optional(),
        }),
      )
      .max(1, 'one virtio console (port 0 of the virtio-serial controller)')
      .optional(),
    /** `<channel type='unix'>` with a virtio target, e.g. the QEMU guest agent's `org.qemu.guest_agent.0`. */
    channels: z
      .array(
        z.strictObject({
          type: z.literal('unix'),
          /** The virtio-serial port name the guest sees. */
          name: z.string().regex(/^[A-Za-z0-9._-]+$/, 'a port name such as org.qemu.guest_agent.0'),
          /** The socket QEMU listens on; without it, `<root>/run/<uuid>.<name>.sock`. */
          path: z.string().startsWith('/').optional(),
          alias,
        }),
      )
      .optional(),
    /**
     * `<watchdog>`: an i6300esb (PCI) or ib700 (ISA) timer card, and what QEMU does when the
     * guest stops feeding it (`dump` is refused: it needs libvirt's core dump machinery).
     */
    watchdogs: z
      .array(
        z.strictObject({
          model: z.enum(['i6300esb', 'ib700']),
          action: z.enum(['reset', 'shutdown', 'poweroff', 'pause', 'none', 'inject-nmi']).default('reset'),
          alias,
          address: pciAddress.optional(),
        }),
      )
      .max(1)
      .optional(),
    /**
     * `<panic>`: how the guest tells QEMU it panicked, so `on_crash` can act. `isa` is QEMU's ISA
     * pvpanic device (I/O port `iobase`, 0x505 by default; Linux's pvpanic-mmio driver uses it),
     * `hyperv` the Hyper-V crash MSRs (`hv-crash` on the CPU; a Windows guest uses them under KVM).
     */
    panics: z
      .array(
        z.strictObject({
          model: z.enum(['isa', 'hyperv']),
          /** The ISA I/O port of an `isa` panic device. */
          iobase: z.number().int().min(1).max(0xffff).optional(),
        }),
      )
      .max(2)
      .optional(),
    /**
     * `<iommu model='intel'>`: QEMU's intel-iommu (VT-d) on a q35 machine, with libvirt's
     * `<driver intremap caching_mode eim iotlb aw_bits>`.
     */
    iommu: z
      .strictObject({
        model: z.literal('intel'),
        driver: z
          .strictObject({
            /** Interrupt remapping (needs the split I/O APIC, `features.ioapic: 'qemu'`). */
            intremap: z.boolean().optional(),
            /** Caching mode, which device assignment to the guest's own guests needs. */
            cachingMode: z.boolean().optional(),
            /** Extended interrupt mode (x2APIC beyond 255 vCPUs; needs `intremap`). */
            eim: z.boolean().optional(),
            /** The device IOTLB, for devices with ATS. */
            iotlb: z.boolean().optional(),
            /** The guest address width in bits. */
            awBits: z.union([z.literal(39), z.literal(48)]).optional(),
          })
          .optional(),
        alias,
      })
      .optional(),
    /** `<audio>` backends (QEMU's `-audiodev`), see schema-audio.ts. */
    audios: z.array(audioSchema).optional(),
    /** `<sound>` cards, each playing through one of `audios`. */
    sounds: z.array(soundSchema.extend({ address: pciAddress.optional() })).optional(),
  } as const;
}

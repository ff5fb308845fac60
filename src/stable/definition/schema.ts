import { z } from 'zod';
import { PCI_CONTROLLER_MODELS } from './pci-controllers.js';
import { charSource } from './schema-chardev.js';
import { deviceSchemas } from './schema-devices.js';
import { networkDiskSource } from './schema-network-disk.js';
import {
  bootmenuSchema,
  clockSchema,
  extraFeatures,
  loaderSchema,
  metadataSchema,
  numaCellSchema,
  nvramSchema,
  pmSchema,
  sysinfoSchema,
} from './schema-platform.js';
import { virtioOptions } from './schema-virtio.js';

/*
 * The typed domain definition. Field names follow libvirt's XML (camelCased) so that a libvirt user
 * finds each element where they expect it; sizes are in KiB, libvirt's default unit, and say so in
 * their names. Objects are strict: an unknown key is an error, never silently dropped.
 */

const cpuset = z
  .string()
  .regex(/^\s*\^?\d+(-\d+)?(\s*,\s*\^?\d+(-\d+)?)*\s*$/, 'a cpuset such as "0-3,^2,6"');

const kib = z
  .number()
  .int()
  .positive()
  .max(2 ** 52);

const schedPolicy = z.enum(['fifo', 'rr', 'batch', 'idle', 'other']);

const schedEntry = z.strictObject({
  /** The vCPUs (or iothreads) this entry applies to, as a cpuset-style list of indexes. */
  ids: cpuset,
  scheduler: schedPolicy,
  /** 1..99 for fifo and rr; absent otherwise. */
  priority: z.number().int().min(0).max(99).optional(),
});

/** A PCI address, as libvirt's `<address type='pci' domain bus slot function/>`. */
export const pciAddress = z.strictObject({
  type: z.literal('pci'),
  domain: z.literal(0).default(0),
  bus: z.number().int().min(0).max(255),
  slot: z.number().int().min(0).max(31),
  function: z.number().int().min(0).max(7).default(0),
  multifunction: z.boolean().optional(),
});

/** A drive address on a disk controller, as libvirt's `<address type='drive' …/>`. */
const driveAddress = z.strictObject({
  type: z.literal('drive'),
  controller: z.number().int().min(0).max(255).default(0),
  bus: z.number().int().min(0).max(255).default(0),
  target: z.number().int().min(0).max(255).default(0),
  unit: z.number().int().min(0).max(255),
});

/** A port of a USB controller, as libvirt's `<address type='usb' bus port/>` (`port` like `1` or `1.2`). */
const usbAddress = z.strictObject({
  type: z.literal('usb'),
  bus: z.number().int().min(0).max(255).default(0),
  port: z.string().regex(/^[1-9][0-9]?(\.[1-9][0-9]?){0,4}$/, 'a USB port such as 1 or 1.2'),
});

/** The virtio device flavours libvirt names in a `model`: QEMU's `-transitional`/`-non-transitional` devices. */
const virtioModel = z.enum(['virtio', 'virtio-transitional', 'virtio-non-transitional']);

/** A NIC's device model: virtio (in its flavours) or an emulated Intel or Realtek card. */
const nicModel = z
  .enum(['virtio', 'virtio-transitional', 'virtio-non-transitional', 'e1000', 'e1000e', 'rtl8139'])
  .default('virtio');

/** A PCI device's option ROM (`<rom enabled bar file>`). */
const nicRom = z
  .strictObject({
    /** false: no option ROM at all (QEMU's `romfile=`). */
    enabled: z.boolean().optional(),
    /** Whether the ROM is visible in the device's ROM BAR. */
    bar: z.boolean().optional(),
    /** A ROM image instead of QEMU's own. */
    file: z.string().startsWith('/').optional(),
  })
  .optional();

const controllerSchema = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('pci'),
    index: z.number().int().min(0).max(255).optional(),
    /**
     * The PCI root (built in), or a controller that makes another bus: root ports, bridges to
     * conventional PCI, expander buses (pxb, pxb-pcie) and the ports of a PCIe switch.
     */
    model: z.enum(PCI_CONTROLLER_MODELS),
    /** A pcie-root-port's device: Intel's `ioh3420` instead of QEMU's generic `pcie-root-port`. */
    modelName: z.literal('ioh3420').optional(),
    /** The size of the root's 64-bit PCI hole in KiB (`<pcihole64>`, pci-root and pcie-root only). */
    pcihole64KiB: z
      .number()
      .int()
      .min(0)
      .max(2 ** 50)
      .optional(),
    target: z
      .strictObject({
        /**
         * Hot-plug into the port (`pcie-root-port`, `pcie-switch-downstream-port`) or, on a
         * pci-root, ACPI hot-plug into the root bus; on by default.
         */
        hotplug: z.boolean().optional(),
        /** A root or downstream port's chassis number. */
        chassis: z.number().int().min(0).max(255).optional(),
        /** A root or downstream port's port number. */
        port: z.number().int().min(0).max(255).optional(),
        /** A pci-bridge's chassis number (its SHPC), by default its index. */
        chassisNr: z.number().int().min(1).max(255).optional(),
        /** An expander bus's bus number, by default the highest free below those of others. */
        busNr: z.number().int().min(1).max(254).optional(),
        /** An expander bus's NUMA node (a cell of `cpu.numa`). */
        node: z.number().int().min(0).max(63).optional(),
      })
      .optional(),
    alias: z.string().optional(),
    address: pciAddress.optional(),
  }),
  z.strictObject({
    /** The PIIX3 IDE function of a pc machine (00:01.1), built in. */
    type: z.literal('ide'),
    index: z.number().int().min(0).max(255).optional(),
    alias: z.string().optional(),
    address: pciAddress.optional(),
  }),
  z.strictObject({
    /** The pc machine's floppy controller (the ISA FDC), built in: it holds the floppy drives. */
    type: z.literal('fdc'),
    index: z.literal(0).optional(),
    alias: z.string().optional(),
    /** None: an ISA device has no PCI address (present so every controller has the field). */
    address: z.never().optional(),
  }),
  z.strictObject({
    type: z.literal('sata'),
    index: z.number().int().min(0).max(255).optional(),
    alias: z.string().optional(),
    address: pciAddress.optional(),
  }),
  z.strictObject({
    type: z.literal('usb'),
    index: z.number().int().min(0).max(255).optional(),
    /**
     * The controller; without one, libvirt's default for the machine (qemu-xhci on Q35, piix3-uhci on i440FX). An
     * ICH9 USB 2 set is an `ich9-ehci1` with its `ich9-uhci1`…`3` companions, all of one index.
     */
    model: z
      .enum(['none', 'piix3-uhci', 'qemu-xhci', 'ich9-ehci1', 'ich9-uhci1', 'ich9-uhci2', 'ich9-uhci3'])
      .optional(),
    /** A companion's first port on its EHCI master (`<master startport>`). */
    master: z.strictObject({ startport: z.number().int().min(0).max(15) }).optional(),
    /** A qemu-xhci's USB 2 and USB 3 port count each (QEMU's `p2`, `p3`). */
    ports: z.number().int().min(1).max(15).optional(),
    alias: z.string().optional(),
    address: pciAddress.optional(),
  }),
  z.strictObject({
    type: z.literal('scsi'),
    index: z.number().int().min(0).max(255).optional(),
    /**
     * virtio-scsi (in its virtio flavours) or the LSI 53C895A (`lsilogic`, pc machines only);
     * without one, libvirt's default for x86: `lsilogic`.
     */
    model: z.enum(['virtio-scsi', 'virtio-transitional', 'virtio-non-transitional', 'lsilogic']).optional(),
    /** A virtio-scsi controller's `<driver>`: request queues, iothread, per-LUN commands, transfer size, ioeventfd. */
    driver: z
      .strictObject({
        queues: z.number().int().min(1).max(1024).optional(),
        /** The iothread (1-based, of `iothreads`) the controller's requests run in. */
        iothread: z.number().int().min(1).max(64).optional(),
        cmdPerLun: z.number().int().min(1).max(65535).optional(),
        maxSectors: z.number().int().min(1).max(4194303).optional(),
        ioeventfd: z.boolean().optional(),
      })
      .optional(),
    /** Virtio options of a virtio-scsi controller. */
    virtio: virtioOptions,
    alias: z.string().optional(),
    address: pciAddress.optional(),
  }),
  z.strictObject({
    type: z.literal('virtio-serial'),
    index: z.number().int().min(0).max(255).optional(),
    /** The virtio device flavour; without one, `virtio` (modern and legacy as QEMU chooses). */
    model: virtioModel.optional(),
    /** Its port count (QEMU's `max_ports`). */
    ports: z.number().int().min(1).max(31).optional(),
    /** MSI-X vectors. */
    vectors: z.number().int().min(0).max(1024).optional(),
    /** Virtio options (libvirt's `<driver iommu ats packed page_per_vq>`). */
    virtio: virtioOptions,
    alias: z.string().optional(),
    address: pciAddress.optional(),
  }),
]);

const diskSchema = z
  .strictObject({
    /** `network`: the image is on a server QEMU connects to itself (see `network`). */
    type: z.enum(['file', 'block', 'network']),
    /** `floppy`: a drive of the pc machine's built-in floppy controller (bus `fdc`, `fda` or `fdb`). */
    device: z.enum(['disk', 'cdrom', 'floppy']).default('disk'),
    /** The virtio flavour of a virtio disk. */
    model: virtioModel.optional(),
    /** Virtio options of a virtio disk (libvirt's `<driver iommu ats packed page_per_vq event_idx>`). */
    virtio: virtioOptions,
    driver: z
      .strictObject({
        type: z.enum(['raw', 'qcow2']).default('raw'),
        /** libvirt's cache modes: host page cache (`direct`), guest write cache, flushes. */
        cache: z.enum(['default', 'none', 'writethrough', 'writeback', 'directsync', 'unsafe']).optional(),
        /** The AIO engine; `native` needs a cache mode that bypasses the host page cache. */
        io: z.enum(['native', 'threads', 'io_uring']).optional(),
        /** Whether the guest's discard requests reach the image. */
        discard: z.enum(['unmap', 'ignore']).optional(),
        /** What a write error does (and a read error, unless `rerrorPolicy` says otherwise). */
        errorPolicy: z.enum(['stop', 'report', 'ignore', 'enospace']).optional(),
        rerrorPolicy: z.enum(['stop', 'report', 'ignore']).optional(),
        /** The iothread (1-based, of `iothreads`) a virtio disk's requests run in. */
        iothread: z.number().int().min(1).max(64).optional(),
      })
      .default({ type: 'raw' }),
    /**
     * The image or block device. Only a CD-ROM may go without one: an empty drive (libvirt's
     * `<disk device='cdrom'>` without `<source>`, what virt-install leaves after an install), whose
     * tray QEMU shows with no medium.
     */
    source: z.string().startsWith('/', 'an absolute path').optional(),
    /** The server and image of a `network` disk (which has no `source` path). */
    network: networkDiskSource.optional(),
    /**
     * The image a qcow2 disk is an overlay of (libvirt's `<backingStore>`, as KubeVirt writes for its
     * ephemeral disks): opened read-only by virtkit and given to QEMU as the overlay's backing node,
     * whatever backing file the overlay's header names. A raw image, the end of the chain.
     */
    backingStore: z
      .strictObject({
        type: z.enum(['file', 'block']),
        format: z.literal('raw'),
        source: z.string().startsWith('/', 'an absolute path'),
      })
      .optional(),
    target: z.strictObject({
      dev: z.string().regex(/^((vd|sd|hd)[a-z]{1,2}|fd[ab])$/, 'a target such as vda, sdb or fda'),
      /**
       * `ide` exists on pc (i440FX) machines only: the PIIX3's two channels, two units each. `scsi`
       * disks sit on the SCSI controller (added as libvirt does), `usb` disks on USB controller 0.
       */
      bus: z.enum(['virtio', 'sata', 'ide', 'scsi', 'usb', 'fdc']),
    }),
    readonly: z.boolean().default(false),
    serial: z.string().max(36).optional(),
    bootOrder: z.number().int().positive().optional(),
    alias: z.string().optional(),
    address: z.discriminatedUnion('type', [pciAddress, driveAddress, usbAddress]).optional(),
  })
  .superRefine((disk, ctx) => {
    if (disk.type === 'network') {
      if (disk.network === undefined)
        ctx.addIssue({
          code: 'custom',
          path: ['network'],
          message: 'a network disk needs its server (network)',
        });
      if (disk.source !== undefined)
        ctx.addIssue({ code: 'custom', path: ['source'], message: 'a network disk has no source path' });
      if (disk.backingStore)
        ctx.addIssue({
          code: 'custom',
          path: ['backingStore'],
          message: 'a network disk with a local backing image is not supported',
        });
      if (disk.driver.io !== undefined)
        ctx.addIssue({
          code: 'custom',
          path: ['driver', 'io'],
          message: 'the AIO engine is for file and block disks',
        });
      return;
    }
    if (disk.network !== undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['network'],
        message: `a ${disk.type} disk has no network source`,
      });
    if ((disk.device === 'floppy') !== (disk.target.bus === 'fdc'))
      ctx.addIssue({
        code: 'custom',
        path: ['target', 'bus'],
        message: 'a floppy sits on bus fdc, and only a floppy does',
      });
    if (disk.source === undefined && disk.device !== 'cdrom')
      ctx.addIssue({
        code: 'custom',
        path: ['source'],
        message: 'a disk needs a source; only a CD-ROM may be empty',
      });
    if (disk.source === undefined && disk.backingStore)
      ctx.addIssue({
        code: 'custom',
        path: ['backingStore'],
        message: 'an empty CD-ROM has no backing image',
      });
  });

const macAddress = z.string().regex(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i, 'a MAC address');

const interfaceSchema = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('ethernet'),
    mac: macAddress.optional(),
    target: z.strictObject({ dev: z.string().min(1).max(15), managed: z.boolean().default(true) }).optional(),
    model: nicModel,
    queues: z.number().int().min(1).max(16).optional(),
    rom: nicRom,
    /** Virtio options of a virtio NIC (libvirt's `<driver iommu ats packed page_per_vq event_idx>`). */
    virtio: virtioOptions,
    alias: z.string().optional(),
    address: pciAddress.optional(),
  }),
  z.strictObject({
    type: z.literal('user'),
    mac: macAddress.optional(),
    model: nicModel,
    rom: nicRom,
    /** Virtio options of a virtio NIC (libvirt's `<driver iommu ats packed page_per_vq event_idx>`). */
    virtio: virtioOptions,
    alias: z.string().optional(),
    address: pciAddress.optional(),
  }),
]);

/**
 * The schema of a domain definition as given to `defineDomain`. Use {@link DomainDefinitionInput}
 * for the type accepted as input and {@link DomainDefinition} for the resolved definition.
 *
 * @public
 */
export const domainDefinitionSchema = z.strictObject({
  name: z
    .string()
    .min(1)
    .max(200)
    .regex(
      /^[A-Za-z0-9_][A-Za-z0-9_.+-]*$/,
      'letters, digits, "_", ".", "+" and "-", not starting with "." or "-"',
    ),
  /**
   * Any 128-bit value in the 8-4-4-4-12 hex form, as libvirt accepts (not only RFC 4122 UUIDs);
   * stored in lower case.
   */
  uuid: z
    .string()
    .regex(/^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/, 'a UUID')
    .toLowerCase()
    .optional(),
  title: z.string().optional(),
  description: z.string().optional(),
  metadata: metadataSchema.optional(),
  type: z.enum(['kvm', 'qemu']),
  memoryKiB: kib,
  currentMemoryKiB: kib.optional(),
  maxMemory: z.strictObject({ kib, slots: z.number().int().min(1).max(256) }).optional(),
  vcpu: z
    .strictObject({
      /** Up to 288, the limit of QEMU's q35 machine (255 for pc). */
      count: z.number().int().min(1).max(288),
      current: z.number().int().min(1).max(288).optional(),
      /** The host CPUs of vCPUs and emulator threads that `cputune` does not pin. */
      cpuset: cpuset.optional(),
    })
    .default({ count: 1 }),
  cpu: z
    .strictObject({
      mode: z.enum(['host-passthrough', 'host-model', 'custom']).optional(),
      model: z.string().optional(),
      /**
       * CPU features on top of the model, as libvirt's `<feature policy=…>`: `force` and `require`
       * turn the feature on, `disable` and `forbid` off (`-cpu model,+f,-g`, as libvirt's
       * qemuBuildCpuModelArgStr); `optional` leaves the model's choice (libvirt resolves it against
       * the host CPU, which a TCG guest does not have).
       */
      features: z
        .array(
          z.strictObject({
            policy: z.enum(['force', 'require', 'optional', 'disable', 'forbid']),
            name: z.string().regex(/^[a-z0-9][a-z0-9_.-]*$/, 'a CPU feature name such as arch-capabilities'),
          }),
        )
        .optional(),
      topology: z
        .strictObject({
          sockets: z.number().int().min(1),
          dies: z.number().int().min(1).default(1),
          cores: z.number().int().min(1),
          threads: z.number().int().min(1),
        })
        .optional(),
      /** Guest NUMA cells; their vCPUs and memory must add up to the domain's. */
      numa: z.array(numaCellSchema).min(1).max(64).optional(),
      /**
       * The CPU caches the guest sees (libvirt's `<cache>`): `emulate` (level 3) an L3 cache,
       * `passthrough` the host's (host-passthrough CPUs only), `disable` none.
       */
      cache: z
        .strictObject({
          mode: z.enum(['emulate', 'passthrough', 'disable']),
          level: z.number().int().min(1).max(3).optional(),
        })
        .optional(),
      /**
       * The physical address bits (libvirt's `<maxphysaddr>`): `emulate` with `bits`, or
       * `passthrough` the host's.
       */
      maxphysaddr: z
        .strictObject({
          mode: z.enum(['emulate', 'passthrough']),
          bits: z.number().int().min(1).max(64).optional(),
        })
        .optional(),
    })
    .optional(),
  os: z
    .strictObject({
      arch: z.literal('x86_64').default('x86_64'),
      machine: z.string().min(1).optional(),
      kernel: z.string().startsWith('/').optional(),
      initrd: z.string().startsWith('/').optional(),
      cmdline: z.string().optional(),
      boot: z.array(z.enum(['hd', 'cdrom', 'fd', 'network'])).optional(),
      /** `efi` picks UEFI firmware (OVMF) with a per-domain variable store; `bios` is SeaBIOS. */
      firmware: z.enum(['efi', 'bios']).optional(),
      loader: loaderSchema.optional(),
      nvram: nvramSchema.optional(),
      bootmenu: bootmenuSchema.optional(),
      /** Where the SMBIOS tables come from: `sysinfo` (the definition's), `emulate` (QEMU's). */
      smbios: z.enum(['sysinfo', 'emulate']).optional(),
    })
    .default({ arch: 'x86_64' }),
  features: z
    .strictObject({ acpi: z.boolean().default(true), apic: z.boolean().default(true), ...extraFeatures })
    .optional(),
  clock: clockSchema.optional(),
  pm: pmSchema.optional(),
  sysinfo: sysinfoSchema.optional(),
  iothreads: z.number().int().min(0).max(64).default(0),
  cputune: z
    .strictObject({
      vcpupin: z.array(z.strictObject({ vcpu: z.number().int().min(0), cpuset })).default([]),
      emulatorpin: z.strictObject({ cpuset }).optional(),
      iothreadpin: z.array(z.strictObject({ iothread: z.number().int().min(1), cpuset })).default([]),
      vcpusched: z.array(schedEntry).default([]),
      iothreadsched: z.array(schedEntry).default([]),
    })
    .optional(),
  /**
   * Where guest memory comes from (libvirt's `<memoryBacking>`), as libvirt picks QEMU's memory
   * backend: huge pages (hugetlbfs, or memfd's hugetlb), a memfd, a file, shared or private,
   * preallocated or not.
   */
  memoryBacking: z
    .strictObject({
      /** Locked in host RAM (`-overcommit mem-lock=on`). */
      locked: z.boolean().default(false),
      /** Huge pages (`<hugepages>`): of the host's default size unless `pages` says otherwise. */
      hugepages: z.boolean().default(false),
      /**
       * Huge page sizes (`<hugepages><page size nodeset>`): per guest NUMA cells in `nodeset`, or
       * without one for the rest. A size equal to the system page (4 KiB) means no huge pages.
       */
      pages: z
        .array(
          z.strictObject({
            sizeKiB: z
              .number()
              .int()
              .positive()
              .max(2 ** 30),
            nodeset: z.string().optional(),
          }),
        )
        .min(1)
        .optional(),
      /** `anonymous` (ordinary RAM), `file` (a file in the root's `lib/ram/`) or `memfd`. */
      source: z.enum(['anonymous', 'file', 'memfd']).optional(),
      /** `shared` maps the memory shared (vhost-user needs it), `private` copy-on-write. */
      access: z.enum(['shared', 'private']).optional(),
      /** `immediate` preallocates all memory at start (with `threads` doing it). */
      allocation: z
        .strictObject({
          mode: z.enum(['immediate', 'ondemand']).optional(),
          threads: z.number().int().min(1).max(4096).optional(),
        })
        .optional(),
      /** Discards the memory's content when the guest stops (file-backed memory only). */
      discard: z.boolean().optional(),
    })
    .optional(),
  memtune: z.strictObject({ hardLimitKiB: kib.optional() }).optional(),
  /**
   * Host NUMA nodes for guest memory (libvirt's `<numatune>`): `memory` for all of it, `memnodes`
   * per guest NUMA cell (`cpu.numa`), each a QEMU memory backend's `host-nodes` and `policy`
   * (`strict` → bind). The nodes must exist on the host at start.
   */
  numatune: z
    .strictObject({
      memory: z
        .strictObject({
          mode: z.enum(['strict', 'interleave', 'preferred']).default('strict'),
          nodeset: cpuset,
        })
        .optional(),
      memnodes: z
        .array(
          z.strictObject({
            cellid: z.number().int().min(0),
            mode: z.enum(['strict', 'interleave', 'preferred']).default('strict'),
            nodeset: cpuset,
          }),
        )
        .optional(),
    })
    .optional(),
  onPoweroff: z.enum(['destroy', 'restart']).default('destroy'),
  onReboot: z.enum(['restart', 'destroy']).default('restart'),
  /**
   * What a guest panic does (libvirt's `on_crash`; QEMU learns of a panic through a `panics`
   * device): `destroy` stops QEMU (shut off, reason `crashed`), `restart` resets the guest (running,
   * reason `crashed`), `preserve` keeps it stopped where it panicked (state `crashed`, reason
   * `panicked`); the `coredump-` ones first write the guest's memory as an ELF core file to
   * `<root>/lib/dump/`.
   */
  onCrash: z
    .enum(['destroy', 'restart', 'preserve', 'coredump-destroy', 'coredump-restart'])
    .default('destroy'),
  emulator: z.string().startsWith('/', 'an absolute path').optional(),
  disks: z.array(diskSchema).default([]),
  interfaces: z.array(interfaceSchema).default([]),
  serials: z.array(charSource).max(4).default([]),
  /** Parallel ports (QEMU's isa-parallel, LPT1 to LPT3), on a chardev backend each. */
  parallels: z.array(charSource).max(3).optional(),
  ...deviceSchemas(pciAddress),
  /**
   * Device controllers. The QEMU driver adds the implicit ones at define time as libvirt does (the
   * PCI root, the PCIe root ports a q35 machine's devices sit behind, SATA, USB).
   */
  controllers: z.array(controllerSchema).default([]),
  /** The virtio memory balloon; the QEMU driver adds it when `currentMemoryKiB` is below `memoryKiB`. */
  memballoon: z
    .strictObject({
      model: virtioModel,
      /** Seconds between guest memory statistics updates (0: none). */
      statsPeriod: z.number().int().min(0).optional(),
      /** Free page reporting: the guest hands freed pages back to the host. */
      freePageReporting: z.boolean().optional(),
      /** Virtio options (libvirt's `<driver iommu ats packed page_per_vq>`). */
      virtio: virtioOptions,
      alias: z.string().optional(),
      address: pciAddress.optional(),
    })
    .optional(),
  qemuCommandline: z
    .strictObject({
      args: z.array(z.string()).default([]),
      env: z
        .array(z.strictObject({ name: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), value: z.string() }))
        .default([]),
    })
    .optional(),
});

/**
 * A domain definition as accepted by `defineDomain`: optional fields may be left out.
 *
 * @public
 */
export type DomainDefinitionInput = z.input<typeof domainDefinitionSchema>;

/**
 * A resolved domain definition: defaults applied, uuid assigned.
 *
 * @public
 */
export type DomainDefinition = z.output<typeof domainDefinitionSchema> & { readonly uuid: string };

/**
 * A disk of a resolved definition.
 *
 * @public
 */
export type DiskDefinition = DomainDefinition['disks'][number];

/**
 * A network interface of a resolved definition.
 *
 * @public
 */
export type InterfaceDefinition = DomainDefinition['interfaces'][number];

/**
 * A memory device (`<memory model='dimm'>`) of a definition.
 *
 * @public
 */
export type MemoryDeviceDefinition = NonNullable<DomainDefinition['memoryDevices']>[number];

/**
 * A scheduler policy name, as in libvirt's `vcpusched`.
 *
 * @public
 */
export type SchedulerPolicy = NonNullable<DomainDefinition['cputune']>['vcpusched'][number]['scheduler'];

/**
 * A PCI address of a device (`<address type='pci'/>`).
 *
 * @public
 */
export type PciAddress = NonNullable<InterfaceDefinition['address']>;

/**
 * A device controller of a resolved definition.
 *
 * @public
 */
export type ControllerDefinition = DomainDefinition['controllers'][number];

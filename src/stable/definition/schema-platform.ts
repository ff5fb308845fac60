import { z } from 'zod';

/*
 * The parts of a domain definition that describe the virtual platform rather than a device:
 * firmware, boot menu, SMBIOS, power management, clock and timers, hypervisor features, NUMA cells,
 * and the application's own metadata. Field names follow libvirt's XML, camelCased.
 */

const onOff = z.boolean();

/** libvirt's `<loader>`: the firmware image. */
export const loaderSchema = z.strictObject({
  /** Absolute path of the firmware image (e.g. `/usr/share/OVMF/OVMF_CODE_4M.fd`). */
  path: z.string().startsWith('/', 'an absolute path'),
  /** `pflash` maps the image as flash (UEFI with variables), `rom` as a ROM (a BIOS). */
  type: z.enum(['pflash', 'rom']).default('pflash'),
  readonly: z.boolean().default(true),
  /** Secure boot: the image checks signatures (needs SMM, so q35). */
  secure: z.boolean().optional(),
});

/** libvirt's `<nvram>`: the per-domain UEFI variable store. */
export const nvramSchema = z.strictObject({
  /** Where the domain's variables live; the QEMU driver copies `template` there when it is missing. */
  path: z.string().startsWith('/', 'an absolute path').optional(),
  /** The empty variable store to copy from. */
  template: z.string().startsWith('/', 'an absolute path').optional(),
});

/** libvirt's `<bootmenu>`. */
export const bootmenuSchema = z.strictObject({
  enable: onOff,
  /** How long the menu waits, in milliseconds. */
  timeout: z.number().int().min(0).max(65535).optional(),
});

const smbiosEntries = z.record(
  z.string().regex(/^[a-z_]+$/, 'an SMBIOS entry name such as manufacturer'),
  z.string(),
);

/** libvirt's `<sysinfo type='smbios'>`: the SMBIOS tables the guest sees (with `os.smbios` `sysinfo`). */
export const sysinfoSchema = z.strictObject({
  /** Type 0: vendor, version, date, release. */
  bios: smbiosEntries.optional(),
  /** Type 1: manufacturer, product, version, serial, uuid, sku, family. */
  system: smbiosEntries.optional(),
  /** Type 2 (one per board): manufacturer, product, version, serial, asset, location. */
  baseBoard: z.array(smbiosEntries).optional(),
  /** Type 3: manufacturer, version, serial, asset, sku. */
  chassis: smbiosEntries.optional(),
  /** Type 11 strings. */
  oemStrings: z.array(z.string()).optional(),
});

/** libvirt's `<pm>`: whether the guest may suspend to RAM or disk (ACPI S3, S4). */
export const pmSchema = z.strictObject({
  suspendToMem: onOff.optional(),
  suspendToDisk: onOff.optional(),
});

const timerSchema = z.strictObject({
  name: z.enum(['rtc', 'pit', 'hpet', 'kvmclock', 'hypervclock', 'tsc']),
  present: onOff.optional(),
  tickpolicy: z.enum(['delay', 'catchup', 'merge', 'discard']).optional(),
  /** rtc only: what the RTC follows. */
  track: z.enum(['boot', 'guest', 'wall', 'realtime']).optional(),
  /** tsc only: its frequency in Hz. */
  frequency: z.number().int().positive().optional(),
});

/** libvirt's `<clock>`. */
export const clockSchema = z.strictObject({
  offset: z.enum(['utc', 'localtime', 'variable']).default('utc'),
  /** `variable` only: the guest clock's offset from `basis`, in seconds. */
  adjustment: z.number().int().optional(),
  basis: z.enum(['utc', 'localtime']).optional(),
  timers: z.array(timerSchema).optional(),
});

const hypervState = z.strictObject({ state: onOff });

/** libvirt's `<hyperv>` enlightenments (for Windows guests). */
export const hypervSchema = z.strictObject({
  mode: z.enum(['custom', 'passthrough']).default('custom'),
  relaxed: hypervState.optional(),
  vapic: hypervState.optional(),
  spinlocks: z.strictObject({ state: onOff, retries: z.number().int().min(4095).optional() }).optional(),
  vpindex: hypervState.optional(),
  runtime: hypervState.optional(),
  synic: hypervState.optional(),
  stimer: z.strictObject({ state: onOff, direct: onOff.optional() }).optional(),
  reset: hypervState.optional(),
  vendorId: z.strictObject({ state: onOff, value: z.string().max(12).optional() }).optional(),
  frequencies: hypervState.optional(),
  reenlightenment: hypervState.optional(),
  tlbflush: hypervState.optional(),
  ipi: hypervState.optional(),
  evmcs: hypervState.optional(),
});

/** libvirt's `<kvm>` feature: how KVM presents itself to the guest. */
export const kvmFeaturesSchema = z.strictObject({
  hidden: onOff.optional(),
  hintDedicated: onOff.optional(),
  pollControl: onOff.optional(),
  pvIpi: onOff.optional(),
});

/** The optional features of `<features>` beyond ACPI and APIC. */
export const extraFeatures = {
  pae: onOff.optional(),
  /** System management mode (q35; UEFI secure boot needs it). */
  smm: onOff.optional(),
  /** VMware's I/O port. */
  vmport: onOff.optional(),
  /** Paravirtual spinlocks (`kvm-pv-unhalt`). */
  pvspinlock: onOff.optional(),
  /** The guest CPU's performance monitoring unit (`-cpu …,pmu=`). */
  pmu: onOff.optional(),
  /** The APIC's paravirtual end of interrupt. */
  apicEoi: onOff.optional(),
  hyperv: hypervSchema.optional(),
  kvm: kvmFeaturesSchema.optional(),
  /** Where the I/O APIC is emulated: in KVM (`kvm`) or in QEMU (`qemu`, split irqchip). */
  ioapic: z.enum(['kvm', 'qemu']).optional(),
  vmcoreinfo: onOff.optional(),
} as const;

/** A NUMA cell of `<cpu><numa>`. */
export const numaCellSchema = z.strictObject({
  id: z.number().int().min(0).max(63).optional(),
  /** The vCPUs of the cell, as a cpuset-style list; a cell without any holds only memory. */
  cpus: z
    .string()
    .regex(/^\s*\d+(-\d+)?(\s*,\s*\d+(-\d+)?)*\s*$/, 'a list of vCPUs such as "0-3"')
    .optional(),
  memoryKiB: z
    .number()
    .int()
    .positive()
    .max(2 ** 52),
  memAccess: z.enum(['shared', 'private']).optional(),
  /** Discards the cell's memory content when the guest stops (file-backed memory only). */
  discard: z.boolean().optional(),
});

/**
 * The application's own data (libvirt's `<metadata>`): the XML of its child elements, each in its
 * own namespace, kept verbatim (namespaces declared on each child) and never interpreted.
 */
export const metadataSchema = z.string().max(256 * 1024);

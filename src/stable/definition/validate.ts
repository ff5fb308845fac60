import { randomUUID } from 'node:crypto';
import type { z } from 'zod';
import { ErrorCode, VirtError } from '../../errors.js';
import { parseCpuset } from '../../util/cpuset.js';
import { type DomainDefinition, domainDefinitionSchema } from './schema.js';
import { canonicalMetadata } from './xml-metadata.js';
import { MAX_XML_BYTES } from './xml-tree.js';

/**
 * Validates a typed definition and resolves its defaults, or throws a VirtError naming the field:
 * `CONFIG_UNSUPPORTED` for a key virtkit does not know, `XML_ERROR` for a wrong or inconsistent value.
 * @internal
 */
export function resolveDefinition(input: unknown): DomainDefinition {
  let parsed: ReturnType<typeof domainDefinitionSchema.safeParse>;
  try {
    parsed = domainDefinitionSchema.safeParse(input);
  } catch (err) {
    // A getter or proxy trap of the caller's object threw while it was read: the definition is
    // unreadable, which is the caller's input error, reported as such and never as their own error.
    throw new VirtError(
      ErrorCode.XML_ERROR,
      `invalid domain definition: a field could not be read (${err instanceof Error ? err.message : String(err)}); pass plain data`,
      { path: '(root)' },
      { cause: err },
    );
  }
  if (!parsed.success) throw fromZodError(parsed.error);
  const def = { ...parsed.data, uuid: parsed.data.uuid ?? randomUUID() };
  if (def.metadata !== undefined) def.metadata = canonicalMetadata(def.metadata);
  checkSize(def);
  checkSemantics(def);
  checkPlatform(def);
  checkAudio(def);
  checkIommu(def);
  return def;
}

/** libvirt's qemuValidateDomainDeviceDefIOMMU rules for an intel IOMMU. */
function checkIommu(def: DomainDefinition): void {
  const iommu = def.iommu;
  if (!iommu) return;
  const machine = def.os.machine ?? 'pc';
  if (!/q35/.test(machine))
    throw new VirtError(
      ErrorCode.CONFIG_UNSUPPORTED,
      `an intel IOMMU needs a q35 machine, not '${machine}'`,
      { path: 'iommu.model' },
    );
  const d = iommu.driver;
  if (d?.intremap && def.features?.ioapic !== 'qemu')
    throw invalid(
      'iommu.driver.intremap',
      "interrupt remapping needs the split I/O APIC: add <ioapic driver='qemu'/> to <features>",
    );
  if (d?.eim && !d.intremap) throw invalid('iommu.driver.eim', "eim needs intremap='on'");
}

/** Audio ids are unique, and a sound card or VNC names an existing one; a backend's options fit it. */
function checkAudio(def: DomainDefinition): void {
  const ids = new Set<number>();
  (def.audios ?? []).forEach((a, i) => {
    if (ids.has(a.id)) throw invalid(`audios.${i}.id`, `audio id ${a.id} is given twice`);
    ids.add(a.id);
    const only = (what: string, owner: string, present: boolean) => {
      if (present)
        throw invalid(`audios.${i}.${what}`, `${what} is an option of ${owner} backends, not ${a.type}`);
    };
    only('path', 'file', a.type !== 'file' && a.path !== undefined);
    for (const k of ['tryMMap', 'exclusive', 'dspPolicy'] as const)
      only(k, 'oss', a.type !== 'oss' && a[k] !== undefined);
    for (const dir of ['input', 'output'] as const) {
      const d = a[dir];
      if (!d) continue;
      if (d.dev !== undefined && a.type !== 'alsa' && a.type !== 'oss')
        throw invalid(`audios.${i}.${dir}.dev`, `dev is an option of alsa and oss backends, not ${a.type}`);
      for (const k of ['bufferCount', 'tryPoll'] as const)
        if (d[k] !== undefined && a.type !== 'oss')
          throw invalid(`audios.${i}.${dir}.${k}`, `${k} is an option of oss backends, not ${a.type}`);
    }
  });
  const refs: Array<[string, number | undefined]> = [
    ...(def.sounds ?? []).map((s, i): [string, number | undefined] => [`sounds.${i}.audio`, s.audio]),
    ...(def.graphics ?? []).map((g, i): [string, number | undefined] => [`graphics.${i}.audio`, g.audio]),
  ];
  for (const [path, id] of refs) {
    if (id !== undefined && !ids.has(id))
      throw invalid(path, `there is no <audio id='${id}'> backend (add one or remove the reference)`);
  }
}

/**
 * The largest typed definition, as the JSON it is stored as: twice the XML limit, because the
 * resolved definition spells out defaults a document leaves implicit, so every document within the
 * XML limit fits, and no way of defining a domain stores much more than the XML way could.
 * @internal
 */
export const MAX_DEFINITION_JSON_BYTES = 2 * MAX_XML_BYTES;

function checkSize(def: DomainDefinition): void {
  const size = Buffer.byteLength(JSON.stringify(def), 'utf8');
  if (size > MAX_DEFINITION_JSON_BYTES) {
    throw new VirtError(
      ErrorCode.XML_ERROR,
      `the domain definition is ${size} bytes as JSON, more than the limit of ${MAX_DEFINITION_JSON_BYTES} bytes; a domain definition is a few KiB: remove what does not belong in it`,
      { path: '(root)', size, limit: MAX_DEFINITION_JSON_BYTES },
    );
  }
}

function fromZodError(error: z.ZodError): VirtError {
  const issue = error.issues[0];
  if (!issue) return new VirtError(ErrorCode.XML_ERROR, 'invalid domain definition');
  const path = issue.path.map(String).join('.');
  if (issue.code === 'unrecognized_keys') {
    const keys = issue.keys.join(', ');
    const where = path ? `${path}.${issue.keys[0]}` : issue.keys[0];
    return new VirtError(
      ErrorCode.CONFIG_UNSUPPORTED,
      `unsupported field ${keys}${path ? ` in ${path}` : ''}: virtkit does not support it; remove it`,
      { path: where },
    );
  }
  return new VirtError(
    ErrorCode.XML_ERROR,
    `invalid domain definition: ${path || '(root)'}: ${issue.message}`,
    {
      path: path || '(root)',
    },
  );
}

function invalid(path: string, message: string): VirtError {
  return new VirtError(ErrorCode.XML_ERROR, `invalid domain definition: ${path}: ${message}`, { path });
}

function checkMemoryDevices(def: DomainDefinition): void {
  const dimms = def.memoryDevices ?? [];
  if (dimms.length === 0) return;
  if (!def.maxMemory) {
    throw invalid('memoryDevices', "memory devices need <maxMemory slots='N'> (the hot-pluggable range)");
  }
  if (dimms.length > def.maxMemory.slots) {
    throw invalid('memoryDevices', `${dimms.length} memory devices for ${def.maxMemory.slots} slot(s)`);
  }
  const total = dimms.reduce((sum, d) => sum + d.sizeKiB, 0);
  if (total >= def.memoryKiB) {
    throw invalid(
      'memoryKiB',
      `the memory devices hold ${total} KiB of the domain's ${def.memoryKiB} KiB: memory is the total, boot memory included`,
    );
  }
  const slots = new Set<number>();
  dimms.forEach((d, i) => {
    if (d.slot === undefined) return;
    if (d.slot >= def.maxMemory!.slots || slots.has(d.slot)) {
      throw invalid(
        `memoryDevices.${i}.slot`,
        `slot ${d.slot} is taken or outside 0-${def.maxMemory!.slots - 1}`,
      );
    }
    slots.add(d.slot);
  });
}

function checkSemantics(def: DomainDefinition): void {
  const vcpus = def.vcpu.count;
  if (def.currentMemoryKiB !== undefined && def.currentMemoryKiB > def.memoryKiB) {
    throw invalid('currentMemoryKiB', `${def.currentMemoryKiB} KiB exceeds memory ${def.memoryKiB} KiB`);
  }
  if (def.maxMemory && def.maxMemory.kib < def.memoryKiB) {
    throw invalid('maxMemory.kib', 'maxMemory must be at least the memory size');
  }
  checkMemoryDevices(def);
  const cells = def.cpu?.numa?.length ?? 0;
  def.numatune?.memnodes?.forEach((m, i) => {
    if (m.cellid >= cells)
      throw invalid(
        `numatune.memnodes.${i}.cellid`,
        `guest NUMA cell ${m.cellid} does not exist (<cpu><numa>)`,
      );
    if (def.numatune?.memnodes?.findIndex((o) => o.cellid === m.cellid) !== i)
      throw invalid(`numatune.memnodes.${i}.cellid`, `a second memnode for cell ${m.cellid}`);
  });
  for (const [path, nodeset] of [
    ['numatune.memory.nodeset', def.numatune?.memory?.nodeset],
    ...(def.numatune?.memnodes ?? []).map((m, i) => [`numatune.memnodes.${i}.nodeset`, m.nodeset]),
  ] as const) {
    if (nodeset !== undefined && !parseCpuset(nodeset)?.length)
      throw invalid(path, `malformed or empty nodeset "${nodeset}"`);
  }
  def.panics?.forEach((p, i) => {
    if (def.panics?.findIndex((q) => q.model === p.model) !== i)
      throw invalid(`panics.${i}.model`, `a second panic device of model '${p.model}'`);
    if (p.model !== 'isa' && p.iobase !== undefined)
      throw invalid(`panics.${i}.iobase`, 'only an isa panic device has an I/O port');
  });
  if (def.vcpu.current !== undefined && def.vcpu.current > vcpus) {
    throw invalid('vcpu.current', `${def.vcpu.current} exceeds the vcpu count ${vcpus}`);
  }
  const topo = def.cpu?.topology;
  if (topo && topo.sockets * topo.dies * topo.cores * topo.threads !== vcpus) {
    throw invalid(
      'cpu.topology',
      `sockets*dies*cores*threads = ${topo.sockets * topo.dies * topo.cores * topo.threads} must equal the vcpu count ${vcpus}`,
    );
  }
  const tune = def.cputune;
  tune?.vcpupin.forEach((pin, i) => {
    if (pin.vcpu >= vcpus) throw invalid(`cputune.vcpupin.${i}.vcpu`, `vCPU ${pin.vcpu} does not exist`);
    if (!parseCpuset(pin.cpuset))
      throw invalid(`cputune.vcpupin.${i}.cpuset`, `malformed cpuset "${pin.cpuset}"`);
  });
  if (tune?.emulatorpin && !parseCpuset(tune.emulatorpin.cpuset)) {
    throw invalid('cputune.emulatorpin.cpuset', `malformed cpuset "${tune.emulatorpin.cpuset}"`);
  }
  def.controllers.forEach((c, i) => {
    const thread = c.type === 'scsi' ? c.driver?.iothread : undefined;
    if (thread !== undefined && thread > def.iothreads)
      throw invalid(
        `controllers.${i}.driver.iothread`,
        `iothread ${thread} does not exist (<iothreads> is ${def.iothreads})`,
      );
  });
  tune?.iothreadpin.forEach((pin, i) => {
    if (pin.iothread > def.iothreads) {
      throw invalid(`cputune.iothreadpin.${i}.iothread`, `iothread ${pin.iothread} does not exist`);
    }
  });
  for (const [key, entries, count, base] of [
    ['vcpusched', tune?.vcpusched ?? [], vcpus, 0],
    ['iothreadsched', tune?.iothreadsched ?? [], def.iothreads, 1],
  ] as const) {
    entries.forEach((entry, i) => {
      const path = `cputune.${key}.${i}`;
      const ids = parseCpuset(entry.ids);
      if (!ids) throw invalid(`${path}.ids`, `malformed id list "${entry.ids}"`);
      const bad = ids.find((id) => id < base || id >= count + base);
      if (bad !== undefined)
        throw invalid(`${path}.ids`, `${key === 'vcpusched' ? 'vCPU' : 'iothread'} ${bad} does not exist`);
      const realtime = entry.scheduler === 'fifo' || entry.scheduler === 'rr';
      if (realtime && !(entry.priority && entry.priority >= 1)) {
        throw invalid(`${path}.priority`, `${entry.scheduler} needs a priority from 1 to 99`);
      }
      if (!realtime && entry.priority)
        throw invalid(`${path}.priority`, `${entry.scheduler} takes no priority`);
    });
  }
  const targets = new Set<string>();
  def.disks.forEach((disk, i) => {
    if (targets.has(disk.target.dev))
      throw invalid(`disks.${i}.target.dev`, `duplicate disk target ${disk.target.dev}`);
    targets.add(disk.target.dev);
    if (
      disk.readonly &&
      disk.device === 'disk' &&
      (disk.target.bus === 'sata' || disk.target.bus === 'ide')
    ) {
      // QEMU's ide-hd has no read-only mode; libvirt refuses the same.
      throw new VirtError(
        ErrorCode.CONFIG_UNSUPPORTED,
        `a read-only ${disk.target.bus} disk is not supported (disks.${i}); use device 'cdrom' or the virtio bus`,
        { path: `disks.${i}.readonly` },
      );
    }
    checkDiskDriver(def, disk, `disks.${i}.driver`);
    if (disk.backingStore && disk.driver.type !== 'qcow2') {
      throw invalid(
        `disks.${i}.backingStore`,
        `a ${disk.driver.type} image has no backing store (qcow2 only)`,
      );
    }
  });
  if (def.os.initrd && !def.os.kernel) throw invalid('os.initrd', 'an initrd needs a kernel');
  if (def.os.cmdline !== undefined && !def.os.kernel)
    throw invalid('os.cmdline', 'a kernel command line needs a kernel');
}

/** The driver settings QEMU would refuse at start, refused at define time instead. */
function checkDiskDriver(def: DomainDefinition, disk: DomainDefinition['disks'][number], path: string): void {
  if (disk.model !== undefined && disk.target.bus !== 'virtio')
    throw invalid(
      path.replace(/\.driver$/, '.model'),
      `a ${disk.model} model on the ${disk.target.bus} bus (virtio only)`,
    );
  const { iothread, io, cache } = disk.driver;
  if (iothread !== undefined) {
    if (disk.target.bus !== 'virtio')
      throw invalid(
        `${path}.iothread`,
        `an iothread serves virtio disks only, not the ${disk.target.bus} bus`,
      );
    if (iothread > def.iothreads)
      throw invalid(
        `${path}.iothread`,
        `iothread ${iothread} does not exist (the domain has ${def.iothreads})`,
      );
  }
  // QEMU's file driver refuses Linux native AIO over the host page cache.
  if (io === 'native' && cache !== 'none' && cache !== 'directsync') {
    throw invalid(`${path}.io`, "io 'native' needs cache 'none' or 'directsync'");
  }
}

/** The platform parts: NUMA cells that cover the vCPUs and memory, firmware that fits together. */
function checkPlatform(def: DomainDefinition): void {
  const cells = def.cpu?.numa;
  if (cells) {
    const seen = new Set<number>();
    let memory = 0;
    cells.forEach((cell, i) => {
      if (cell.id !== undefined && cell.id !== i) {
        throw invalid(`cpu.numa.${i}.id`, `NUMA cell ids must be 0, 1, … in order; found ${cell.id} at ${i}`);
      }
      const cpus = cell.cpus === undefined ? [] : parseCpuset(cell.cpus);
      if (!cpus) throw invalid(`cpu.numa.${i}.cpus`, `malformed vCPU list "${cell.cpus}"`);
      for (const cpu of cpus) {
        if (cpu >= def.vcpu.count) throw invalid(`cpu.numa.${i}.cpus`, `vCPU ${cpu} does not exist`);
        if (seen.has(cpu)) throw invalid(`cpu.numa.${i}.cpus`, `vCPU ${cpu} is in two NUMA cells`);
        seen.add(cpu);
      }
      memory += cell.memoryKiB;
    });
    // The memory devices (DIMMs) come on top of the cells' memory.
    const devices = (def.memoryDevices ?? []).reduce((sum, d) => sum + d.sizeKiB, 0);
    if (memory + devices !== def.memoryKiB) {
      throw invalid(
        'cpu.numa',
        `the NUMA cells hold ${memory} KiB and the memory devices ${devices} KiB, the domain ${def.memoryKiB} KiB: they must match`,
      );
    }
  }
  checkHugepages(def);
  checkCpuCacheAndAddress(def);
  if (def.vcpu.cpuset !== undefined && !parseCpuset(def.vcpu.cpuset)) {
    throw invalid('vcpu.cpuset', `malformed cpuset "${def.vcpu.cpuset}"`);
  }
  const os = def.os;
  if (os.firmware === 'bios' && os.nvram) throw invalid('os.nvram', 'BIOS firmware has no NVRAM');
  if (os.loader?.type === 'rom' && os.nvram) throw invalid('os.nvram', 'a ROM loader has no NVRAM');
  if (os.loader?.secure && !def.features?.smm) {
    throw invalid('os.loader.secure', 'secure boot needs SMM: add features.smm');
  }
  if (os.smbios === 'sysinfo' && !def.sysinfo) throw invalid('os.smbios', "mode 'sysinfo' needs a sysinfo");
  if (os.firmware !== undefined && os.loader) {
    throw invalid(
      'os.loader',
      `firmware '${os.firmware}' asks virtkit to pick the firmware; a loader names it: give one of the two`,
    );
  }
  // qemu_validate.c: OVMF on x86 finds its devices through ACPI tables.
  const uefi = os.firmware === 'efi' || os.loader?.type === 'pflash';
  if (uefi && def.features?.acpi === false) {
    throw invalid('features.acpi', 'UEFI firmware on x86_64 needs ACPI: turn acpi on, or boot with BIOS');
  }
  def.videos?.forEach((video, i) => {
    if (video.model === 'ramfb' && video.address) {
      throw invalid(`videos.${i}.address`, 'ramfb is not a PCI device and takes no address');
    }
  });
}

/**
 * `<hugepages><page>`: as libvirt, the nodesets name guest NUMA cells that exist (node 0 only
 * without cells), no cell in two pages, at most one page without a nodeset; pages need
 * `<hugepages>` itself.
 */
function checkHugepages(def: DomainDefinition): void {
  const backing = def.memoryBacking;
  const pages = backing?.pages;
  if (!pages) return;
  if (!backing.hugepages) throw invalid('memoryBacking.pages', 'huge page sizes need hugepages');
  const cells = Math.max(1, def.cpu?.numa?.length ?? 0);
  const seen = new Set<number>();
  let fallback = false;
  pages.forEach((page, i) => {
    const path = `memoryBacking.pages.${i}`;
    if (page.nodeset === undefined) {
      if (fallback) throw invalid(path, 'a second huge page size without a nodeset');
      fallback = true;
      return;
    }
    const nodes = parseCpuset(page.nodeset);
    if (!nodes) throw invalid(`${path}.nodeset`, `malformed nodeset "${page.nodeset}"`);
    for (const n of nodes) {
      if (n >= cells) throw invalid(`${path}.nodeset`, `hugepages: guest NUMA node ${n} does not exist`);
      if (seen.has(n)) throw invalid(`${path}.nodeset`, `guest NUMA node ${n} is in two huge page sizes`);
      seen.add(n);
    }
  });
}

/** `<cpu><cache>` and `<maxphysaddr>`, as libvirt's qemuValidateDomainDefCpu. */
function checkCpuCacheAndAddress(def: DomainDefinition): void {
  const cache = def.cpu?.cache;
  if (cache?.mode === 'emulate' && cache.level !== 3) {
    throw invalid('cpu.cache.level', "CPU cache mode 'emulate' can only be used with level 3");
  }
  if (cache && cache.mode !== 'emulate' && cache.level !== undefined) {
    throw invalid('cpu.cache.level', `CPU cache mode '${cache.mode}' takes no level`);
  }
  if (cache?.mode === 'passthrough' && def.cpu?.mode !== 'host-passthrough') {
    throw invalid(
      'cpu.cache.mode',
      "CPU cache mode 'passthrough' can only be used with a host-passthrough CPU",
    );
  }
  const addr = def.cpu?.maxphysaddr;
  if (addr?.mode === 'emulate' && addr.bits === undefined) {
    throw invalid('cpu.maxphysaddr.bits', "physical address mode 'emulate' needs bits");
  }
  if (addr?.mode === 'passthrough' && addr.bits !== undefined) {
    throw invalid('cpu.maxphysaddr.bits', "physical address mode 'passthrough' takes no bits");
  }
}

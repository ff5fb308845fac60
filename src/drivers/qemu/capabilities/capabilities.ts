import { join } from 'node:path';
import { ErrorCode, VirtError } from '../../../errors.js';
import type {
  Capabilities,
  DomainCapabilities,
  DomainCapabilitiesOptions,
  GuestCapabilities,
  HostCapabilities,
} from '../../../stable/capabilities.js';
import { cachedProbe } from './cache.js';
import { schemaHas, schemaMaximum, schemaValues } from './definition-tables.js';
import { hostCapabilities } from './host.js';
import { canonicalMachineType } from './machine-types.js';
import type { EmulatorProbe } from './probe.js';

/**
 * Where a root keeps its emulator probes.
 *
 * @internal
 */
export function capabilityCache(layout: { readonly lib: string }): string {
  return join(layout.lib, 'capabilities');
}

/** Word sizes of the architectures QEMU's x86 emulators provide. */
const WORDSIZE: Readonly<Record<string, number>> = { x86_64: 64, i686: 32 };

function esc(text: string | number): string {
  return String(text)
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/'/g, '&apos;');
}

function guestOf(probe: EmulatorProbe): GuestCapabilities {
  const machines = probe.machines.flatMap((m) => [
    { name: m.name, maxCpus: m.maxCpus },
    ...(m.alias ? [{ name: m.alias, canonical: m.name, maxCpus: m.maxCpus }] : []),
  ]);
  return {
    osType: 'hvm',
    arch: probe.arch,
    wordsize: WORDSIZE[probe.arch] ?? 64,
    emulator: probe.emulator,
    machines,
    domainTypes: probe.kvm ? ['qemu', 'kvm'] : ['qemu'],
  };
}

function hostXml(host: HostCapabilities): string[] {
  const { cpu } = host;
  const out = ['  <host>', '    <cpu>', `      <arch>${esc(cpu.arch)}</arch>`];
  if (cpu.model) out.push(`      <model>${esc(cpu.model)}</model>`);
  if (cpu.vendor) out.push(`      <vendor>${esc(cpu.vendor)}</vendor>`);
  if (cpu.signature) {
    const s = cpu.signature;
    out.push(`      <signature family='${s.family}' model='${s.model}' stepping='${s.stepping}'/>`);
  }
  const t = cpu.topology;
  out.push(
    `      <topology sockets='${t.sockets}' dies='${t.dies}' cores='${t.cores}' threads='${t.threads}'/>`,
  );
  for (const f of cpu.features) out.push(`      <feature name='${esc(f)}'/>`);
  for (const size of cpu.pageSizesKiB) out.push(`      <pages unit='KiB' size='${size}'/>`);
  out.push('    </cpu>', '    <topology>', `      <cells num='${host.cells.length}'>`);
  for (const cell of host.cells) {
    out.push(`        <cell id='${cell.id}'>`, `          <memory unit='KiB'>${cell.memoryKiB}</memory>`);
    for (const p of cell.pages)
      out.push(`          <pages unit='KiB' size='${p.sizeKiB}'>${p.count}</pages>`);
    out.push('          <distances>');
    for (const d of cell.distances) out.push(`            <sibling id='${d.id}' value='${d.value}'/>`);
    out.push('          </distances>', `          <cpus num='${cell.cpus.length}'>`);
    for (const c of cell.cpus) {
      out.push(
        `            <cpu id='${c.id}' socket_id='${c.socketId}' die_id='${c.dieId}' core_id='${c.coreId}' siblings='${esc(c.siblings)}'/>`,
      );
    }
    out.push('          </cpus>', '        </cell>');
  }
  out.push(
    '      </cells>',
    '    </topology>',
    '    <secmodel>',
    '      <model>none</model>',
    '      <doi>0</doi>',
  );
  out.push('    </secmodel>', '  </host>');
  return out;
}

function guestXml(g: GuestCapabilities): string[] {
  const out = ['  <guest>', `    <os_type>${g.osType}</os_type>`, `    <arch name='${esc(g.arch)}'>`];
  out.push(`      <wordsize>${g.wordsize}</wordsize>`, `      <emulator>${esc(g.emulator)}</emulator>`);
  for (const m of g.machines) {
    const canonical = m.canonical ? ` canonical='${esc(m.canonical)}'` : '';
    out.push(`      <machine${canonical} maxCpus='${m.maxCpus}'>${esc(m.name)}</machine>`);
  }
  for (const type of g.domainTypes) out.push(`      <domain type='${type}'/>`);
  out.push('    </arch>', '    <features>');
  // What the definition schema offers for every x86 guest, as libvirt words it.
  if (schemaHas(['features', 'acpi'])) out.push("      <acpi default='on' toggle='yes'/>");
  if (schemaHas(['features', 'apic'])) out.push("      <apic default='on' toggle='yes'/>");
  if (schemaHas(['cpu', 'model'])) out.push('      <cpuselection/>');
  if (schemaHas(['disks', '[]', 'bootOrder'])) out.push('      <deviceboot/>');
  out.push('    </features>', '  </guest>');
  return out;
}

/**
 * The capabilities of this host with `emulators` (probed once each, cached under `cacheDir`).
 *
 * @internal
 */
export async function buildCapabilities(
  cacheDir: string,
  emulators: readonly string[],
): Promise<Capabilities> {
  const probes = await Promise.all(emulators.map((e) => cachedProbe(cacheDir, e)));
  const host = hostCapabilities();
  const guests = probes.map(guestOf);
  const xml = ['<capabilities>', '', ...hostXml(host), ''];
  for (const g of guests) xml.push(...guestXml(g), '');
  xml.push('</capabilities>', '');
  return { xml: xml.join('\n'), host, guests };
}

function enumXml(name: string, values: readonly string[], indent: string): string[] {
  if (values.length === 0) return [`${indent}<enum name='${name}'/>`];
  return [
    `${indent}<enum name='${name}'>`,
    ...values.map((v) => `${indent}  <value>${esc(v)}</value>`),
    `${indent}</enum>`,
  ];
}

/**
 * What virtkit supports with `options.emulator` (libvirt's domain capabilities), derived from the
 * definition schema and the emulator's probe.
 *
 * @throws VirtError `CONFIG_UNSUPPORTED` for an architecture, machine type or domain type that
 *   the emulator or host does not provide
 * @internal
 */
export async function buildDomainCapabilities(
  cacheDir: string,
  emulator: string,
  options: DomainCapabilitiesOptions,
): Promise<DomainCapabilities> {
  const probe = await cachedProbe(cacheDir, emulator);
  const archs = schemaValues(['os', 'arch']);
  const arch = options.arch ?? probe.arch;
  if (arch !== probe.arch || !archs.includes(arch)) {
    throw new VirtError(
      ErrorCode.CONFIG_UNSUPPORTED,
      `the architecture '${arch}' is not supported with ${emulator} (virtkit supports ${archs.join(', ')}, the emulator ${probe.arch})`,
      { arch, path: emulator },
    );
  }
  const domainType = options.virttype ?? (probe.kvm ? 'kvm' : 'qemu');
  if (!schemaValues(['type']).includes(domainType) || (domainType === 'kvm' && !probe.kvm)) {
    throw new VirtError(
      ErrorCode.CONFIG_UNSUPPORTED,
      `the domain type '${domainType}' is not available with ${emulator} on this host${domainType === 'kvm' ? ' (KVM is not usable)' : ''}`,
      { virttype: domainType, path: emulator },
    );
  }
  const machine = canonicalMachineType(probe, options.machine);
  const machineInfo = probe.machines.find((m) => m.name === machine);
  if (machine === undefined || machineInfo === undefined) {
    throw new VirtError(
      ErrorCode.CONFIG_UNSUPPORTED,
      `the emulator ${emulator} has no machine type '${options.machine ?? '(default)'}'`,
      { machine: options.machine ?? null, path: emulator },
    );
  }
  const maxVcpus = Math.min(machineInfo.maxCpus, schemaMaximum(['vcpu', 'count']));
  // host-passthrough and host-model need KVM: TCG has no host CPU to pass through.
  const cpuModes = schemaValues(['cpu', 'mode']).filter(
    (m) => domainType === 'kvm' || (m !== 'host-passthrough' && m !== 'host-model'),
  );
  const cpuModels = probe.cpuModels.filter((m) => !m.deprecated).map((m) => m.name);
  const enums: Record<string, string[]> = {
    cpuMode: cpuModes,
    diskDevice: schemaValues(['disks', '[]', 'device']),
    // IDE is refused on q35 (its AHCI controller has no IDE buses).
    bus: schemaValues(['disks', '[]', 'target', 'bus']).filter(
      (b) => b !== 'ide' || !machine.includes('q35'),
    ),
    diskType: schemaValues(['disks', '[]', 'type']),
    driverType: schemaValues(['disks', '[]', 'driver', 'type']),
    interfaceType: schemaValues(['interfaces', '[]', 'type']),
    interfaceModel: schemaValues(['interfaces', '[]', 'model']),
    serialType: schemaValues(['serials', '[]', 'type']),
  };
  const xml = [
    '<domainCapabilities>',
    `  <path>${esc(emulator)}</path>`,
    `  <domain>${domainType}</domain>`,
    `  <machine>${esc(machine)}</machine>`,
    `  <arch>${esc(arch)}</arch>`,
    `  <vcpu max='${maxVcpus}'/>`,
    `  <iothreads supported='${schemaHas(['iothreads']) ? 'yes' : 'no'}'/>`,
    "  <os supported='yes'>",
    ...enumXml('firmware', [], '    '),
    "    <loader supported='no'/>",
    '  </os>',
    '  <cpu>',
  ];
  for (const mode of ['host-passthrough', 'maximum', 'host-model', 'custom']) {
    if (mode === 'custom' && cpuModes.includes(mode)) {
      xml.push("    <mode name='custom' supported='yes'>");
      for (const m of cpuModels) xml.push(`      <model usable='unknown'>${esc(m)}</model>`);
      xml.push('    </mode>');
    } else {
      xml.push(`    <mode name='${mode}' supported='${cpuModes.includes(mode) ? 'yes' : 'no'}'/>`);
    }
  }
  xml.push(
    '  </cpu>',
    `  <memoryBacking supported='${schemaHas(['memoryBacking']) ? 'yes' : 'no'}'>`,
    ...enumXml('sourceType', [], '    '),
    '  </memoryBacking>',
    '  <devices>',
    "    <disk supported='yes'>",
    ...enumXml('diskDevice', enums.diskDevice ?? [], '      '),
    ...enumXml('bus', enums.bus ?? [], '      '),
    ...enumXml('model', [], '      '),
    '    </disk>',
  );
  for (const unsupported of [
    'graphics',
    'video',
    'hostdev',
    'rng',
    'filesystem',
    'tpm',
    'redirdev',
    'channel',
    'crypto',
  ]) {
    xml.push(`    <${unsupported} supported='no'/>`);
  }
  xml.push('  </devices>', '  <features>');
  for (const feature of [
    'gic',
    'vmcoreinfo',
    'genid',
    'backingStoreInput',
    'backup',
    'sev',
    'sgx',
    'hyperv',
  ]) {
    xml.push(`    <${feature} supported='no'/>`);
  }
  xml.push('  </features>', '</domainCapabilities>', '');
  return { xml: xml.join('\n'), emulator, domainType, machine, arch, maxVcpus, enums, cpuModels };
}

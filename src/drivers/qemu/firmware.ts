import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCode, VirtError } from '../../errors.js';
import type { DomainDefinition } from '../../stable/definition/schema.js';

/*
 * The firmware a domain boots: SeaBIOS (QEMU's default, nothing to pass), a loader the definition
 * names, or UEFI picked the way libvirt picks it: from the firmware descriptors that distributions
 * install under /usr/share/qemu/firmware (Debian's `ovmf` package), the first that is UEFI in flash
 * for x86_64 and the domain's machine, without secure boot. A UEFI domain has its own copy of the
 * variable store, made from the descriptor's template when missing (libvirt's `<nvram>`), by default
 * `<root>/lib/nvram/<name>_VARS.fd`; it is the domain's data and survives restarts.
 */

/** The firmware files of a domain. */
export interface FirmwarePaths {
  /** The executable image. */
  readonly code: string;
  readonly type: 'pflash' | 'rom';
  readonly readonly: boolean;
  /** The domain's variable store (pflash unit 1), when it has one. */
  readonly vars?: string;
  /** Where `vars` is copied from when it does not exist yet. */
  readonly template?: string;
}

/** Where QEMU's firmware descriptors live, in libvirt's order of precedence. */
export const FIRMWARE_DESCRIPTOR_DIRS = ['/etc/qemu/firmware', '/usr/share/qemu/firmware'];

interface Descriptor {
  readonly 'interface-types'?: readonly string[];
  readonly mapping?: {
    readonly device?: string;
    readonly executable?: { readonly filename?: string };
    readonly 'nvram-template'?: { readonly filename?: string };
  };
  readonly targets?: ReadonlyArray<{ readonly architecture?: string; readonly machines?: readonly string[] }>;
  readonly features?: readonly string[];
}

function readDescriptors(dirs: readonly string[]): Descriptor[] {
  const byName = new Map<string, Descriptor>();
  for (const dir of dirs) {
    let names: string[];
    try {
      names = readdirSync(dir).filter((n) => n.endsWith('.json'));
    } catch {
      continue;
    }
    for (const name of names) {
      if (byName.has(name)) continue;
      try {
        byName.set(name, JSON.parse(readFileSync(join(dir, name), 'utf8')) as Descriptor);
      } catch {
        // A descriptor that does not parse is skipped, as QEMU's and libvirt's loaders do.
      }
    }
  }
  return [...byName.keys()].sort().map((n) => byName.get(n) as Descriptor);
}

const globMatch = (pattern: string, value: string): boolean =>
  new RegExp(
    `^${pattern
      .replace(/[.+^${}()|[\]\\]/g, '\\$&')
      .replace(/\*/g, '.*')
      .replace(/\?/g, '.')}$`,
  ).test(value);

/** The machine name a descriptor's globs are matched against (`q35` → `pc-q35-*` style). */
function machineForMatch(machine: string | undefined): string {
  if (!machine || machine === 'pc') return 'pc-i440fx-';
  if (machine === 'q35') return 'pc-q35-';
  return machine;
}

function pickUefi(def: DomainDefinition, dirs: readonly string[]): Descriptor | undefined {
  const machine = machineForMatch(def.os.machine);
  return readDescriptors(dirs).find((d) => {
    const features = d.features ?? [];
    return (
      d['interface-types']?.includes('uefi') &&
      d.mapping?.device === 'flash' &&
      d.mapping.executable?.filename &&
      !features.includes('secure-boot') &&
      !features.includes('enrolled-keys') &&
      (!features.includes('requires-smm') || def.features?.smm === true) &&
      d.targets?.some(
        (t) =>
          t.architecture === 'x86_64' &&
          (t.machines ?? []).some((m) => globMatch(m, machine) || globMatch(m, `${machine}99.9`)),
      )
    );
  });
}

/** The template a descriptor gives for `code`, when one describes it. */
function templateFor(code: string, dirs: readonly string[]): string | undefined {
  return readDescriptors(dirs).find((d) => d.mapping?.executable?.filename === code)?.mapping?.[
    'nvram-template'
  ]?.filename;
}

/**
 * The firmware files of `def`, or undefined for QEMU's default BIOS. `nvramDir` is where a UEFI
 * domain's variable store goes when the definition does not name one.
 */
export function resolveFirmware(
  def: DomainDefinition,
  nvramDir: string,
  dirs: readonly string[] = FIRMWARE_DESCRIPTOR_DIRS,
): FirmwarePaths | undefined {
  const { loader, nvram, firmware } = def.os;
  const defaultVars = join(nvramDir, `${def.name}_VARS.fd`);
  if (loader) {
    if (loader.type === 'rom') return { code: loader.path, type: 'rom', readonly: true };
    if (!loader.readonly) return { code: loader.path, type: 'pflash', readonly: false };
    const template = nvram?.template ?? templateFor(loader.path, dirs);
    return {
      code: loader.path,
      type: 'pflash',
      readonly: true,
      vars: nvram?.path ?? defaultVars,
      ...(template !== undefined && { template }),
    };
  }
  if (firmware !== 'efi') return undefined;
  const found = pickUefi(def, dirs);
  const code = found?.mapping?.executable?.filename;
  if (!found || !code) {
    throw new VirtError(
      ErrorCode.CONFIG_UNSUPPORTED,
      `no UEFI firmware for x86_64 and machine '${def.os.machine ?? 'pc'}' is described in ${dirs.join(' or ')}; install Debian's ovmf package, or name a <loader>`,
      { path: 'os.firmware' },
    );
  }
  const template = nvram?.template ?? found.mapping?.['nvram-template']?.filename;
  return {
    code,
    type: 'pflash',
    readonly: true,
    vars: nvram?.path ?? defaultVars,
    ...(template !== undefined && { template }),
  };
}

/** Makes the domain's variable store from its template when it does not exist yet. */
export function ensureNvram(fw: FirmwarePaths | undefined): void {
  if (!fw?.vars || existsSync(fw.vars)) return;
  if (!fw.template) {
    throw new VirtError(
      ErrorCode.CONFIG_UNSUPPORTED,
      `the NVRAM ${fw.vars} does not exist and no template is known for ${fw.code}; give <nvram template='…'>`,
      { path: 'os.nvram' },
    );
  }
  mkdirSync(join(fw.vars, '..'), { recursive: true, mode: 0o700 });
  copyFileSync(fw.template, fw.vars);
}

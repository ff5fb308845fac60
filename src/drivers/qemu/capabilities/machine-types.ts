/**
 * The part of an emulator probe machine-type expansion needs; no import, so this file can serve
 * the driver and the definition code alike.
 *
 * @internal
 */
export interface MachineTypeTable {
  /** The emulator's machine types: versioned name, alias, whether it is the default. */
  readonly machines: ReadonlyArray<{
    readonly name: string;
    readonly alias?: string;
    readonly isDefault: boolean;
  }>;
}

/**
 * The versioned machine type an emulator gives for `machine`: its alias resolved (`pc` →
 * `pc-i440fx-7.2`, `q35` → `pc-q35-7.2`), the default machine for `undefined`, a versioned name as
 * it is. Storing this name keeps the guest ABI when QEMU is upgraded, as libvirt does.
 *
 * @param probe - the emulator's probe (see `cachedProbe`)
 * @param machine - the machine type of a definition, or undefined for the emulator's default
 * @returns the versioned name, or undefined when the emulator has no such machine type
 * @internal
 */
export function canonicalMachineType(
  probe: MachineTypeTable,
  machine: string | undefined,
): string | undefined {
  if (machine === undefined) {
    const fallback = probe.machines.find((m) => m.isDefault);
    return fallback?.name;
  }
  const exact = probe.machines.find((m) => m.name === machine);
  if (exact) return exact.name;
  return probe.machines.find((m) => m.alias === machine)?.name;
}

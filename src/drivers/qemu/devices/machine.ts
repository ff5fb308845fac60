/** The chipset a machine type emulates, which decides where devices can sit. */
export type MachineFamily = 'i440fx' | 'q35';

/**
 * The chipset of a machine type: `q35` and `pc-q35-*` are Q35 (PCI Express), everything else
 * (`pc`, `pc-i440fx-*`, the default) is i440FX (conventional PCI), as on x86_64 QEMU.
 */
export function machineFamily(machine: string | undefined): MachineFamily {
  return machine !== undefined && /^(pc-)?q35(-|$)/.test(machine) ? 'q35' : 'i440fx';
}

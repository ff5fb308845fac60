import { VirtError } from '../../../errors.js';
import type { DomainDefinition } from '../../../stable/definition/schema.js';
import { expandMachineType } from '../capabilities/cache.js';
import { assignDevices } from './assign.js';

/**
 * The definition the QEMU driver stores: the machine type expanded to the versioned name the
 * emulator reports (`pc` → `pc-i440fx-7.2`, none → the emulator's default), so the guest ABI never
 * changes when QEMU is upgraded, and every device's alias, address and controller assigned.
 *
 * The emulator is probed once and cached. An emulator that cannot be probed, or that does not
 * know the machine type, leaves the name as given: the start then fails with QEMU's own words, as
 * it always did, and a definition is never refused for a binary that may be installed later.
 *
 * @param cacheDir - the driver's capabilities cache directory
 * @param emulator - the emulator the domain will run on
 */
export async function prepareDefinition(
  cacheDir: string,
  emulator: string,
  def: DomainDefinition,
): Promise<DomainDefinition> {
  let machine = def.os.machine;
  try {
    machine = await expandMachineType(cacheDir, emulator, def.os.machine);
  } catch (err) {
    if (!(err instanceof VirtError)) throw err;
  }
  const os = machine === undefined ? def.os : { ...def.os, machine };
  return assignDevices({ ...def, os });
}

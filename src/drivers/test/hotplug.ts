import type { DomainDefinition } from '../../stable/definition/schema.js';
import { resolveDefinition } from '../../stable/definition/validate.js';
import type { PciDeviceDefinition } from '../../stable/devices.js';
import { withDeviceAliases } from '../device-aliases.js';
import { lastDevice, withDevice } from '../device-change.js';

/*
 * The test driver's device model: no addresses and no controllers, only the stable aliases the
 * embedded driver gives (drivers/device-aliases.ts). The rules of a change are the shared ones
 * (drivers/device-change.ts).
 */

/** The definition with the device added (alias named when missing) and validated, and the device as added. */
export function addTo(
  def: DomainDefinition,
  device: PciDeviceDefinition,
): { def: DomainDefinition; device: PciDeviceDefinition } {
  const next = withDeviceAliases(resolveDefinition(withDevice(def, device)));
  return { def: next, device: lastDevice(next, device) };
}

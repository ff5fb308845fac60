import { ErrorCode, VirtError } from '../../../errors.js';
import type { DomainDefinition, PciAddress } from '../../../stable/definition/schema.js';
import { pciAddr } from './assign.js';

/** QEMU's placement properties of a PCI device: its bus (the controller's alias) and slot. */
export interface PciPlacement {
  readonly bus: string;
  readonly addr: string;
  readonly multifunction?: boolean;
}

/** Where on the PCI tree `address` puts a device of `def` (whose controllers are complete). */
export function pciPlacement(
  def: DomainDefinition,
  address: PciAddress | undefined,
  what: string,
): PciPlacement {
  if (!address) throw new VirtError(ErrorCode.INTERNAL_ERROR, `${what} has no PCI address`);
  const bus = def.controllers.find((c) => c.type === 'pci' && c.index === address.bus)?.alias;
  if (bus === undefined)
    throw new VirtError(ErrorCode.INTERNAL_ERROR, `${what}: no controller for PCI bus ${address.bus}`);
  return {
    bus,
    addr: pciAddr(address),
    ...(address.multifunction !== undefined ? { multifunction: address.multifunction } : {}),
  };
}

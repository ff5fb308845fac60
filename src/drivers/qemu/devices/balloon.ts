import type { DomainDefinition } from '../../../stable/definition/schema.js';
import { pciPlacement } from './pci-bus.js';
import type { QapiObject } from './qapi.js';

/** The virtio balloon (`-device` arguments), when the definition has one. */
export function balloonDevice(def: DomainDefinition): QapiObject | undefined {
  const balloon = def.memballoon;
  if (!balloon) return undefined;
  const id = balloon.alias ?? 'balloon0';
  return { driver: 'virtio-balloon-pci', id, ...pciPlacement(def, balloon.address, `balloon ${id}`) };
}

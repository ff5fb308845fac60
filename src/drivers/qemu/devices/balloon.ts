import type { DomainDefinition } from '../../../stable/definition/schema.js';
import { pciPlacement } from './pci-bus.js';
import type { QapiObject } from './qapi.js';
import { virtioDevice } from './virtio.js';
import { virtioProps } from './virtio-options.js';

/** The virtio balloon (`-device` arguments), when the definition has one. */
export function balloonDevice(def: DomainDefinition): QapiObject | undefined {
  const balloon = def.memballoon;
  if (!balloon) return undefined;
  const id = balloon.alias ?? 'balloon0';
  return {
    driver: virtioDevice('virtio-balloon-pci', balloon.model),
    id,
    ...pciPlacement(def, balloon.address, `balloon ${id}`),
    ...(balloon.statsPeriod ? { 'guest-stats-polling-interval': balloon.statsPeriod } : {}),
    ...(balloon.freePageReporting !== undefined ? { 'free-page-reporting': balloon.freePageReporting } : {}),
    ...virtioProps(balloon.virtio),
  };
}

import type { DomainDefinition } from '../../../stable/definition/schema.js';
import { checkDimmBacking } from '../../device-change.js';

/*
 * The device model of `<memory model='dimm'>`: a pc-dimm device in a slot of the machine's
 * hot-pluggable range (`-m size=…,slots=N,maxmem=…`), backed by a RAM memory backend object. As in
 * libvirt, `memoryKiB` is the total, so QEMU's boot memory is the total less the DIMMs.
 */

/** One memory device of a definition. */
export type Dimm = NonNullable<DomainDefinition['memoryDevices']>[number];

/** The memory QEMU boots with (`-m size=`): the total less the DIMMs. */
export function bootMemoryKiB(def: DomainDefinition): number {
  return def.memoryKiB - (def.memoryDevices ?? []).reduce((sum, d) => sum + d.sizeKiB, 0);
}

/** The id of a DIMM's memory backend object. */
export const dimmBackendId = (dimm: Dimm): string => `mem${dimm.alias}`;

/** `object-add` arguments of a DIMM's backend. */
export function dimmBackend(dimm: Dimm): { 'qom-type': string; id: string; size: number } {
  return { 'qom-type': 'memory-backend-ram', id: dimmBackendId(dimm), size: dimm.sizeKiB * 1024 };
}

/** `device_add` arguments of a DIMM. */
export function dimmDevice(dimm: Dimm): { driver: string; id: string; [property: string]: unknown } {
  return {
    driver: 'pc-dimm',
    id: dimm.alias as string,
    memdev: dimmBackendId(dimm),
    slot: dimm.slot,
    ...(dimm.node !== undefined ? { node: dimm.node } : {}),
  };
}

/** The command-line arguments of the DIMMs a domain starts with. */
export function dimmArgs(def: DomainDefinition): string[] {
  const out: string[] = [];
  if (def.memoryDevices?.length) checkDimmBacking(def);
  for (const dimm of def.memoryDevices ?? []) {
    out.push('-object', `memory-backend-ram,id=${dimmBackendId(dimm)},size=${dimm.sizeKiB}k`);
    const node = dimm.node !== undefined ? `,node=${dimm.node}` : '';
    out.push('-device', `pc-dimm,memdev=${dimmBackendId(dimm)},id=${dimm.alias},slot=${dimm.slot}${node}`);
  }
  return out;
}

import { existsSync } from 'node:fs';
import { ErrorCode, VirtError } from '../../../errors.js';
import type { DomainDefinition } from '../../../stable/definition/schema.js';
import { checkSameDefinition, differenceViaXml } from '../../migration-definition.js';

export { checkSameDefinition };

/**
 * The destination's live definition must equal the source's, except for the paths of file
 * consoles the driver chose itself (each side's own root).
 */
export function checkSameLive(
  here: DomainDefinition,
  offered: DomainDefinition,
  persistent: DomainDefinition,
): void {
  const local = (d: DomainDefinition): DomainDefinition => ({
    ...d,
    serials: d.serials.map((s, i) => {
      const declared = persistent.serials[i];
      return s.type === 'file' && declared?.type === 'file' && !declared.path
        ? { ...s, path: '/(default)' }
        : s;
    }),
  });
  const diff = differenceViaXml(here, offered, local);
  if (diff)
    throw new VirtError(
      ErrorCode.CONFIG_UNSUPPORTED,
      `the destination would run '${here.name}' with a different live definition (at ${diff}): both sides need the same virtkit and QEMU device model`,
      { field: diff, domain: { name: here.name, uuid: here.uuid } },
    );
}

/** Every disk image must exist at the destination (shared storage): refused before QEMU starts. */
export function checkDisksPresent(def: DomainDefinition): void {
  def.disks.forEach((disk, i) => {
    if (disk.source !== undefined && !existsSync(disk.source))
      throw new VirtError(
        ErrorCode.OPERATION_INVALID,
        `disk ${disk.source} of '${def.name}' does not exist at the destination; migration needs the same storage on both sides`,
        { field: `disks.${i}.source`, path: disk.source },
      );
  });
}

import { join } from 'node:path';
import type { DomainDefinition } from '../../../stable/definition/schema.js';

type Channel = NonNullable<DomainDefinition['channels']>[number];

/** The socket QEMU listens on for channel `c`: its path, or libvirt's auto-generated one under `runDir`. */
export function channelSocketPath(def: DomainDefinition, c: Channel, runDir: string): string {
  return c.path ?? join(runDir, `${def.uuid}.${c.name}.sock`);
}

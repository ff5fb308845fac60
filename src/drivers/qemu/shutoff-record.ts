import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import type { ShutoffReason } from '../../stable/events.js';
import { writeFileAtomicSync } from '../../util/atomic-file.js';
import type { RootLayout } from './root.js';
import { removeIfPresent } from './store.js';

/*
 * Why a persistent domain last shut off. libvirt keeps the reason in memory only, which lasts as
 * long as libvirtd; an embedded root is opened by a new driver for every `virtkit` command, so the
 * reason is kept in `<root>/lib/shutoff/<name>.json` instead. Written atomically without fsync
 * (a shut-off is never delayed by the disk): a host crash may lose the record or leave it damaged,
 * and a damaged record reads as no record, that is `unknown`, what libvirt says after a restart.
 */

const REASONS = [
  'shutdown',
  'destroyed',
  'crashed',
  'failed',
  'migrated',
  'saved',
  'from-snapshot',
  'daemon',
] as const satisfies readonly ShutoffReason[];

const recordSchema = z.object({
  version: z.literal(1),
  uuid: z.string(),
  state: z.literal('shutoff'),
  reason: z.enum(REASONS),
});

/** The directory of the records. */
function recordDir(layout: RootLayout): string {
  return join(layout.lib, 'shutoff');
}

/** The record of the domain named `name`. */
export function shutoffRecordPath(layout: RootLayout, name: string): string {
  return join(recordDir(layout), `${name}.json`);
}

/**
 * The reason recorded for the domain `uuid`, or undefined when there is none, it is damaged or it
 * belongs to another domain of that name (one undefined by a driver killed half-way through).
 */
export function readShutoffRecord(path: string, uuid: string): ShutoffReason | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
  try {
    const record = recordSchema.safeParse(JSON.parse(text));
    return record.success && record.data.uuid === uuid ? record.data.reason : undefined;
  } catch {
    return undefined;
  }
}

/** Records why the domain `uuid` shut off; `unknown` says nothing and removes the record instead. */
export function writeShutoffRecord(
  layout: RootLayout,
  name: string,
  uuid: string,
  reason: ShutoffReason,
): void {
  const path = shutoffRecordPath(layout, name);
  if (reason === 'unknown') {
    removeIfPresent(path);
    return;
  }
  const record: z.infer<typeof recordSchema> = { version: 1, uuid, state: 'shutoff', reason };
  mkdirSync(recordDir(layout), { recursive: true, mode: 0o755 });
  writeFileAtomicSync(path, `${JSON.stringify(record)}\n`, 0o600, { durable: false });
}

import { readdirSync, readFileSync, unlinkSync } from 'node:fs';
import { unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { DomainDefinition } from '../../stable/definition/schema.js';
import { resolveDefinition } from '../../stable/definition/validate.js';
import { writeFileAtomic } from '../../util/atomic-file.js';
import type { RootLayout } from './root.js';

/** Loads every persistent definition under `<root>/etc/domains`; an unreadable one is reported, not dropped. */
export function loadDefinitions(
  layout: RootLayout,
  onError: (file: string, err: unknown) => void,
): DomainDefinition[] {
  const defs: DomainDefinition[] = [];
  for (const file of readdirSync(layout.domains)) {
    if (!file.endsWith('.json')) continue;
    const path = join(layout.domains, file);
    try {
      defs.push(resolveDefinition(JSON.parse(readFileSync(path, 'utf8'))));
    } catch (err) {
      onError(path, err);
    }
  }
  return defs;
}

/** Writes a definition atomically: a crash leaves the old file or the new one, never half of one. */
export async function saveDefinition(path: string, def: DomainDefinition, durable = true): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(def, null, 2)}\n`, 0o600, { durable });
}

/** Removes a file that may already be gone. */
export function removeIfPresent(path: string): void {
  try {
    unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/**
 * Removes a file that may already be gone, off the event loop: on a journalling file system an
 * unlink can take milliseconds, which many domains stopping at once would otherwise queue up for.
 */
export async function removeIfPresentAsync(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

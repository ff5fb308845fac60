import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { operationsManifestText } from '../../src/internal/manifest.js';
import { OPERATIONS } from '../../src/privileged/operations.js';

describe('etc/internal-operations.json', () => {
  it('is what the zod schemas generate (run `npm run api` after changing an operation)', () => {
    const committed = readFileSync(join(__dirname, '..', '..', 'etc', 'internal-operations.json'), 'utf8');
    expect(committed).toBe(operationsManifestText());
  });

  it('lists the six operations of internal API 1.0 with their phases', () => {
    const manifest = JSON.parse(operationsManifestText());
    expect(Object.keys(manifest.operations)).toEqual([...OPERATIONS]);
    expect(OPERATIONS).toEqual([
      'process.setMaxMemLock',
      'thread.setScheduler',
      'cgroup.placeThreads',
      'cgroup.release',
      'net.openTap',
      'storage.openFile',
    ]);
    expect(manifest.operations['process.setMaxMemLock'].phases).toEqual([
      'pre-exec',
      'hotplug',
      'migration-in',
    ]);
    expect(manifest.operations['process.setMaxMemLock'].arguments.properties.bytes.anyOf[0]).toMatchObject({
      type: 'string',
      pattern: '^[0-9]+$',
    });
  });
});

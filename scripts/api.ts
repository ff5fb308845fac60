/*
 * Regenerates what etc/ holds about the API: the internal operations manifest (and, with
 * api-extractor, the API reports). Run after changing an operation's schema: `npm run api`.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { operationsManifestText } from '../src/internal/manifest.js';

writeFileSync(join(import.meta.dirname, '..', 'etc', 'internal-operations.json'), operationsManifestText());
process.stdout.write('wrote etc/internal-operations.json\n');

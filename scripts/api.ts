/*
 * Regenerates what etc/ holds about the API, or checks it (CI).
 *
 *   npm run api         writes etc/internal-operations.json from the zod schemas, builds, and updates
 *                       both API reports (etc/virtkit.api.md, etc/virtkit-internal.api.md) with
 *                       api-extractor `--local`. Run after changing an exported declaration or an
 *                       operation's schema, review the diff, then `npm run api:lock`.
 *   npm run api:check   (tsx scripts/api.ts --check) needs an existing build (`npm run build`); fails
 *                       when the manifest or a report in etc/ differs from what the source and the
 *                       build produce, or api-extractor reports any problem (missing release tag or
 *                       TSDoc, a forgotten export, ...).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Extractor, ExtractorConfig } from '@microsoft/api-extractor';
import { operationsManifestText } from '../src/internal/manifest.js';

const root = join(import.meta.dirname, '..');
const check = process.argv.includes('--check');
const manifestPath = join(root, 'etc', 'internal-operations.json');
const configs = ['api-extractor.json', 'api-extractor.internal.json'];
let failed = false;

if (check) {
  const committed = existsSync(manifestPath) ? readFileSync(manifestPath, 'utf8') : '';
  if (committed !== operationsManifestText()) {
    process.stderr.write(
      'etc/internal-operations.json is not what the zod schemas generate: run `npm run api`\n',
    );
    failed = true;
  }
  for (const entry of ['dist/index.d.ts', 'dist/internal.d.ts']) {
    if (!existsSync(join(root, entry))) {
      process.stderr.write(`${entry} is missing: run \`npm run build\` before \`npm run api:check\`\n`);
      process.exit(1);
    }
  }
} else {
  writeFileSync(manifestPath, operationsManifestText());
  process.stdout.write('wrote etc/internal-operations.json\n');
  execFileSync('npx', ['tsup', '--silent'], { cwd: root, stdio: 'inherit' });
}

for (const file of configs) {
  const config = ExtractorConfig.loadFileAndPrepare(join(root, file));
  const result = Extractor.invoke(config, { localBuild: !check, showVerboseMessages: false });
  const report = config.reportConfigs.map((r) => `etc/${r.fileName}`).join(', ');
  if (!result.succeeded) {
    failed = true;
    process.stderr.write(
      check && result.apiReportChanged
        ? `${report} differs from the build (${file}): run \`npm run api\`, review and commit the report, then \`npm run api:lock\`\n`
        : `${file}: api-extractor found ${result.errorCount} error(s) and ${result.warningCount} warning(s) (above)\n`,
    );
  } else {
    process.stdout.write(`${report}: ${result.apiReportChanged ? 'updated' : 'up to date'}\n`);
  }
}
process.exit(failed ? 1 : 0);

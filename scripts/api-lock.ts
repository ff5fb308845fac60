/*
 * `npm run api:lock`: records the current API reports, operations manifest, internal API version and
 * package version in etc/internal-api.lock.json. It refuses when the change breaks a rule of the API
 * guard (an internal change without a version bump, a stable change without a CHANGELOG entry, a
 * breaking stable change without a major bump): fix what it prints, then run it again.
 * Run `npm run api` first, so the reports in etc/ match the source.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { checkApi, LOCK_FILE, lockFor, lockText, REPO_ROOT, readLock, readState } from './api-guard.js';

const state = await readState();
const previous = existsSync(join(REPO_ROOT, LOCK_FILE)) ? readLock() : undefined;
if (previous) {
  const blocking = checkApi(previous, state).filter((v) => !v.stale);
  if (blocking.length > 0) {
    process.stderr.write(
      `api:lock: not recording this state, it breaks ${blocking.length} rule(s):\n\n` +
        blocking.map((v) => `[${v.rule}] ${v.message}`).join('\n\n') +
        '\n',
    );
    process.exit(1);
  }
}
writeFileSync(join(REPO_ROOT, LOCK_FILE), lockText(lockFor(state, previous)));
process.stdout.write(
  `wrote ${LOCK_FILE}: internal API ${state.internalApiVersion}, package version ${state.packageVersion}\n`,
);

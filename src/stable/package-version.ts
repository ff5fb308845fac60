import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

/**
 * The version of this copy of virtkit, from its package.json: the nearest one above this module
 * (`dist/` when installed, `src/stable/` in the repository) whose name is `virtkit`.
 *
 * @internal
 */
export function packageVersion(): string {
  if (cached !== undefined) return cached;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as {
        name?: unknown;
        version?: unknown;
      };
      if (pkg.name === 'virtkit' && typeof pkg.version === 'string') {
        cached = pkg.version;
        return cached;
      }
    } catch {
      // no package.json here: go up
    }
    const up = dirname(dir);
    if (up === dir) {
      cached = 'unknown';
      return cached;
    }
    dir = up;
  }
}

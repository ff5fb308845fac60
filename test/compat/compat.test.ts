/*
 * The package as users get it. Builds nothing: it packs the existing build (`npm run build` first;
 * the test command does) with `npm pack`, installs the tarball into a fresh temporary project
 * (`npm install <tgz>`, so virtkit's dependencies come from the registry as they would for a user),
 * and then, against that installation:
 *   - lints the tarball: publint (--strict: warnings fail, suggestions are shown) and
 *     @arethetypeswrong/cli with the `node16` profile (.attw.json). That profile checks the
 *     node16/nodenext resolution from ESM and from CJS and bundler resolution, and skips only
 *     TypeScript's legacy `node10` resolution (moduleResolution "node"), which predates package.json
 *     "exports" and so cannot see the "./internal" subpath at all. virtkit needs Node >= 20, whose
 *     TypeScript users resolve with node16/nodenext or bundler; a `typesVersions` map or a stub
 *     internal/package.json only for node10 would be a second export map to keep in sync. The
 *     `esm-only` profile does not fit: the CJS build is shipped on purpose and is checked.
 *   - dual-format/: `import` and `require` of both entry points in one process; the handler table
 *     is shared across the two builds, a second copy with another internal version is refused;
 *   - stable-consumer/, internal-consumer-1.0/, internal-consumer-other/: consumer projects
 *     type-checked with `tsc --noEmit` against the packed declarations and run with node.
 * A fixture pinned to the internal API version this virtkit implements must compile and run; one
 * pinned to any other version must fail tsc (the handshake literal) and fail at run time with
 * INTERNAL_VERSION_MISMATCH.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { INTERNAL_API_VERSION } from '../../src/privileged/version.js';

const repo = join(__dirname, '..', '..');
const bin = (name: string) => join(repo, 'node_modules', '.bin', name);
let work: string;
let tarball: string;
let project: string;

interface Run {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

function run(cmd: string, args: string[], cwd: string, timeoutMs = 120_000): Run {
  const r = spawnSync(cmd, args, {
    cwd,
    encoding: 'utf8',
    timeout: timeoutMs,
    env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0', npm_config_update_notifier: 'false' },
  });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Runs and requires exit status 0, showing the output otherwise. */
function runOk(cmd: string, args: string[], cwd: string, timeoutMs?: number): Run {
  const r = run(cmd, args, cwd, timeoutMs);
  if (r.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}\n${r.stdout}\n${r.stderr}`);
  }
  return r;
}

beforeAll(() => {
  for (const file of ['index.js', 'index.cjs', 'index.d.ts', 'index.d.cts', 'internal.js', 'internal.cjs']) {
    if (!existsSync(join(repo, 'dist', file))) {
      throw new Error(
        `dist/${file} is missing: the compat tests pack the existing build, run \`npm run build\` first`,
      );
    }
  }
  work = mkdtempSync(join(tmpdir(), 'virtkit-compat-'));
  const packed = JSON.parse(
    runOk('npm', ['pack', '--json', '--pack-destination', work], repo).stdout,
  ) as Array<{ filename: string }>;
  tarball = join(work, packed[0]!.filename);

  project = join(work, 'project');
  cpSync(join(__dirname), project, {
    recursive: true,
    filter: (src) => !/[/\\](node_modules|out)$/.test(src) && !src.endsWith('.test.ts'),
  });
  writeFileSync(
    join(project, 'package.json'),
    `${JSON.stringify({ name: 'virtkit-compat', private: true, type: 'module' }, null, 2)}\n`,
  );
  const typesNode = JSON.parse(readFileSync(join(repo, 'node_modules/@types/node/package.json'), 'utf8'));
  runOk(
    'npm',
    ['install', '--no-audit', '--no-fund', '--loglevel=error', tarball, `@types/node@${typesNode.version}`],
    project,
    240_000,
  );
}, 300_000);

afterAll(() => {
  if (work && !process.env.VIRTKIT_KEEP_COMPAT) rmSync(work, { recursive: true, force: true });
});

describe('the packed tarball', () => {
  it('holds the build of both entry points, in both formats, with declarations', () => {
    const files = run('tar', ['tzf', tarball], work).stdout.split('\n');
    for (const file of [
      'package.json',
      'README.md',
      'CHANGELOG.md',
      'dist/index.js',
      'dist/index.cjs',
      'dist/index.d.ts',
      'dist/index.d.cts',
      'dist/internal.js',
      'dist/internal.cjs',
      'dist/internal.d.ts',
      'dist/internal.d.cts',
      'native/virtkit-internal.h',
    ]) {
      expect(files).toContain(`package/${file}`);
    }
    expect(files.filter((f) => /^package\/(src|test|bench|etc|scripts)\//.test(f))).toEqual([]);
  });

  it('passes publint (no errors, no warnings)', () => {
    const r = run(bin('publint'), ['run', tarball, '--strict'], work);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout + r.stderr).not.toMatch(/^(Errors|Warnings):/m);
  });

  it('passes @arethetypeswrong/cli (profile node16, from .attw.json)', () => {
    expect(JSON.parse(readFileSync(join(repo, '.attw.json'), 'utf8'))).toMatchObject({ profile: 'node16' });
    const r = run(bin('attw'), [tarball, '--no-color', '--no-emoji'], repo);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/No problems found|node16 \(from ESM\)/);
  });
});

describe('import (ESM) and require (CJS) of both entry points in one process', () => {
  it('share the handler table of a driver, and a copy with another internal version is refused', () => {
    const r = runOk(process.execPath, ['main.mjs'], join(project, 'dual-format'));
    const result = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
    expect(result).toMatchObject({
      ok: true,
      esmConnectionCjsHandler: true,
      cjsConnectionEsmHandler: true,
      secondCopyRefused: { code: 'INTERNAL_VERSION_MISMATCH' },
      secondCopyConnectionRefused: true,
    });
  });
});

/** The internal API version a fixture pins, read from its source; undefined for a stable consumer. */
function pinnedVersion(fixture: string): string | undefined {
  const source = readFileSync(join(__dirname, fixture, 'src', 'main.ts'), 'utf8');
  return /apiVersion:\s*'([^']+)'/.exec(source)?.[1];
}

const tsc = (fixture: string, ...args: string[]) =>
  run(
    process.execPath,
    [join(repo, 'node_modules/typescript/bin/tsc'), '-p', '.', ...args],
    join(project, fixture),
  );

/** Emits JavaScript without checking types (so a fixture that fails tsc can still be run). */
function emit(fixture: string): void {
  const r = tsc(fixture, '--noCheck');
  expect(r.status, r.stdout + r.stderr).toBe(0);
}

// Each consumer runs tsc and a real start in a fresh project: minutes, not seconds, on a busy machine.
describe('consumer projects against the packed package', { timeout: 240_000 }, () => {
  it('pin both the current internal API version and another one', () => {
    const pins = ['internal-consumer-1.0', 'internal-consumer-other'].map(pinnedVersion);
    expect(
      pins,
      `add test/compat/internal-consumer-${INTERNAL_API_VERSION}/ pinned to the current version`,
    ).toContain(INTERNAL_API_VERSION);
    expect(pins.some((v) => v !== INTERNAL_API_VERSION)).toBe(true);
  });

  it('stable-consumer type-checks and runs: connect, define, start paused, events, errors by code', () => {
    const check = tsc('stable-consumer', '--noEmit');
    expect(check.status, check.stdout + check.stderr).toBe(0);
    emit('stable-consumer');
    const r = runOk(process.execPath, ['out/main.js'], join(project, 'stable-consumer'));
    const result = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { ok: boolean; events: string[] };
    expect(result.ok).toBe(true);
    expect(result.events).toEqual(
      expect.arrayContaining(['defined:added', 'started:booted', 'stopped:destroyed', 'undefined:removed']),
    );
  });

  for (const fixture of ['internal-consumer-1.0', 'internal-consumer-other']) {
    const pinned = pinnedVersion(fixture)!;
    if (pinned === INTERNAL_API_VERSION) {
      it(`${fixture} (pinned to '${pinned}', the current version) type-checks, registers a handler and sees it called`, () => {
        const check = tsc(fixture, '--noEmit');
        expect(check.status, check.stdout + check.stderr).toBe(0);
        emit(fixture);
        const r = runOk(process.execPath, ['out/main.js'], join(project, fixture));
        const result = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
        expect(result).toMatchObject({
          ok: true,
          apiVersion: INTERNAL_API_VERSION,
          calls: [{ phase: 'pre-exec', domain: 'compat-internal' }],
        });
        expect(result.taints).toContain('internal-handler');
      });
    } else {
      it(`${fixture} (pinned to '${pinned}', not '${INTERNAL_API_VERSION}') fails tsc and fails at run time with INTERNAL_VERSION_MISMATCH`, () => {
        const check = tsc(fixture, '--noEmit');
        expect(check.status).not.toBe(0);
        expect(check.stdout).toContain(`'"${pinned}"'`);
        expect(check.stdout).toContain(`'"${INTERNAL_API_VERSION}"'`);
        emit(fixture);
        const r = run(process.execPath, ['out/main.js'], join(project, fixture));
        expect(r.status).not.toBe(0);
        expect(r.stderr).toContain('INTERNAL_VERSION_MISMATCH');
        expect(r.stderr).toContain(`internal API "${pinned}"`);
      });
    }
  }
});

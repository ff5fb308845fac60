import { describe, expect, it } from 'vitest';
import {
  type ApiLock,
  type ApiState,
  checkApi,
  isMajorBump,
  lockFor,
  parseChangelog,
  publicSurface,
  readLock,
  readState,
  surfaceKeys,
} from '../../scripts/api-guard.js';

/*
 * The API guard (rules in docs/internal-api.md). The first test is the real one: the committed
 * etc/internal-api.lock.json must describe the tree, and every rule must hold; its failure message
 * says what to do. The others run the same rules on made-up states, one rule each.
 */

describe('etc/internal-api.lock.json', () => {
  it('matches the API reports, the operations manifest and the versions, and every rule holds', async () => {
    const violations = checkApi(readLock(), await readState());
    if (violations.length > 0) {
      throw new Error(
        `the API guard failed:\n\n${violations.map((v) => `[${v.rule}] ${v.message}`).join('\n\n')}\n`,
      );
    }
  });
});

const report = (body: string) => `## API Report File for "virtkit"\n\n\`\`\`ts\n\n${body}\n\n\`\`\`\n`;

const STABLE = report(`// @public
export function connect(uri: string): Promise<Connection>;

// @public
export class Connection {
    // @internal
    constructor(driver: Driver);
    close(): Promise<void>;
    // @internal
    readonly driver: Driver;
}

// @internal
export interface Driver {
    close(): Promise<void>;
}`);

const CHANGELOG = `# Changelog

## [Unreleased]

### Stable

#### Added

- \`connect\`.

### Internal

#### Added

- Internal API 1.0: \`openInternal\`.
`;

const base: ApiState = {
  internalApiVersion: '1.0',
  packageVersion: '0.1.0',
  stableReport: STABLE,
  internalReport: report('// @public\nexport function openInternal(): void;'),
  manifest: '{"internalApiVersion":"1.0"}\n',
  changelog: CHANGELOG,
};
const locked: ApiLock = lockFor(base);

/** The changelog with a release `## [version]` added after the Unreleased section (newest first). */
function released(changelog: string, version: string, sections: string): string {
  const release = `## [${version}] - 2025-01-01\n\n${sections}\n`;
  const older = changelog.search(/^## \[\d/m);
  return older < 0
    ? `${changelog}\n${release}`
    : `${changelog.slice(0, older)}${release}\n${changelog.slice(older)}`;
}

const rules = (lock: ApiLock, state: ApiState) => checkApi(lock, state).map((v) => v.rule);
const message = (lock: ApiLock, state: ApiState, rule: string) =>
  checkApi(lock, state).find((v) => v.rule === rule)?.message ?? '';

describe('the internal API rules', () => {
  it('pass when nothing changed', () => {
    expect(checkApi(locked, base)).toEqual([]);
  });

  it('fail when the report or the manifest changed under the same internal version, saying what to do', () => {
    for (const change of [
      { internalReport: report('// @public\nexport function openInternal(x: number): void;') },
      { manifest: '{"internalApiVersion":"1.0","operations":{}}\n' },
    ]) {
      const state = { ...base, ...change };
      expect(rules(locked, state)).toEqual(['internal-version-not-bumped']);
      const text = message(locked, state, 'internal-version-not-bumped');
      expect(text).toContain('bump INTERNAL_API_VERSION in src/privileged/version.ts');
      expect(text).toContain(`add an "Internal" entry under the new version in CHANGELOG.md`);
      expect(text).toContain('npm run api:lock');
    }
  });

  it('fail when the internal version was bumped without an Internal entry mentioning it', () => {
    const state = { ...base, internalApiVersion: '1.1', manifest: '{"internalApiVersion":"1.1"}\n' };
    expect(rules(locked, state)).toEqual(['internal-changelog', 'lock-stale']);
    expect(message(locked, state, 'internal-changelog')).toContain('"Internal API 1.1"');
  });

  it('only ask for api:lock once the version is bumped and the entry written, then pass', () => {
    const state = {
      ...base,
      internalApiVersion: '1.1',
      manifest: '{"internalApiVersion":"1.1"}\n',
      changelog: CHANGELOG.replace(
        '- Internal API 1.0',
        '- Internal API 1.1: a new argument.\n- Internal API 1.0',
      ),
    };
    const v = checkApi(locked, state);
    expect(v.map((x) => x.rule)).toEqual(['lock-stale']);
    expect(v.every((x) => x.stale)).toBe(true);
    expect(checkApi(lockFor(state, locked), state)).toEqual([]);
  });

  it('refuse a version that goes backwards', () => {
    const state = {
      ...base,
      internalApiVersion: '0.9',
      changelog: `${CHANGELOG}- Internal API 0.9\n`,
    };
    expect(rules(locked, state)).toContain('internal-version-order');
  });

  it('let an unreleased version change with a new Unreleased entry, but not a released one', () => {
    const changed = report('// @public\nexport function openInternal(x: number): void;');
    const withEntry = CHANGELOG.replace('- Internal API 1.0', '- Internal API 1.0: `x`.\n- Internal API 1.0');
    expect(checkApi(locked, { ...base, internalReport: changed, changelog: withEntry })).toMatchObject([
      { rule: 'lock-stale', stale: true },
    ]);
    const releasedLog = released(withEntry, '0.1.0', '### Internal\n\n- Internal API 1.0 released.');
    expect(rules(locked, { ...base, internalReport: changed, changelog: releasedLog })).toEqual([
      'internal-version-not-bumped',
    ]);
  });
});

describe('the stable API rules', () => {
  const added = STABLE.replace(
    '    close(): Promise<void>;\n',
    '    close(): Promise<void>;\n    get uri(): string;\n',
  );
  const removed = STABLE.replace('    close(): Promise<void>;\n    // @internal\n', '    // @internal\n');
  const newEntry = CHANGELOG.replace('- `connect`.', '- `connect`.\n- `Connection.uri`.');

  it('need a new Unreleased Stable entry when the package version is unchanged', () => {
    expect(rules(locked, { ...base, stableReport: added })).toEqual(['stable-changelog']);
    expect(message(locked, { ...base, stableReport: added }, 'stable-changelog')).toContain(
      '"## [Unreleased]" → "### Stable"',
    );
    expect(checkApi(locked, { ...base, stableReport: added, changelog: newEntry })).toMatchObject([
      { rule: 'lock-stale', stale: true },
    ]);
  });

  it('need no CHANGELOG entry when only @internal declarations changed', () => {
    const internalOnly = STABLE.replace(
      'export interface Driver {\n',
      'export interface Driver {\n    uri: string;\n',
    );
    expect(checkApi(locked, { ...base, stableReport: internalOnly })).toMatchObject([
      { rule: 'lock-stale', stale: true },
    ]);
  });

  it('refuse a breaking change of a released version without a major bump, naming the lines', () => {
    const log = released(newEntry, '0.1.0', '### Stable\n\n- First release.');
    const state = { ...base, stableReport: removed, changelog: log };
    expect(rules(locked, state)).toEqual(['stable-breaking']);
    expect(message(locked, state, 'stable-breaking')).toContain(
      'export class Connection { › close(): Promise<void>;',
    );
    expect(message(locked, state, 'stable-breaking')).toContain('0.2.0');
    // A minor bump in 0.x is a major one; the release heading of 0.2.0 may hold the entry.
    const bumped = {
      ...state,
      packageVersion: '0.2.0',
      changelog: released(log, '0.2.0', '### Stable\n\n#### Removed\n\n- `Connection.close`.'),
    };
    expect(checkApi(locked, bumped)).toMatchObject([{ rule: 'lock-stale', stale: true }]);
    // A patch bump is not.
    expect(rules(locked, { ...bumped, packageVersion: '0.1.1' })).toContain('stable-breaking');
  });

  it('allow a breaking change before the first release (nothing published to break)', () => {
    expect(checkApi(locked, { ...base, stableReport: removed, changelog: newEntry })).toMatchObject([
      { rule: 'lock-stale', stale: true },
    ]);
  });

  it('remember the last release across a version bump', () => {
    const log = released(CHANGELOG, '0.1.0', '### Stable\n\n- First release.');
    const at010 = lockFor({ ...base, changelog: log });
    const minor = {
      ...base,
      packageVersion: '0.1.1',
      stableReport: added,
      changelog: released(log, '0.1.1', '### Stable\n\n- `Connection.uri`.'),
    };
    expect(rules(at010, minor)).toEqual(['lock-stale']);
    const at011 = lockFor(minor, at010);
    expect(at011.stable.releasedBase).toBe('0.1.0');
    // 0.1.1 is released too now; a removal needs 0.2.0.
    const breaking = {
      ...minor,
      stableReport: removed,
      changelog: minor.changelog.replace('- `connect`.', '- x.'),
    };
    expect(rules(at011, breaking)).toContain('stable-breaking');
  });

  it('want a package version that only goes up', () => {
    expect(rules(locked, { ...base, packageVersion: '0.0.9' })).toContain('stable-version-order');
  });
});

describe('helpers', () => {
  it('publicSurface leaves out @internal declarations and members', () => {
    expect(publicSurface(STABLE)).toEqual([
      'export function connect(uri: string): Promise<Connection>;',
      'export class Connection {',
      '    close(): Promise<void>;',
      '}',
    ]);
  });

  it('surfaceKeys qualify a line with the lines that enclose it', () => {
    expect(
      surfaceKeys(['export class A {', '    x: string;', '}', 'export interface B {', '    x: string;', '}']),
    ).toEqual([
      'export class A {',
      'export class A { › x: string;',
      '}',
      'export interface B {',
      'export interface B { › x: string;',
      '}',
    ]);
  });

  it('isMajorBump treats a 0.x minor as major', () => {
    expect(isMajorBump('0.1.0', '0.2.0')).toBe(true);
    expect(isMajorBump('0.1.0', '0.1.5')).toBe(false);
    expect(isMajorBump('1.4.0', '2.0.0')).toBe(true);
    expect(isMajorBump('1.4.0', '1.5.0')).toBe(false);
  });

  it('parseChangelog finds the Stable and Internal sections of each release', () => {
    const releases = parseChangelog(released(CHANGELOG, '0.1.0', '### Stable\n\n- One.'));
    expect(releases.map((r) => r.name)).toEqual(['Unreleased', '0.1.0']);
    expect(releases[0]!.sections.get('Internal')).toContain('Internal API 1.0');
    expect(releases[1]!.sections.get('Stable')).toBe('- One.');
  });
});

/*
 * The API guard: compares the API reports and the internal operations manifest in etc/ with the
 * fingerprints recorded in etc/internal-api.lock.json, and says exactly what a change requires.
 * Used by test/unit/api-guard.test.ts (fails on any violation) and scripts/api-lock.ts
 * (`npm run api:lock`, which refuses to record a state that breaks a rule). The rules are
 * documented in docs/internal-api.md ("How the rules are enforced").
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import semver from 'semver';

export const LOCK_FILE = 'etc/internal-api.lock.json';
export const STABLE_REPORT = 'etc/virtkit.api.md';
export const INTERNAL_REPORT = 'etc/virtkit-internal.api.md';
export const MANIFEST = 'etc/internal-operations.json';

/** What the guard looks at: the files of the tree and the two versions. */
export interface ApiState {
  /** INTERNAL_API_VERSION of src/privileged/version.ts. */
  readonly internalApiVersion: string;
  /** `version` of package.json. */
  readonly packageVersion: string;
  readonly stableReport: string;
  readonly internalReport: string;
  readonly manifest: string;
  readonly changelog: string;
}

/** The committed lock: the reviewed state of both APIs. */
export interface ApiLock {
  readonly $comment: string;
  readonly internal: {
    readonly apiVersion: string;
    readonly report: { readonly file: string; readonly sha256: string };
    readonly manifest: { readonly file: string; readonly sha256: string };
    /** sha256 of CHANGELOG.md's `## [Unreleased]` → `### Internal` section when the lock was written. */
    readonly unreleasedChangelogSha256: string;
  };
  readonly stable: {
    readonly packageVersion: string;
    /** The last released package version before `packageVersion` (null before the first release). */
    readonly releasedBase: string | null;
    readonly report: { readonly file: string; readonly sha256: string };
    /** sha256 of CHANGELOG.md's `## [Unreleased]` → `### Stable` section when the lock was written. */
    readonly unreleasedChangelogSha256: string;
    /** The public part of the stable report (its `@internal` declarations and members left out). */
    readonly surface: readonly string[];
  };
}

/** One broken rule. `stale` ones only ask for `npm run api:lock`; the others block it too. */
export interface Violation {
  readonly rule: string;
  readonly stale: boolean;
  readonly message: string;
}

export const sha256 = (text: string): string =>
  createHash('sha256').update(text.replace(/\r\n/g, '\n')).digest('hex');

/* ----------------------------------------------------------------------------------- changelog */

/** A `## [...]` release of CHANGELOG.md with its `### ...` sections. */
export interface ChangelogRelease {
  /** `Unreleased` or the version, as written between the brackets. */
  readonly name: string;
  readonly sections: ReadonlyMap<string, string>;
}

/** Splits a Keep a Changelog document into releases and their `### Stable` / `### Internal` sections. */
export function parseChangelog(text: string): ChangelogRelease[] {
  const releases: Array<{ name: string; sections: Map<string, string> }> = [];
  let section: { name: string; lines: string[] } | undefined;
  const flush = () => {
    const release = releases.at(-1);
    if (release && section) release.sections.set(section.name, section.lines.join('\n').trim());
    section = undefined;
  };
  for (const line of text.replace(/\r\n/g, '\n').split('\n')) {
    const release = /^## \[([^\]]+)\]/.exec(line);
    if (release) {
      flush();
      releases.push({ name: release[1]!, sections: new Map() });
      continue;
    }
    if (/^## /.test(line) || /^\[[^\]]+\]:\s/.test(line)) {
      flush();
      continue;
    }
    const heading = /^### (.+?)\s*$/.exec(line);
    if (heading && releases.length > 0) {
      flush();
      section = { name: heading[1]!, lines: [] };
      continue;
    }
    section?.lines.push(line);
  }
  flush();
  return releases;
}

const sectionOf = (releases: ChangelogRelease[], release: string, section: string): string =>
  releases.find((r) => r.name.toLowerCase() === release.toLowerCase())?.sections.get(section) ?? '';

const hasEntries = (sectionText: string): boolean => /^\s*[-*] \S/m.test(sectionText);

/** True when an Internal section (of any release, Unreleased included) mentions `Internal API <version>`. */
function internalEntryMentions(releases: ChangelogRelease[], version: string, releasedOnly = false): boolean {
  const phrase = new RegExp(`Internal API ${version.replace(/\./g, '\\.')}(?![0-9.]*[0-9])`);
  return releases.some(
    (r) => (!releasedOnly || r.name !== 'Unreleased') && phrase.test(r.sections.get('Internal') ?? ''),
  );
}

const isReleased = (releases: ChangelogRelease[], version: string): boolean =>
  releases.some((r) => r.name === version);

/* --------------------------------------------------------------------------------- API reports */

/** The TypeScript block of an api-extractor report, as lines. */
function reportBody(report: string): string[] {
  const lines = report.replace(/\r\n/g, '\n').split('\n');
  const start = lines.indexOf('```ts');
  const end = lines.lastIndexOf('```');
  return start >= 0 && end > start ? lines.slice(start + 1, end) : lines;
}

const indentOf = (line: string): number => line.length - line.trimStart().length;

/**
 * The public part of an api-extractor report: its code lines without comments, blank lines and
 * everything api-extractor marks `// @internal` (a declaration or member, with its nested lines
 * and its closing line).
 */
export function publicSurface(report: string): string[] {
  const out: string[] = [];
  let pendingInternal = false;
  let internalIndent: number | undefined;
  for (const line of reportBody(report)) {
    const text = line.trim();
    if (text === '') continue;
    const indent = indentOf(line);
    if (internalIndent !== undefined) {
      if (indent > internalIndent) continue;
      const closes = indent === internalIndent && /^[}\])]/.test(text);
      internalIndent = undefined;
      if (closes) continue;
    }
    if (text.startsWith('//')) {
      if (/^\/\/ @internal\b/.test(text)) pendingInternal = true;
      continue;
    }
    if (pendingInternal) {
      pendingInternal = false;
      internalIndent = indent;
      continue;
    }
    out.push(line.replace(/\s+$/, ''));
  }
  return out;
}

/**
 * Keys of surface lines that survive reformatting but not a change of meaning: every line is
 * qualified by the lines that enclose it (`Domain { › start(options?: StartOptions): Promise<void>;`),
 * so the same member text in two declarations never counts as one.
 */
export function surfaceKeys(surface: readonly string[]): string[] {
  const keys: string[] = [];
  const stack: Array<{ indent: number; text: string }> = [];
  surface.forEach((line, i) => {
    const indent = indentOf(line);
    while (stack.length > 0 && stack.at(-1)!.indent >= indent) stack.pop();
    const text = line.trim();
    keys.push([...stack.map((s) => s.text), text].join(' › '));
    const next = surface[i + 1];
    if (next !== undefined && indentOf(next) > indent) stack.push({ indent, text });
  });
  return keys;
}

/** Keys of `before` missing from `after`, counted (a multiset difference). */
function missing(before: readonly string[], after: readonly string[]): string[] {
  const left = new Map<string, number>();
  for (const k of after) left.set(k, (left.get(k) ?? 0) + 1);
  const out: string[] = [];
  for (const k of before) {
    const n = left.get(k) ?? 0;
    if (n > 0) left.set(k, n - 1);
    else out.push(k);
  }
  return out;
}

/** True when `to` is a major bump over `from`; in 0.x a minor bump counts (as npm's `^0.y` does). */
export function isMajorBump(from: string, to: string): boolean {
  const a = semver.parse(from);
  const b = semver.parse(to);
  if (!a || !b || !semver.gt(b, a)) return false;
  if (a.major === 0 && b.major === 0) return b.minor > a.minor;
  return b.major > a.major;
}

const nextMajor = (version: string): string => {
  const v = semver.parse(version);
  if (!v) return 'the next major version';
  return v.major === 0 ? `0.${v.minor + 1}.0` : `${v.major + 1}.0.0`;
};

const nextInternal = (version: string): string => {
  const [major, minor] = version.split('.').map(Number);
  return `'${major}.${(minor ?? 0) + 1}' (or '${(major ?? 0) + 1}.0')`;
};

const asSemver = (internalVersion: string): string => `${internalVersion}.0`;

/* ------------------------------------------------------------------------------------ the rules */

/** Every rule the state breaks against the lock; empty when the lock is current and the rules hold. */
export function checkApi(lock: ApiLock, state: ApiState): Violation[] {
  const out: Violation[] = [];
  const releases = parseChangelog(state.changelog);

  // --- internal ---------------------------------------------------------------------------------
  const ver = state.internalApiVersion;
  const locked = lock.internal;
  const reportChanged = locked.report.sha256 !== sha256(state.internalReport);
  const manifestChanged = locked.manifest.sha256 !== sha256(state.manifest);
  const what = [reportChanged && INTERNAL_REPORT, manifestChanged && MANIFEST].filter(Boolean).join(' and ');

  if (!internalEntryMentions(releases, ver)) {
    out.push({
      rule: 'internal-changelog',
      stale: false,
      message:
        `INTERNAL_API_VERSION is '${ver}' but CHANGELOG.md has no "Internal" entry mentioning "Internal API ${ver}". ` +
        `Add one: under "## [Unreleased]", a "### Internal" section with an entry that says "Internal API ${ver}" ` +
        `and what changed for handler authors; then run \`npm run api:lock\`.`,
    });
  }
  if (ver === locked.apiVersion) {
    if (reportChanged || manifestChanged) {
      const unreleasedSection = sectionOf(releases, 'Unreleased', 'Internal');
      const preRelease = !internalEntryMentions(releases, ver, true);
      const acknowledged =
        preRelease &&
        hasEntries(unreleasedSection) &&
        sha256(unreleasedSection) !== locked.unreleasedChangelogSha256;
      out.push(
        acknowledged
          ? {
              rule: 'lock-stale',
              stale: true,
              message:
                `The internal API changed (${what}) while internal API ${ver} is still unreleased, and the ` +
                `"## [Unreleased]" → "### Internal" section of CHANGELOG.md has a new entry: run \`npm run api:lock\` to record it.`,
            }
          : {
              rule: 'internal-version-not-bumped',
              stale: false,
              message:
                `The internal API changed (${what} differ from the fingerprints in ${LOCK_FILE}) but ` +
                `INTERNAL_API_VERSION is still '${ver}', the version recorded in the lock: a consumer pinned to '${ver}' ` +
                `would silently get a different API. Do this:\n` +
                `  1. bump INTERNAL_API_VERSION in src/privileged/version.ts to ${nextInternal(ver)};\n` +
                `  2. add an "Internal" entry under the new version in CHANGELOG.md: under "## [Unreleased]", a ` +
                `"### Internal" section with an entry that says "Internal API <new version>" and what changed;\n` +
                `  3. run \`npm run api\` (regenerates the reports and the manifest), then \`npm run api:lock\`.\n` +
                (preRelease
                  ? `(Internal API ${ver} is not released yet, so instead of 1. you may keep '${ver}': add a new entry ` +
                    `to the "## [Unreleased]" → "### Internal" section of CHANGELOG.md and run \`npm run api:lock\`.)`
                  : `(Internal API ${ver} is released: its consumers must see a new version.)`),
            },
      );
    }
  } else {
    if (!semver.valid(asSemver(ver)) || !semver.gt(asSemver(ver), asSemver(locked.apiVersion))) {
      out.push({
        rule: 'internal-version-order',
        stale: false,
        message: `INTERNAL_API_VERSION '${ver}' must be a MAJOR.MINOR greater than '${locked.apiVersion}', the version in ${LOCK_FILE}.`,
      });
    }
    out.push({
      rule: 'lock-stale',
      stale: true,
      message: `INTERNAL_API_VERSION changed from '${locked.apiVersion}' to '${ver}': run \`npm run api:lock\` to record it (after the CHANGELOG entry).`,
    });
  }

  // --- stable -----------------------------------------------------------------------------------
  const stable = lock.stable;
  const pkg = state.packageVersion;
  const bumped = pkg !== stable.packageVersion;
  if (bumped && (!semver.valid(pkg) || !semver.gt(pkg, stable.packageVersion))) {
    out.push({
      rule: 'stable-version-order',
      stale: false,
      message: `package.json version ${pkg} must be greater than ${stable.packageVersion}, the version in ${LOCK_FILE}.`,
    });
  }
  if (stable.report.sha256 !== sha256(state.stableReport)) {
    const before = surfaceKeys(stable.surface);
    const after = surfaceKeys(publicSurface(state.stableReport));
    const removed = missing(before, after);
    const added = missing(after, before);
    if (removed.length === 0 && added.length === 0) {
      out.push({
        rule: 'lock-stale',
        stale: true,
        message: `Only @internal parts of ${STABLE_REPORT} changed: run \`npm run api:lock\` to record them (no CHANGELOG entry needed).`,
      });
    } else {
      const unreleasedSection = sectionOf(releases, 'Unreleased', 'Stable');
      const newUnreleasedEntry =
        hasEntries(unreleasedSection) && sha256(unreleasedSection) !== stable.unreleasedChangelogSha256;
      const releaseEntry = bumped && hasEntries(sectionOf(releases, pkg, 'Stable'));
      const summary =
        `the stable API in ${STABLE_REPORT} changed against ${LOCK_FILE} (${added.length} line(s) added, ` +
        `${removed.length} removed or changed)`;
      let blocked = false;
      if (!newUnreleasedEntry && !releaseEntry) {
        blocked = true;
        out.push({
          rule: 'stable-changelog',
          stale: false,
          message:
            `${summary[0]!.toUpperCase()}${summary.slice(1)} but CHANGELOG.md has no new entry for it. ` +
            (bumped
              ? `Add entries under "## [${pkg}]" → "### Stable" (or a new one under "## [Unreleased]" → "### Stable"), `
              : `Package version ${pkg} is unchanged, so add a new entry under "## [Unreleased]" → "### Stable" ` +
                `("#### Added" for additions, "#### Changed"/"#### Removed" for the rest), `) +
            `then run \`npm run api:lock\`.`,
        });
      }
      // A breaking change counts against the last released version: before the first release,
      // or once package.json carries a major bump over that release, it is allowed.
      const base = isReleased(releases, stable.packageVersion) ? stable.packageVersion : stable.releasedBase;
      if (removed.length > 0 && base !== null && !isMajorBump(base, pkg)) {
        blocked = true;
        out.push({
          rule: 'stable-breaking',
          stale: false,
          message:
            `Breaking stable API change: these lines of the locked ${STABLE_REPORT} were removed or changed:\n` +
            removed
              .slice(0, 20)
              .map((k) => `    - ${k}`)
              .join('\n') +
            (removed.length > 20 ? `\n    … and ${removed.length - 20} more` : '') +
            `\nvirtkit ${base} is released and the stable entry follows semver: set package.json version to ` +
            `${nextMajor(base)} (a major bump; in 0.x the minor counts) and describe the change under "### Stable" → ` +
            `"#### Changed" or "#### Removed" in CHANGELOG.md, then run \`npm run api:lock\`. ` +
            `If the change is compatible after all (a widened parameter, a new optional argument), keep the old ` +
            `signature as an overload or still make the major bump: the guard compares report lines, not types.`,
        });
      }
      if (!blocked) {
        out.push({
          rule: 'lock-stale',
          stale: true,
          message: `${summary[0]!.toUpperCase()}${summary.slice(1)}; the CHANGELOG has its entry: run \`npm run api:lock\` to record it.`,
        });
      }
    }
  } else if (bumped) {
    out.push({
      rule: 'lock-stale',
      stale: true,
      message: `package.json version changed from ${stable.packageVersion} to ${pkg}: run \`npm run api:lock\` to record it.`,
    });
  }
  return out;
}

/** The lock that records `state`, carrying over what must survive from `previous`. */
export function lockFor(state: ApiState, previous?: ApiLock): ApiLock {
  const releases = parseChangelog(state.changelog);
  let releasedBase: string | null = null;
  if (previous) {
    if (previous.stable.packageVersion === state.packageVersion) releasedBase = previous.stable.releasedBase;
    else
      releasedBase = isReleased(releases, previous.stable.packageVersion)
        ? previous.stable.packageVersion
        : previous.stable.releasedBase;
  }
  return {
    $comment:
      'Reviewed state of the virtkit APIs. Written by `npm run api:lock`, checked by test/unit/api-guard.test.ts; rules in docs/internal-api.md.',
    internal: {
      apiVersion: state.internalApiVersion,
      report: { file: INTERNAL_REPORT, sha256: sha256(state.internalReport) },
      manifest: { file: MANIFEST, sha256: sha256(state.manifest) },
      unreleasedChangelogSha256: sha256(sectionOf(releases, 'Unreleased', 'Internal')),
    },
    stable: {
      packageVersion: state.packageVersion,
      releasedBase,
      report: { file: STABLE_REPORT, sha256: sha256(state.stableReport) },
      unreleasedChangelogSha256: sha256(sectionOf(releases, 'Unreleased', 'Stable')),
      surface: publicSurface(state.stableReport),
    },
  };
}

/* ---------------------------------------------------------------------------------------- files */

export const REPO_ROOT = join(import.meta.dirname, '..');

/** Reads the state of the tree; the internal version comes from src/privileged/version.ts. */
export async function readState(root = REPO_ROOT): Promise<ApiState> {
  const { INTERNAL_API_VERSION } = await import('../src/privileged/version.js');
  const read = (file: string) => readFileSync(join(root, file), 'utf8');
  return {
    internalApiVersion: INTERNAL_API_VERSION,
    packageVersion: (JSON.parse(read('package.json')) as { version: string }).version,
    stableReport: read(STABLE_REPORT),
    internalReport: read(INTERNAL_REPORT),
    manifest: read(MANIFEST),
    changelog: read('CHANGELOG.md'),
  };
}

export function readLock(root = REPO_ROOT): ApiLock {
  return JSON.parse(readFileSync(join(root, LOCK_FILE), 'utf8')) as ApiLock;
}

export const lockText = (lock: ApiLock): string => `${JSON.stringify(lock, null, 2)}\n`;

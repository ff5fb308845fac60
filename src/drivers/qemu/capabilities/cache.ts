import { createHash } from 'node:crypto';
import { type BigIntStats, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCode, VirtError } from '../../../errors.js';
import { writeFileAtomicSync } from '../../../util/atomic-file.js';
import { canonicalMachineType } from './machine-types.js';
import { type EmulatorProbe, probeEmulator } from './probe.js';

/** Bumped whenever {@link EmulatorProbe} changes shape, so older cache files are probed again. */
const CACHE_FORMAT = 1;

/**
 * What identifies one build of an emulator binary, as libvirt keys its capabilities cache: a new
 * package (even of the same version) changes the size, mtime or ctime.
 */
interface BinaryKey {
  readonly format: number;
  readonly path: string;
  readonly size: number;
  readonly mtimeNs: string;
  readonly ctimeNs: string;
}

interface CacheFile {
  readonly key: BinaryKey;
  readonly probe: EmulatorProbe;
}

/** Probes already read or made by this process, and probes under way, by cache file. */
const memory = new Map<string, { key: BinaryKey; probe: Promise<EmulatorProbe> }>();

function binaryKey(emulator: string): BinaryKey {
  let st: BigIntStats;
  try {
    st = statSync(emulator, { bigint: true });
  } catch {
    throw new VirtError(ErrorCode.NO_SUPPORT, `the emulator ${emulator} is missing or not executable`, {
      path: emulator,
    });
  }
  return {
    format: CACHE_FORMAT,
    path: emulator,
    size: Number(st.size),
    mtimeNs: st.mtimeNs.toString(),
    ctimeNs: st.ctimeNs.toString(),
  };
}

function sameKey(a: BinaryKey, b: BinaryKey): boolean {
  return (
    a.format === b.format &&
    a.path === b.path &&
    a.size === b.size &&
    a.mtimeNs === b.mtimeNs &&
    a.ctimeNs === b.ctimeNs
  );
}

function readCache(file: string, key: BinaryKey): EmulatorProbe | undefined {
  try {
    const parsed = JSON.parse(readFileSync(file, 'utf8')) as Partial<CacheFile>;
    if (parsed.key && parsed.probe && sameKey(parsed.key, key)) return parsed.probe;
  } catch {
    // Missing or unreadable: probe again and rewrite it.
  }
  return undefined;
}

/**
 * The probe of `emulator`, from memory, from `<cacheDir>/<hash of the path>.json` when the binary
 * is unchanged (path, size, mtime, ctime), else by starting it once ({@link probeEmulator}) and
 * caching the result. Concurrent callers share one probe.
 *
 * @param cacheDir - a directory of the driver's root, created when missing
 * @param emulator - the emulator's absolute path
 * @internal
 */
export function cachedProbe(cacheDir: string, emulator: string): Promise<EmulatorProbe> {
  const key = binaryKey(emulator);
  const file = join(cacheDir, `${createHash('sha256').update(emulator).digest('hex').slice(0, 32)}.json`);
  const known = memory.get(file);
  if (known && sameKey(known.key, key)) return known.probe;
  const fromDisk = readCache(file, key);
  const probe = fromDisk
    ? Promise.resolve(fromDisk)
    : probeEmulator(emulator).then((result) => {
        mkdirSync(cacheDir, { recursive: true, mode: 0o700 });
        writeFileAtomicSync(file, `${JSON.stringify({ key, probe: result } satisfies CacheFile)}\n`, 0o600);
        return result;
      });
  memory.set(file, { key, probe });
  // A failed probe is not remembered: the next call tries again.
  probe.catch(() => {
    if (memory.get(file)?.probe === probe) memory.delete(file);
  });
  return probe;
}

/** Forgets the probes held in memory (the files stay), so the next call reads or probes again. @internal */
export function forgetProbes(): void {
  memory.clear();
}

/**
 * The versioned machine type `emulator` gives for `machine` (`pc` → `pc-i440fx-7.2`), from the
 * cached probe; see {@link canonicalMachineType}.
 *
 * @throws VirtError `CONFIG_UNSUPPORTED` (`details.machine`) when the emulator has no such machine
 *   type, `NO_SUPPORT` when the emulator is missing
 * @internal
 */
export async function expandMachineType(
  cacheDir: string,
  emulator: string,
  machine: string | undefined,
): Promise<string> {
  const probe = await cachedProbe(cacheDir, emulator);
  const name = canonicalMachineType(probe, machine);
  if (name === undefined) {
    throw new VirtError(
      ErrorCode.CONFIG_UNSUPPORTED,
      `the emulator ${emulator} has no machine type '${machine ?? '(default)'}'; see getCapabilities() for those it has`,
      { machine: machine ?? null, path: emulator },
    );
  }
  return name;
}

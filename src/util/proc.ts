/**
 * Readers for the few `/proc` files virtkit needs: process identity (start time, exe), state,
 * threads, limits and cgroups. The files are tiny, so the reads are synchronous.
 *
 * A process (or thread) that does not exist, or has exited while being read, reads as `undefined`
 * (or an empty collection); any other failure throws a {@link VirtError} `SYSTEM_ERROR`.
 *
 * @internal
 * @packageDocumentation
 */

import { closeSync, openSync, readdirSync, readFileSync, readlinkSync, readSync } from 'node:fs';
import { ErrorCode, errnoOf, toVirtError } from '../errors.js';

/** A soft or hard value of `/proc/<pid>/limits`. */
type LimitValue = bigint | 'unlimited';

/** errnos that mean "the process or thread is gone". */
const GONE = new Set(['ENOENT', 'ESRCH']);

/** Reads a /proc file, or undefined when the process is gone (or `alsoMissing` matches). */
function readProc(path: string, alsoMissing: ReadonlySet<string> = GONE): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    return missing(err, path, alsoMissing);
  }
}

function missing(err: unknown, path: string, gone: ReadonlySet<string>): undefined {
  const errno = errnoOf(err);
  if (errno && gone.has(errno)) return undefined;
  throw toVirtError(err, ErrorCode.SYSTEM_ERROR, `cannot read ${path}`, { errno, file: path });
}

/** Holds one `/proc/<pid>/stat` line: at most about 600 bytes (52 numbers, a 64-byte comm). */
const statBuffer = Buffer.alloc(4096);

/**
 * `/proc/<pid>/stat` in one read(2): the file is generated whole at the first read, so open, read
 * and close do what readFileSync does with two more system calls (fstat, and a read to see the end).
 * Read for every running domain by `getInfo()`, and several times by every start and stop.
 */
function readStatLine(pid: number): string | undefined {
  const path = `/proc/${pid}/stat`;
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    return missing(err, path, GONE);
  }
  try {
    const n = readSync(fd, statBuffer, 0, statBuffer.length, null);
    return statBuffer.toString('utf8', 0, n);
  } catch (err) {
    return missing(err, path, GONE);
  } finally {
    closeSync(fd);
  }
}

/**
 * The fields of `/proc/<pid>/stat` after `comm`, i.e. starting with field 3 (state). `comm` is
 * skipped by cutting after the last `)`, since it may itself contain spaces and parentheses.
 */
function statFields(pid: number): string[] | undefined {
  const text = readStatLine(pid);
  if (text === undefined) return undefined;
  const end = text.lastIndexOf(')');
  if (end < 0) return undefined;
  return text
    .slice(end + 1)
    .trim()
    .split(/\s+/);
}

/**
 * The CPU time of a process, all its threads, user and system (fields 14 and 15 of
 * `/proc/<pid>/stat`, clock ticks of 10 ms), in ns.
 *
 * @param pid - the process
 * @returns the time, or undefined if the process does not exist
 */
export function readProcCpuTimeNs(pid: number): bigint | undefined {
  return cpuTimeOf(readStatLine(pid));
}

/**
 * Fields 14 and 15 of a stat line, found by counting the single spaces the kernel writes between
 * fields rather than splitting all 52: `getInfo()` of many running domains parses one per domain.
 */
function cpuTimeOf(text: string | undefined): bigint | undefined {
  if (text === undefined) return undefined;
  let at = text.lastIndexOf(')') + 1;
  if (at === 0) return undefined;
  // `at` is the space before field 3; step to the space before field 14.
  for (let field = 3; field < 14 && at >= 0; field++) at = text.indexOf(' ', at + 1);
  if (at < 0) return undefined;
  const userEnd = text.indexOf(' ', at + 1);
  if (userEnd < 0) return undefined;
  const systemEnd = text.indexOf(' ', userEnd + 1);
  if (systemEnd < 0) return undefined;
  const user = text.slice(at + 1, userEnd);
  const system = text.slice(userEnd + 1, systemEnd);
  if (!/^\d+$/.test(user) || !/^\d+$/.test(system)) return undefined;
  return (BigInt(user) + BigInt(system)) * 10_000_000n;
}

/**
 * `/proc/<pid>/stat` of one process, kept open for repeated reads: each read is one pread(2) at
 * offset 0 (the kernel generates the file anew) instead of open, read and close, which is what a
 * listing of many running domains spends its time on. The descriptor names the process rather than
 * the pid: once the process is reaped it reads as gone, even if its pid was reused.
 * {@link ProcStatFile.close} must be called when the process is no longer of interest.
 */
export class ProcStatFile {
  /** The process. */
  readonly pid: number;
  #fd: number | undefined;
  /** Set once a read found the process gone: a reused pid is another process. */
  #gone = false;

  /** @param pid - the process; the file is opened at the first read */
  constructor(pid: number) {
    this.pid = pid;
  }

  /**
   * The CPU time of the process, as {@link readProcCpuTimeNs} reads it.
   *
   * @returns the time, or undefined if the process does not exist (any more)
   */
  cpuTimeNs(): bigint | undefined {
    return cpuTimeOf(this.#read());
  }

  /** Closes the file; it then reads as gone. */
  close(): void {
    this.#gone = true;
    if (this.#fd === undefined) return;
    const fd = this.#fd;
    this.#fd = undefined;
    closeSync(fd);
  }

  #read(): string | undefined {
    if (this.#gone) return undefined;
    const path = `/proc/${this.pid}/stat`;
    try {
      this.#fd ??= openSync(path, 'r');
      const n = readSync(this.#fd, statBuffer, 0, statBuffer.length, 0);
      return statBuffer.toString('utf8', 0, n);
    } catch (err) {
      this.close();
      return missing(err, path, GONE);
    }
  }
}

/**
 * The start time of a process (field 22 of `/proc/<pid>/stat`, in clock ticks since boot).
 * Together with the pid it identifies a process across pid reuse.
 *
 * @param pid - the process
 * @returns the start time, or undefined if the process does not exist
 */
export function readProcStartTime(pid: number): bigint | undefined {
  const field = statFields(pid)?.[22 - 3];
  return field !== undefined && /^\d+$/.test(field) ? BigInt(field) : undefined;
}

/**
 * The parent and the start time of a process from one read of `/proc/<pid>/stat` (fields 4 and
 * 22), for a caller that needs both: whether the process exists, whose child it is, and which
 * process the pid is (start time) cost one read instead of three.
 *
 * @param pid - the process
 * @returns both, or undefined if the process does not exist
 */
export function readProcParentAndStart(pid: number): { ppid: number; startTime: bigint } | undefined {
  const f = statFields(pid);
  const ppid = f?.[4 - 3];
  const start = f?.[22 - 3];
  if (ppid === undefined || start === undefined || !/^\d+$/.test(ppid) || !/^\d+$/.test(start))
    return undefined;
  return { ppid: Number(ppid), startTime: BigInt(start) };
}

/**
 * The state letter of a process (field 3 of `/proc/<pid>/stat`): `R`, `S`, `D`, `Z`, `T`…
 *
 * @param pid - the process
 * @returns the state, or undefined if the process does not exist
 */
export function readProcState(pid: number): string | undefined {
  return statFields(pid)?.[0];
}

/**
 * The parent pid of a process (field 4 of `/proc/<pid>/stat`).
 *
 * @param pid - the process
 * @returns the parent pid, or undefined if the process does not exist
 */
export function readParentPid(pid: number): number | undefined {
  const field = statFields(pid)?.[4 - 3];
  return field !== undefined && /^\d+$/.test(field) ? Number(field) : undefined;
}

/**
 * The executable of a process: `readlink /proc/<pid>/exe`, with a trailing ` (deleted)` removed.
 *
 * @param pid - the process
 * @returns the path, or undefined if the process does not exist, has no executable (kernel
 *   thread, zombie) or may not be inspected
 */
export function readProcExe(pid: number): string | undefined {
  const path = `/proc/${pid}/exe`;
  try {
    return readlinkSync(path).replace(/ \(deleted\)$/, '');
  } catch (err) {
    return missing(err, path, new Set([...GONE, 'EACCES', 'EPERM']));
  }
}

/**
 * The thread ids of a process (`/proc/<pid>/task`), ascending.
 *
 * @param pid - the process
 * @returns the tids; empty if the process does not exist
 */
export function listThreads(pid: number): number[] {
  const path = `/proc/${pid}/task`;
  let names: string[];
  try {
    names = readdirSync(path);
  } catch (err) {
    missing(err, path, GONE);
    return [];
  }
  return names
    .filter((n) => /^\d+$/.test(n))
    .map(Number)
    .sort((a, b) => a - b);
}

/**
 * The name of a thread (`/proc/<pid>/task/<tid>/comm`) without its trailing newline.
 *
 * @param pid - the process
 * @param tid - the thread
 * @returns the name (at most 15 bytes), or undefined if the thread does not exist
 */
export function readThreadComm(pid: number, tid: number): string | undefined {
  return readProc(`/proc/${pid}/task/${tid}/comm`)?.replace(/\n$/, '');
}

/**
 * The resource limits of a process, parsed from `/proc/<pid>/limits`.
 *
 * @param pid - the process
 * @returns a map from the limit name (e.g. `Max locked memory`) to its soft and hard values and
 *   units (`bytes`, `files`…; empty when the kernel prints none); empty if the process does not exist
 */
export function readProcLimits(
  pid: number,
): Map<string, { soft: LimitValue; hard: LimitValue; units: string }> {
  const limits = new Map<string, { soft: LimitValue; hard: LimitValue; units: string }>();
  const text = readProc(`/proc/${pid}/limits`);
  if (text === undefined) return limits;
  const value = (s: string): LimitValue => (s === 'unlimited' ? 'unlimited' : BigInt(s));
  for (const line of text.split('\n')) {
    const m = /^(\S.*?)\s+(unlimited|\d+)\s+(unlimited|\d+)(?:\s+(\S+))?\s*$/.exec(line);
    if (!m) continue; // header, blank line
    limits.set(m[1]!, { soft: value(m[2]!), hard: value(m[3]!), units: m[4] ?? '' });
  }
  return limits;
}

/**
 * The cgroups of a thread, parsed from `/proc/<pid>/task/<tid>/cgroup`. The cgroup v2 unified
 * hierarchy is the entry with `hierarchyId` 0 and no controllers; a named v1 hierarchy lists
 * `name=…` as its controller.
 *
 * @param pid - the process
 * @param tid - the thread
 * @returns one entry per hierarchy; empty if the thread does not exist
 */
export function readThreadCgroups(
  pid: number,
  tid: number,
): Array<{ hierarchyId: number; controllers: string[]; path: string }> {
  const text = readProc(`/proc/${pid}/task/${tid}/cgroup`);
  if (text === undefined) return [];
  const out: Array<{ hierarchyId: number; controllers: string[]; path: string }> = [];
  for (const line of text.split('\n')) {
    // The path may itself contain ':', so only the first two separate fields.
    const m = /^(\d+):([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    out.push({
      hierarchyId: Number(m[1]),
      controllers: m[2]!.split(',').filter((c) => c !== ''),
      path: m[3]!,
    });
  }
  return out;
}

/**
 * Whether a process exists and is not a zombie (or dead, `X`).
 *
 * @param pid - the process
 * @returns true if it is running, sleeping, stopped…
 */
export function isAlive(pid: number): boolean {
  const state = readProcState(pid);
  return state !== undefined && state !== 'Z' && state !== 'X';
}

/**
 * The real uid of a process: the first value of the `Uid:` line of `/proc/<pid>/status`.
 *
 * @param pid - the process
 * @returns the uid, or undefined if the process does not exist
 */
export function readProcUid(pid: number): number | undefined {
  const text = readProc(`/proc/${pid}/status`);
  const m = text === undefined ? null : /^Uid:\s+(\d+)/m.exec(text);
  return m ? Number(m[1]) : undefined;
}

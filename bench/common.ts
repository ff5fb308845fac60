import type { ChildProcess } from 'node:child_process';
/*
 * Shared pieces of the benchmark: the VM shape every contender runs, statistics, and the
 * bookkeeping that lets the runner clean up every QEMU, directory and cgroup it made, even when a
 * contender fails half-way.
 */

import { execFileSync } from 'node:child_process';
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The QEMU binary every contender runs. */
export const QEMU = '/usr/bin/qemu-system-x86_64';
/** The VM shape: 2 vCPUs, 64 MiB, firmware only (no kernel, no disk). */
export const VCPUS = 2;
export const MEMORY_KIB = 64 * 1024;
/** Python with Debian's python3-libvirt (a pyenv `python3` on PATH would not see it). */
export const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

/** Every name this run gives a VM contains it, so a final sweep finds anything left behind. */
export const MARKER = process.env['BENCH_MARKER'] ?? `vkbench${process.pid}`;

export type Accel = 'kvm' | 'tcg';

/** A temporary directory registered for removal at the end of the run. */
const dirs = new Set<string>();
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(process.env['BENCH_TMPDIR'] ?? tmpdir(), `${MARKER}-${prefix}-`));
  dirs.add(dir);
  return dir;
}

/** Removes the temporary directories of this process (for bench children, which skip the sweep). */
export function removeTempDirs(): void {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  dirs.clear();
}

/** Cgroup parents (relative names) the bench's handlers or helper create, in any hierarchy. */
const cgroupParents = new Set<string>();
export function registerCgroupParent(name: string): void {
  cgroupParents.add(name);
}

/**
 * Registers a cgroup parent that a third party (libvirt's `/machine` partition) may create,
 * unless it already exists somewhere: only what this run created is removed.
 */
export function registerCgroupParentIfNew(name: string): void {
  if (cgroupDirs(name).length === 0) cgroupParents.add(name);
}

/** Where a cgroup parent may exist: below each mounted v1 hierarchy and the v2 root. */
function cgroupDirs(name: string): string[] {
  const base = '/sys/fs/cgroup';
  const out = [join(base, name)];
  try {
    for (const e of readdirSync(base, { withFileTypes: true }))
      if (e.isDirectory()) out.push(join(base, e.name, name));
  } catch {}
  return out.filter((d) => existsSync(d));
}

/** Directories outside the temporary ones that a third party may create; removed if new. */
const foreignDirs = new Set<string>();
export function registerDirIfNew(dir: string): void {
  if (!existsSync(dir)) foreignDirs.add(dir);
}

/** Clean-up actions of contenders (destroy domains, stop helpers), run before the sweep. */
const closers: Array<() => Promise<void> | void> = [];
export function onCleanup(fn: () => Promise<void> | void): void {
  closers.push(fn);
}

/** Pids of live processes whose command line or environment mentions {@link MARKER}. */
export function markedProcesses(): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (!cmdline.includes(MARKER)) continue;
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z') continue;
      pids.push(Number(entry));
    } catch {
      // gone
    }
  }
  return pids;
}

let cleaned = false;
/** Runs every closer, kills any QEMU of this run still alive, removes directories and cgroups. */
export async function cleanupAll(): Promise<string[]> {
  if (cleaned) return [];
  cleaned = true;
  const notes: string[] = [];
  for (const fn of closers.reverse()) {
    try {
      await fn();
    } catch (err) {
      notes.push(`clean-up step failed: ${(err as Error).message}`);
    }
  }
  const left = markedProcesses();
  for (const pid of left) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {}
  }
  if (left.length) notes.push(`killed ${left.length} leftover process(es) of this run: ${left.join(' ')}`);
  if (left.length) await new Promise((r) => setTimeout(r, 300));
  for (const dir of [...dirs, ...foreignDirs]) rmSync(dir, { recursive: true, force: true });
  for (const name of cgroupParents) for (const dir of cgroupDirs(name)) removeCgroupTree(dir, notes);
  return notes;
}

/** Removes a cgroup v1 directory and its children (they must hold no tasks). */
function removeCgroupTree(dir: string, notes: string[]): void {
  if (!existsSync(dir)) return;
  for (const e of readdirSync(dir, { withFileTypes: true }))
    if (e.isDirectory()) removeCgroupTree(join(dir, e.name), notes);
  try {
    rmdirSync(dir);
  } catch (err) {
    notes.push(`cannot remove cgroup ${dir}: ${(err as Error).message}`);
  }
}

// ---------------------------------------------------------------- statistics

export interface Summary {
  n: number;
  median: number;
  p95: number;
  p99: number;
  min: number;
  max: number;
  mean: number;
}

/** Nearest-rank percentile of sorted samples. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))] as number;
}

export function summarize(samples: readonly number[]): Summary {
  const s = [...samples].sort((a, b) => a - b);
  const median =
    s.length === 0
      ? Number.NaN
      : s.length % 2
        ? (s[(s.length - 1) / 2] as number)
        : ((s[s.length / 2 - 1] as number) + (s[s.length / 2] as number)) / 2;
  return {
    n: s.length,
    median,
    p95: percentile(s, 95),
    p99: percentile(s, 99),
    min: s[0] ?? Number.NaN,
    max: s[s.length - 1] ?? Number.NaN,
    mean: s.reduce((a, b) => a + b, 0) / (s.length || 1),
  };
}

/** Milliseconds since `t0` (a `process.hrtime.bigint()`). */
/** Latencies of `n` sequential calls of `fn` in µs, sorted, after `warmup` unmeasured calls. */
export async function sampleMicros(fn: () => Promise<unknown>, n: number, warmup: number): Promise<number[]> {
  for (let i = 0; i < warmup; i++) await fn();
  const samples: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = process.hrtime.bigint();
    await fn();
    samples.push(Number(process.hrtime.bigint() - t) / 1000);
  }
  return samples.sort((a, b) => a - b);
}

/**
 * Ends a bench child that speaks JSON lines on stdin: asks it to quit (it cleans up its domains),
 * and SIGTERMs it if it has not exited within 20 s.
 */
export async function quitChild(child: ChildProcess, exited: Promise<void>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.stdin?.end(`${JSON.stringify({ cmd: 'quit' })}\n`);
  const t = setTimeout(() => child.kill('SIGTERM'), 20_000);
  await exited;
  clearTimeout(t);
}

export function msSince(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

// ---------------------------------------------------------------- memory

/** Peak resident set size of a process in KiB (VmHWM), or undefined when it is gone. */
export function vmHwmKiB(pid: number | 'self' = 'self'): number | undefined {
  return statusField(pid, 'VmHWM');
}

export function vmRssKiB(pid: number | 'self' = 'self'): number | undefined {
  return statusField(pid, 'VmRSS');
}

function statusField(pid: number | 'self', field: string): number | undefined {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Resets the peak RSS (VmHWM) of a process to its current RSS (`echo 5 > clear_refs`). */
export function resetHwm(pid: number | 'self' = 'self'): void {
  writeFileSync(`/proc/${pid}/clear_refs`, '5');
}

// ---------------------------------------------------------------- machine

export function machineDescription(): string {
  const cpu = /^model name\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown CPU';
  const cores = readFileSync('/proc/cpuinfo', 'utf8').match(/^processor\s*:/gm)?.length ?? 0;
  const memKiB = Number(/^MemTotal:\s+(\d+)/m.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? 0);
  const osName =
    /^PRETTY_NAME="?([^"\n]*)"?/m.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? 'unknown OS';
  const kernel = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
  return `${cores} × ${cpu}, ${Math.round(memKiB / 1024 / 1024)} GiB RAM, ${osName}, Linux ${kernel}, Node ${process.version}`;
}

export function qemuVersion(): string {
  try {
    return execFileSync(QEMU, ['--version'], { encoding: 'utf8' }).split('\n')[0] ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

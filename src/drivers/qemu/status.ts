import { readFileSync } from 'node:fs';
import { z } from 'zod';
import type { DomainDefinition } from '../../stable/definition/schema.js';
import { writeFileAtomic, writeFileAtomicSync } from '../../util/atomic-file.js';

const threadsSchema = z.object({
  emulator: z.number().int(),
  vcpus: z.array(z.object({ index: z.number().int(), tid: z.number().int() })),
  iothreads: z.array(z.object({ index: z.number().int(), tid: z.number().int() })),
});

const placementSchema = z.object({ tid: z.number().int(), cgroup: z.string() });

/** Where a thread was placed by `cgroup.placeThreads`. */
export type Placement = z.infer<typeof placementSchema>;

/** Thread ids of a running domain, from QMP (never from thread names, which the guest side can set). */
export type ThreadIds = z.infer<typeof threadsSchema>;

/** The job that held the domain when the status was written; settled on reconnect (docs/jobs.md). */
const jobRecordSchema = z.object({
  operation: z.string(),
  phase: z.string(),
  startedAt: z.number(),
  /** What the job's recovery rule needs besides the phase (an outgoing migration: `sourceRan`). */
  data: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).optional(),
});

/** The job recorded in a status file. */
export type JobRecord = z.infer<typeof jobRecordSchema>;

const statusSchema = z.object({
  version: z.literal(1),
  phase: z.enum(['starting', 'running']),
  /** Absent when no job held the domain; older drivers never wrote it. */
  job: jobRecordSchema.optional(),
  /**
   * The domain's state with its reason when the file was written (libvirt's status XML keeps it):
   * what QEMU cannot tell on reconnect (`booted`, `migrated`…) survives. Checked apart
   * (run-state.ts) so that an unknown value never makes the whole record unreadable.
   */
  state: z.unknown().optional(),
  id: z.number().int(),
  pid: z.number().int().positive(),
  startTime: z.string().regex(/^\d+$/),
  emulator: z.string(),
  monitor: z.string(),
  taints: z.array(z.string()),
  threads: threadsSchema.optional(),
  placements: z.array(placementSchema).default([]),
  /** `cgroup.placeThreads` was invoked: a successor must release even without recorded placements. */
  placementAttempted: z.boolean().default(false),
  /** The domain is removed once this QEMU stops (an incoming migration without `persist`). */
  transient: z.boolean().optional(),
  /** Version of the live definition; 1 for status files written before versions existed. */
  liveVersion: z.number().int().positive().default(1),
  live: z.unknown(),
});

/**
 * The status file of a running domain in `<root>/run`: all a new driver needs to adopt it. (Not the
 * public `DomainStatus`, a state with its reason, which this record holds as `state`.)
 */
export type StatusRecord = Omit<z.infer<typeof statusSchema>, 'live'> & { live: DomainDefinition };

/** A status as written: the live definition may be a record kept as found (unreadable). */
export type RawStatusRecord = Omit<StatusRecord, 'live'> & { live: unknown };

/**
 * Writes the status atomically: a reader sees the old or the new status, never a torn one.
 *
 * `durable` (fsync of the file and its directory) is for the record QEMU may run guest code
 * under (phase `running`, written before `cont`); its fsyncs run off the event loop, so many
 * domains starting at once do not wait for each other. The records before it (`starting`, the
 * placement steps) describe a stub, a paused QEMU and cgroups, none of which survive a crash of
 * the host; what they guard against, a killed driver, the page cache already covers. They are
 * written synchronously, replacing the old file by exchange (tens of µs, see
 * {@link writeFileAtomicSync}): the same write through the thread pool took a millisecond or more
 * of round trips, and a plain rename over the old file made ext4 start writing it back at once.
 * `replacesVolatile`: the record replaced was written without fsync (the start's `starting`
 * records), so a host crash during this write loses nothing durable; it is fsync'd after the rename.
 */
export async function writeStatus(
  path: string,
  status: RawStatusRecord,
  durable = true,
  options: { readonly replacesVolatile?: boolean } = {},
): Promise<void> {
  const text = `${JSON.stringify(status)}\n`;
  // Replacing a record that was not durable itself, one journal commit is enough (see writeFileAtomic).
  if (durable)
    await writeFileAtomic(path, text, 0o600, { durable, syncAfterRename: options.replacesVolatile });
  else writeFileAtomicSync(path, text, 0o600, { durable });
}

/** Writes the status at once, not fsync'd: the record of a volatile change (see {@link writeStatus}). */
export function writeStatusSync(path: string, status: RawStatusRecord): void {
  writeFileAtomicSync(path, `${JSON.stringify(status)}\n`, 0o600, { durable: false });
}

/** Reads a status file; undefined when there is none, throws when it is corrupt. */
export function readStatus(path: string): StatusRecord | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  return statusSchema.parse(JSON.parse(text)) as StatusRecord;
}

import type { DomainDefinition } from '../../../stable/definition/schema.js';
import type { HeldJob } from '../../jobs.js';
import type { DomainObject } from '../domain-object.js';
import { domainPaths, type RootLayout } from '../root.js';
import { recordJob } from '../runtime-status.js';
import { readStatus } from '../status.js';
import type { MigrationAddress } from './uri.js';

/** How an incoming stream ended, as the destination's QEMU reported it. */
export type IncomingOutcome = { readonly ok: true } | { readonly ok: false; readonly error: Error };

/**
 * The phases of an outgoing migration (libvirt's `begin3`, `perform3`, `perform3_done`,
 * `confirm3_cancelled`, `confirm3`), plus `perform-failed`: the stream failed and the source runs
 * again, waiting for a cancelled confirm.
 */
export type OutgoingPhase =
  | 'begin'
  | 'perform'
  | 'perform-done'
  | 'perform-failed'
  | 'confirm'
  | 'confirm-cancelled';

/** The source's side of a migration under way, between begin and confirm. */
export interface OutgoingRecord {
  readonly role: 'out';
  /** Where the migration is; also the phase of its job (docs/jobs.md). */
  phase: OutgoingPhase;
  /**
   * The `migration-out` job that holds the domain from begin to confirm; absent for a migration a
   * successor driver adopted after its manager died (it only awaits the application's confirm).
   */
  readonly held: HeldJob | undefined;
  /** The vCPUs ran when the stream started: a cancelled migration resumes them. */
  wasRunning: boolean;
  /** Perform gave QEMU TLS credentials: a cancelled migration takes them back. */
  tls?: boolean;
}

/** The destination's side of a migration under way, between prepare and finish. */
export interface IncomingRecord {
  readonly role: 'in';
  /** The source's vCPUs ran: finish resumes the destination's. */
  readonly running: boolean;
  /** Prepare defined the domain here: a rollback undefines it again. */
  readonly definedHere: boolean;
  readonly address: MigrationAddress;
  /** Settles when the stream completed, failed or QEMU exited. */
  readonly outcome: Promise<IncomingOutcome>;
  /** The `migration-in` job that holds the domain from prepare to finish. */
  readonly held: HeldJob;
  /**
   * The incoming QEMU exited before finish: the job has let go of the domain, the record waits
   * for finish to report the failure (and to undefine a domain prepare defined).
   */
  gone: boolean;
  /** Prepare gave QEMU TLS credentials: finish takes them back once the guest runs here. */
  readonly tls: boolean;
}

/** The status file says the domain came in by a migration without `persist`: it ends with its QEMU. */
export function arrivedTransient(layout: RootLayout, def: DomainDefinition): boolean {
  try {
    return readStatus(domainPaths(layout, def.name, def.uuid).status)?.transient === true;
  } catch {
    return false;
  }
}

/*
 * Kept beside the domain objects rather than in them, so that the migration state is this module's
 * own: a domain object without an entry is not migrating.
 */
const records = new WeakMap<DomainObject, OutgoingRecord | IncomingRecord>();

export function migrationOf(dom: DomainObject): OutgoingRecord | IncomingRecord | undefined {
  return records.get(dom);
}

/**
 * Ends the migration `record` of `dom` if it is still the current one: the record goes, the status
 * file no longer names its job, and the job lets go of the domain (in that order, so the next
 * job's record is never overwritten).
 */
export async function endMigration(
  dom: DomainObject,
  record: OutgoingRecord | IncomingRecord,
  error?: unknown,
): Promise<void> {
  if (records.get(dom) !== record) return;
  records.delete(dom);
  const run = dom.run;
  if (run && record.held) await recordJob(dom, run, undefined).catch(() => undefined);
  record.held?.end(error);
}

export function setMigration(dom: DomainObject, record: OutgoingRecord | IncomingRecord | undefined): void {
  if (record) records.set(dom, record);
  else records.delete(dom);
}

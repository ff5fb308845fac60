import type { DomainObject } from '../domain-object.js';
import type { MigrationAddress } from './uri.js';

/** How an incoming stream ended, as the destination's QEMU reported it. */
export type IncomingOutcome = { readonly ok: true } | { readonly ok: false; readonly error: Error };

/** The source's side of a migration under way, between begin and confirm. */
export interface OutgoingRecord {
  readonly role: 'out';
  /** `begun` until the stream completed, then `performed`. */
  phase: 'begun' | 'performing' | 'performed';
  /** The vCPUs ran when the stream started: a cancelled migration resumes them. */
  wasRunning: boolean;
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
}

/*
 * Kept beside the domain objects rather than in them, so that the migration state is this module's
 * own: a domain object without an entry is not migrating.
 */
const records = new WeakMap<DomainObject, OutgoingRecord | IncomingRecord>();

export function migrationOf(dom: DomainObject): OutgoingRecord | IncomingRecord | undefined {
  return records.get(dom);
}

export function setMigration(dom: DomainObject, record: OutgoingRecord | IncomingRecord | undefined): void {
  if (record) records.set(dom, record);
  else records.delete(dom);
}

import { isDeepStrictEqual } from 'node:util';
import { ErrorCode, VirtError } from '../../errors.js';
import type { DomainDefinition } from '../../stable/definition/schema.js';
import { type MigrationAddress, parseMigrationUri } from '../migration-uri.js';

/*
 * Live migration between test drivers of one process: the embedded driver's five steps, checks,
 * states and events, with an in-process "stream". A prepared destination listens under the URI
 * prepare returned, in a registry shared by every test driver of the process; perform connects to
 * it there (nothing listening: the stream fails, as a refused connection does).
 */

/** `tcp:HOST:PORT` or `unix:/absolute/path`, by the embedded driver's own rule. */
export const parseAddress = parseMigrationUri;
type Address = MigrationAddress;

const format = (a: Address): string => (a.kind === 'unix' ? `unix:${a.path}` : `tcp:${a.host}:${a.port}`);

/** A destination waiting for its stream. */
export interface Listener {
  /** The uuid of the domain it receives. */
  readonly uuid: string;
  /** The stream arrived complete. */
  deliver(): void;
}

const listeners = new Map<string, Listener>();
/** Port 0 gets the next of these, as the kernel would pick an ephemeral port. */
let nextPort = 49152;

/** Listens at `address` (a free port for port 0); `OPERATION_FAILED` when the address is taken. */
export function listen(listen: string, listener: Listener): string {
  const address = parseAddress(listen, 'listen');
  let uri = format(address);
  if (address.kind === 'tcp' && address.port === 0) {
    do uri = format({ ...address, port: nextPort++ });
    while (listeners.has(uri));
  }
  if (listeners.has(uri))
    throw new VirtError(ErrorCode.OPERATION_FAILED, `cannot listen at ${uri}: the address is in use`);
  listeners.set(uri, listener);
  return uri;
}

/** Stops listening; the address is free again. */
export function unlisten(uri: string): void {
  listeners.delete(uri);
}

/** The destination listening at `uri`, if any. */
export function connectTo(uri: string): Listener | undefined {
  return listeners.get(format(parseAddress(uri, 'uri')));
}

/** A domain already defined at the destination must have the definition offered. */
export function checkSameDefinition(here: DomainDefinition, offered: DomainDefinition): void {
  if (isDeepStrictEqual(JSON.parse(JSON.stringify(here)), JSON.parse(JSON.stringify(offered)))) return;
  throw new VirtError(
    ErrorCode.CONFIG_UNSUPPORTED,
    `the domain '${here.name}' defined at the destination differs from the source's; undefine it there or define the same definition`,
    { domain: { name: here.name, uuid: here.uuid } },
  );
}

/** The error of a migration step its caller aborted, as the embedded driver reports it. */
export function migrationAborted(step: string, domain: { name: string; uuid: string }): VirtError {
  return new VirtError(
    ErrorCode.ABORTED,
    `the migration of '${domain.name}' was aborted by the caller during ${step}; it was rolled back`,
    { domain: { name: domain.name, uuid: domain.uuid }, aborted: true },
  );
}

/** A migration under way, on the source (`out`) or the destination (`in`). */
export type MigrationRecord =
  | { readonly role: 'out'; phase: 'begun' | 'performed'; wasRunning: boolean }
  | {
      readonly role: 'in';
      readonly uri: string;
      readonly running: boolean;
      readonly definedHere: boolean;
      /** Settles true when the stream arrived, false when the source gave up. */
      readonly outcome: Promise<boolean>;
      readonly settle: (ok: boolean) => void;
    };

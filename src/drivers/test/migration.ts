import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { ErrorCode, errorMessage, VirtError } from '../../errors.js';
import type { MigrationTlsOptions } from '../../stable/migration.js';
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
  /** The credentials a stream must come with (checked by prepare), as QEMU's `tls-creds-x509`. */
  readonly tls: MigrationTlsOptions | undefined;
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

/**
 * The TLS handshake of a stream, simulated on the real certificate files: both ends use TLS or
 * neither, each end's certificate is signed by the CA the other end trusts and valid now, and the
 * destination's names `hostname`. Returns why the handshake fails, or undefined.
 */
export function tlsHandshake(
  server: MigrationTlsOptions | undefined,
  client: MigrationTlsOptions | undefined,
  hostname: string | undefined,
): string | undefined {
  if (!server && !client) return undefined;
  if (!server) return 'the source speaks TLS to a destination that does not';
  if (!client) return 'the destination expects TLS and the source sent a plain stream';
  const pem = (dir: string, file: string) => new X509Certificate(readFileSync(join(dir, file)));
  try {
    const serverCert = pem(server.dir, 'server-cert.pem');
    const clientCert = pem(client.dir, 'client-cert.pem');
    const trusted = (cert: X509Certificate, ca: X509Certificate) =>
      cert.checkIssued(ca) && cert.verify(ca.publicKey);
    const now = Date.now();
    const current = (cert: X509Certificate) =>
      Date.parse(cert.validFrom) <= now && now <= Date.parse(cert.validTo);
    if (!trusted(serverCert, pem(client.dir, 'ca-cert.pem')) || !current(serverCert))
      return "the destination's certificate is not signed by the source's CA or not valid now";
    if (!trusted(clientCert, pem(server.dir, 'ca-cert.pem')) || !current(clientCert))
      return "the source's certificate is not signed by the destination's CA or not valid now";
    const name = hostname ?? '';
    const named = isIP(name) ? serverCert.checkIP(name) : serverCert.checkHost(name);
    if (named === undefined) return `the destination's certificate is not for '${name}'`;
  } catch (err) {
    return `unreadable credentials: ${errorMessage(err)}`;
  }
  return undefined;
}

export { checkSameDefinition } from '../migration-definition.js';

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

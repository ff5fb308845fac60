import { accessSync, constants } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { ErrorCode, VirtError } from '../errors.js';
import type { MigrationTlsOptions } from '../stable/migration.js';
import type { MigrationAddress } from './migration-uri.js';

/** Which end of the stream: the destination listens (server), the source connects (client). */
export type TlsEndpoint = 'server' | 'client';

/** The files an end's credentials directory holds, as QEMU's `tls-creds-x509` expects them. */
export function tlsFiles(endpoint: TlsEndpoint): readonly string[] {
  return ['ca-cert.pem', `${endpoint}-cert.pem`, `${endpoint}-key.pem`];
}

/**
 * Refuses credentials QEMU could not load, before anything starts: the directory must be absolute
 * and hold the CA and this end's certificate and key. Both drivers apply it.
 */
export function checkTls(tls: MigrationTlsOptions, endpoint: TlsEndpoint, field: string): void {
  if (typeof tls.dir !== 'string' || !isAbsolute(tls.dir))
    throw new VirtError(ErrorCode.CONFIG_UNSUPPORTED, `${field}.dir must be an absolute path`, {
      field: `${field}.dir`,
    });
  for (const file of tlsFiles(endpoint)) {
    try {
      accessSync(join(tls.dir, file), constants.R_OK);
    } catch {
      throw new VirtError(
        ErrorCode.CONFIG_UNSUPPORTED,
        `${field}.dir has no readable ${file}: the ${endpoint === 'server' ? 'destination' : 'source'} needs ca-cert.pem, ${endpoint}-cert.pem and ${endpoint}-key.pem`,
        { field: `${field}.dir`, file: join(tls.dir, file) },
      );
    }
  }
}

/**
 * The source's credentials, checked: returns the name the destination's certificate must carry
 * (`tls.hostname`, else the host of a `tcp:` URI; a `unix:` URI has none to default to).
 */
export function checkClientTls(tls: MigrationTlsOptions, address: MigrationAddress): string {
  checkTls(tls, 'client', 'tls');
  const hostname = tls.hostname ?? (address.kind === 'tcp' ? address.host : undefined);
  if (!hostname)
    throw new VirtError(
      ErrorCode.CONFIG_UNSUPPORTED,
      'tls.hostname is required for a unix: URI: it names the certificate the destination must show',
      { field: 'tls.hostname' },
    );
  return hostname;
}

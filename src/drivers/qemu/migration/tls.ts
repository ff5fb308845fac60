import { accessSync, constants } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { ErrorCode, VirtError } from '../../../errors.js';
import type { MigrationTlsOptions } from '../../../stable/migration.js';
import type { QmpClient } from '../qmp/client.js';

/** The id of the credentials object (libvirt names its own `objlibvirt_migrate_tls0`). */
const TLS_OBJECT = 'objvirtkit_migrate_tls0';

/** Which end of the stream a QEMU is: the destination listens (server), the source connects (client). */
export type TlsEndpoint = 'server' | 'client';

/**
 * Refuses credentials QEMU could not load, before anything starts: the directory must be absolute
 * and hold the CA and this end's certificate and key, as `tls-creds-x509` expects them.
 */
export function checkTls(tls: MigrationTlsOptions, endpoint: TlsEndpoint, field: string): void {
  if (typeof tls.dir !== 'string' || !isAbsolute(tls.dir))
    throw new VirtError(ErrorCode.CONFIG_UNSUPPORTED, `${field}.dir must be an absolute path`, {
      field: `${field}.dir`,
    });
  for (const file of ['ca-cert.pem', `${endpoint}-cert.pem`, `${endpoint}-key.pem`]) {
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
 * Gives QEMU the x509 credentials and makes the migration use them; both ends verify the peer
 * against the CA. `hostname` is the name the destination's certificate must carry (source only).
 */
export async function enableTls(
  qmp: QmpClient,
  tls: MigrationTlsOptions,
  endpoint: TlsEndpoint,
  hostname: string | undefined,
): Promise<void> {
  await qmp.command('object-add', {
    'qom-type': 'tls-creds-x509',
    id: TLS_OBJECT,
    dir: tls.dir,
    endpoint,
    'verify-peer': true,
  });
  await qmp.command('migrate-set-parameters', {
    'tls-creds': TLS_OBJECT,
    ...(hostname ? { 'tls-hostname': hostname } : {}),
  });
}

/** Takes the credentials back, so a later migration of this QEMU does not use them unasked. */
export async function disableTls(qmp: QmpClient): Promise<void> {
  await qmp.command('migrate-set-parameters', { 'tls-creds': '', 'tls-hostname': '' }).catch(() => undefined);
  await qmp.command('object-del', { id: TLS_OBJECT }).catch(() => undefined);
}

import type { MigrationTlsOptions } from '../../../stable/migration.js';
import { checkClientTls, checkTls, type TlsEndpoint } from '../../migration-tls.js';
import type { QmpClient } from '../qmp/client.js';

/** The id of the credentials object (libvirt names its own `objlibvirt_migrate_tls0`). */
const TLS_OBJECT = 'objvirtkit_migrate_tls0';

export { checkClientTls, checkTls, type TlsEndpoint };

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

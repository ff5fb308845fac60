import { ErrorCode, VirtError } from '../../../errors.js';
import { type MigrationAddress, parseMigrationUri } from '../../migration-uri.js';

export { type MigrationAddress, parseMigrationUri };

/** The URI form QEMU takes. */
export function formatMigrationUri(address: MigrationAddress): string {
  return address.kind === 'unix' ? `unix:${address.path}` : `tcp:${address.host}:${address.port}`;
}

/** The error of a migration step its caller aborted; what the step had done is rolled back. */
export function migrationAborted(step: string, domain: { name: string; uuid: string }): VirtError {
  return new VirtError(
    ErrorCode.ABORTED,
    `the migration of '${domain.name}' was aborted by the caller during ${step}; it was rolled back`,
    { domain: { name: domain.name, uuid: domain.uuid }, aborted: true },
  );
}

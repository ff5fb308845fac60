import type { TlsJson } from '../stable/control/operations.js';
import type { MigrationProgress } from '../stable/migration.js';
import type { Endpoint } from './endpoint.js';

/** Options of `virtkit migrate`, as virsh names them. */
export interface MigrateFlags {
  readonly listen?: string;
  readonly bandwidth?: number;
  readonly maxDowntime?: number;
  readonly verbose?: boolean;
  /** Define the domain at the destination (virsh `--persistent`). */
  readonly persistent?: boolean;
  /** Remove the source's definition once migrated (virsh `--undefinesource`). */
  readonly undefinesource?: boolean;
  /** TLS credentials for both ends, when the stream is to be encrypted (virsh `--tls`). */
  readonly tls?: TlsJson | undefined;
}

/**
 * `virsh migrate`: the five steps of a live migration between two endpoints, each a driver of the
 * command's own or an application's driver reached through its control socket, rolled back at
 * every step as `Domain.migrateTo` does: on failure the domain runs at the source as before and
 * nothing is left at the destination.
 *
 * @returns the migrated domain
 */
export async function migrate(
  source: Endpoint,
  dest: Endpoint,
  domain: string,
  flags: MigrateFlags,
  progress: (p: MigrationProgress) => void,
): Promise<{ name: string; uuid: string }> {
  const offer = await source.call('migrateBegin', { domain });
  const uuid = offer.cookie.uuid;
  const cancelSource = () =>
    source.call('migrateConfirm', { domain: uuid, cancelled: true }).catch(() => undefined);
  let incoming: Awaited<ReturnType<typeof dest.call<'migratePrepare'>>>;
  try {
    incoming = await dest.call('migratePrepare', {
      offer: offer as unknown as Record<string, unknown>,
      listen: flags.listen ?? 'tcp:127.0.0.1:0',
      persist: !!flags.persistent,
      ...(flags.tls === undefined ? {} : { tls: flags.tls }),
    });
  } catch (err) {
    await cancelSource();
    throw err;
  }
  try {
    await source.call(
      'migratePerform',
      {
        domain: uuid,
        uri: incoming.uri,
        cookie: incoming.cookie,
        ...(flags.bandwidth === undefined ? {} : { bandwidthMiBps: flags.bandwidth }),
        ...(flags.maxDowntime === undefined ? {} : { maxDowntimeMs: flags.maxDowntime }),
        ...(flags.tls === undefined ? {} : { tls: flags.tls }),
      },
      (p) => progress(p as MigrationProgress),
    );
  } catch (err) {
    await dest.call('migrateFinish', { uuid, cancelled: true }).catch(() => undefined);
    await cancelSource();
    throw err;
  }
  let moved: { name: string; uuid: string };
  try {
    moved = await dest.call('migrateFinish', { uuid });
  } catch (err) {
    await cancelSource();
    throw err;
  }
  await source.call('migrateConfirm', { domain: uuid, undefineSource: !!flags.undefinesource });
  return moved;
}

/** virsh's progress line: `Migration: [ 42 %]`. */
export function progressLine(p: MigrationProgress): string {
  const done =
    p.status === 'completed' || p.dataTotal <= 0
      ? p.status === 'completed'
        ? 100
        : 0
      : Math.min(99, Math.floor(((p.dataTotal - p.dataRemaining) / p.dataTotal) * 100));
  return `Migration: [${String(done).padStart(3)} %]`;
}

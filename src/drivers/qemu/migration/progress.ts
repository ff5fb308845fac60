import type { MigrationProgress } from '../../../stable/migration.js';
import type { QmpMigrationInfo } from '../qmp/commands.js';

/** QEMU's `query-migrate` as the stable progress shape. */
export function progressOf(info: QmpMigrationInfo, startedAt: number): MigrationProgress {
  const ram = info.ram;
  return {
    status: info.status ?? 'none',
    elapsedMs: info['total-time'] ?? Date.now() - startedAt,
    dataTotal: ram?.total ?? 0,
    dataProcessed: ram?.transferred ?? 0,
    dataRemaining: ram?.remaining ?? 0,
    dirtyPagesRate: ram?.['dirty-pages-rate'] ?? 0,
    ...(info['expected-downtime'] !== undefined ? { expectedDowntimeMs: info['expected-downtime'] } : {}),
    ...(info.downtime !== undefined ? { downtimeMs: info.downtime } : {}),
  };
}

import type { DomainDefinition } from './definition/schema.js';

/*
 * Live migration follows libvirt's five steps, so source and destination may be driven by different
 * processes (or hosts) that exchange only JSON: begin (source) → prepare (destination) → perform
 * (source) → finish (destination) → confirm (source).
 */

/**
 * What the source tells the destination, produced by `Domain.migrateBegin`. JSON-serialisable, so an
 * application can carry it to another process or host.
 *
 * @public
 */
export interface MigrationOffer {
  /** The source's live definition as libvirt domain XML (aliases and defaults filled in). */
  readonly xml: string;
  /** What the destination needs besides the XML. */
  readonly cookie: MigrationOfferCookie;
}

/**
 * The source's half of the cookie exchange.
 *
 * @public
 */
export interface MigrationOfferCookie {
  /** Format of the cookie; this library writes and reads 1. */
  readonly version: 1;
  /** The domain's uuid. */
  readonly uuid: string;
  /** The domain's name. */
  readonly name: string;
  /** The persistent definition (libvirt XML), which the destination starts from and may define. */
  readonly inactiveXml: string;
  /** Whether the source's vCPUs ran when the migration began: the destination resumes only then. */
  readonly running: boolean;
  /** The source's taints, carried over to the destination. */
  readonly taints: readonly string[];
}

/**
 * The destination's half of the cookie exchange, returned by `Connection.migratePrepare`.
 *
 * @public
 */
export interface MigrationIncomingCookie {
  /** Format of the cookie; this library writes and reads 1. */
  readonly version: 1;
  /** The domain's uuid. */
  readonly uuid: string;
  /** Where the destination listens (the real port when 0 was asked for). */
  readonly uri: string;
}

/**
 * TLS for the migration stream, with QEMU's `tls-creds-x509`: `dir` holds `ca-cert.pem` and this
 * side's certificate and key — `server-cert.pem` and `server-key.pem` at the destination,
 * `client-cert.pem` and `client-key.pem` at the source (one directory may hold both). Each side
 * verifies the other against its CA; a peer it does not trust fails the migration.
 *
 * @public
 */
export interface MigrationTlsOptions {
  /** Absolute path of the credentials directory. */
  readonly dir: string;
  /**
   * Source only: the name the destination's certificate must carry. Default: the host of a
   * `tcp:` URI; required for `unix:`.
   */
  readonly hostname?: string;
}

/**
 * Options of `Connection.migratePrepare`.
 *
 * @public
 */
export interface MigratePrepareOptions {
  /** Where the destination listens: `tcp:HOST:PORT` (PORT may be 0) or `unix:/absolute/path`. */
  readonly listen: string;
  /** Aborts the preparation; the destination is rolled back. */
  readonly signal?: AbortSignal;
  /**
   * Define the domain persistently at the destination (libvirt's `VIR_MIGRATE_PERSIST_DEST`), from
   * the source's persistent definition. Without it a domain that the destination did not have
   * defined is transient there: it is removed once its QEMU stops. A domain already defined there
   * stays defined either way.
   */
  readonly persist?: boolean;
  /** Accept only a TLS stream from a source the CA vouches for. */
  readonly tls?: MigrationTlsOptions;
}

/**
 * Progress of an outgoing migration, from QEMU's `query-migrate`.
 *
 * @public
 */
export interface MigrationProgress {
  /** QEMU's migration status: `setup`, `active`, `device`, `completed`, `failed`, `cancelled`… */
  readonly status: string;
  /** Milliseconds since the stream began. */
  readonly elapsedMs: number;
  /** Guest RAM to transfer, in bytes. */
  readonly dataTotal: number;
  /** Bytes transferred so far. */
  readonly dataProcessed: number;
  /** Bytes left to transfer. */
  readonly dataRemaining: number;
  /** Pages the guest dirties per second. */
  readonly dirtyPagesRate: number;
  /** Expected downtime in milliseconds, while the stream runs. */
  readonly expectedDowntimeMs?: number;
  /** The downtime the guest saw, once completed. */
  readonly downtimeMs?: number;
}

/**
 * Options of `Domain.migratePerform`.
 *
 * @public
 */
export interface MigratePerformOptions {
  /** The destination's cookie from `migratePrepare`; checked against the domain. */
  readonly cookie?: MigrationIncomingCookie;
  /** The longest pause of the guest QEMU may plan for the final switch-over, in milliseconds. */
  readonly maxDowntimeMs?: number;
  /** Bandwidth limit of the stream, in MiB/s. */
  readonly bandwidthMiBps?: number;
  /** Send the stream over TLS to a destination the CA vouches for (its prepare needs `tls` too). */
  readonly tls?: MigrationTlsOptions;
  /** Cancels the migration (`migrate_cancel`); the source keeps running. */
  readonly signal?: AbortSignal;
  /** Called with the progress about every 200 ms while the stream runs, and once at the end. */
  readonly onProgress?: (progress: MigrationProgress) => void;
}

/**
 * Options of `IncomingMigration.finish` and `Domain.migrateConfirm`.
 *
 * @public
 */
export interface MigrationEndOptions {
  /**
   * The migration failed or was given up: the destination is destroyed (finish), the source resumes
   * if it ran (confirm).
   */
  readonly cancelled?: boolean;
  /** Stops waiting for the stream (finish); the destination is then rolled back. */
  readonly signal?: AbortSignal;
}

/**
 * Options of `Domain.migrateConfirm`.
 *
 * @public
 */
export interface MigrationConfirmOptions extends MigrationEndOptions {
  /**
   * Once the migration is confirmed (not when `cancelled`), remove the source's persistent
   * definition (libvirt's `VIR_MIGRATE_UNDEFINE_SOURCE`).
   */
  readonly undefineSource?: boolean;
}

/**
 * Options of `Domain.migrateTo`: where the destination listens and how the stream runs.
 *
 * @public
 */
export interface MigrateToOptions extends Omit<MigratePerformOptions, 'cookie'> {
  /** Where the destination listens; default `tcp:127.0.0.1:0`. */
  readonly listen?: string;
  /** See {@link MigratePrepareOptions.persist}. */
  readonly persist?: boolean;
  /** See {@link MigrationConfirmOptions.undefineSource}. */
  readonly undefineSource?: boolean;
}

/** What the destination's driver returns from prepare. @internal */
export interface PreparedIncoming {
  /** The uri the source connects to. */
  readonly uri: string;
  /** The destination's cookie. */
  readonly cookie: MigrationIncomingCookie;
  /** The destination domain. */
  readonly name: string;
  /** The destination domain's uuid. */
  readonly uuid: string;
}

/** The offer as the destination's driver receives it: definitions already parsed and validated. @internal */
export interface ResolvedOffer {
  /** The persistent definition to start (and define) on the destination. */
  readonly definition: DomainDefinition;
  /** The source's live definition, which the destination's must match. */
  readonly live: DomainDefinition;
  /** The cookie as sent. */
  readonly cookie: MigrationOfferCookie;
}

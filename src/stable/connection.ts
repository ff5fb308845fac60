import { z } from 'zod';
import { ErrorCode, VirtError } from '../errors.js';
import type { Capabilities, DomainCapabilities, DomainCapabilitiesOptions } from './capabilities.js';
import type { DomainDefinitionInput } from './definition/schema.js';
import { resolveDefinition } from './definition/validate.js';
import { resolveDomainXml } from './definition/xml.js';
import { Domain, IncomingMigration } from './domain.js';
import { type DomainRef, type Driver, INTERNAL_SEAM, type StartOptions } from './driver.js';
import type { DomainEvent } from './events.js';
import type { MigratePrepareOptions, MigrationOffer } from './migration.js';

/**
 * Which domains `listDomains` returns.
 *
 * @public
 */
export interface ListDomainsOptions {
  /** `active` (running or paused), `inactive` (shut off) or `all`; default `all`. */
  readonly state?: 'all' | 'active' | 'inactive';
}

/**
 * A connection to one driver. Close it with {@link Connection.close} or `await using`.
 *
 * @public
 */
export class Connection {
  /**
   * The driver behind this connection.
   *
   * @internal
   */
  readonly driver: Driver;
  #closed = false;
  readonly #listeners = new Map<(event: DomainEvent) => void, () => void>();
  /** Wakes every pending `events()` iterator, so close() ends them. */
  readonly #wakers = new Set<() => void>();
  readonly #beforeClose: Array<() => void> = [];

  /** @internal */
  constructor(driver: Driver) {
    this.driver = driver;
  }

  /**
   * The driver's seam for `virtkit/internal`, while the connection is open. Typed `unknown` here so
   * the stable declarations do not describe the seam; `virtkit/internal` checks what it finds.
   *
   * @internal
   */
  get [INTERNAL_SEAM](): unknown {
    return this.#closed ? undefined : (this.driver as { readonly [INTERNAL_SEAM]?: unknown })[INTERNAL_SEAM];
  }

  /** The URI this connection was opened with. */
  get uri(): string {
    return this.driver.uri;
  }

  /** True once {@link Connection.close} has been called. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Defines (or updates) a persistent domain from a libvirt domain XML document or a typed
   * definition. The input is validated in full before anything is written; a second definition
   * with the same name must carry the same uuid.
   *
   * @param definition - libvirt domain XML (the subset {@link parseDomainXml} accepts) or a typed definition
   * @returns a handle on the defined domain
   * @throws {@link VirtError} `XML_ERROR` or `CONFIG_UNSUPPORTED` naming the rejected XML path or field;
   * `XML_ERROR` with `details.size` and `details.limit` for a document over 1 MiB or a typed
   * definition over 2 MiB as JSON
   */
  async defineDomain(definition: string | DomainDefinitionInput): Promise<Domain> {
    this.#checkOpen();
    const resolved =
      typeof definition === 'string' ? resolveDomainXml(definition) : resolveDefinition(definition);
    const ref = await this.driver.defineDomain(resolved);
    return new Domain(this.driver, ref.name, ref.uuid);
  }

  /**
   * Creates and starts a transient domain (libvirt's `virDomainCreateXML`, `virsh create`): it has
   * no persistent definition, is listed with `persistent: false` while it runs, and is gone once it
   * stops, however it stops. A start that fails leaves nothing behind. Defining a domain of the same
   * name and uuid while it runs makes it persistent, as in libvirt.
   *
   * @param definition - libvirt domain XML or a typed definition, as {@link Connection.defineDomain} takes
   * @returns a handle on the running domain
   * @throws {@link VirtError} as {@link Connection.defineDomain}; `DOMAIN_EXISTS` when a domain of that
   *   name or uuid exists; the start's errors otherwise (nothing is left then)
   */
  async createDomain(
    definition: string | DomainDefinitionInput,
    options: StartOptions = {},
  ): Promise<Domain> {
    this.#checkOpen();
    const resolved =
      typeof definition === 'string' ? resolveDomainXml(definition) : resolveDefinition(definition);
    const ref = await this.driver.createDomain(resolved, options);
    return new Domain(this.driver, ref.name, ref.uuid);
  }

  /** Finds a domain by name or uuid; throws `NO_DOMAIN` when there is none. */
  async lookupDomain(nameOrUuid: string): Promise<Domain> {
    this.#checkOpen();
    const ref = this.driver.findDomain(nameOrUuid);
    if (!ref) throw new VirtError(ErrorCode.NO_DOMAIN, `no domain named or with uuid '${nameOrUuid}'`);
    return new Domain(this.driver, ref.name, ref.uuid);
  }

  /** Lists the defined domains, sorted by name. */
  async listDomains(options: ListDomainsOptions = {}): Promise<Domain[]> {
    this.#checkOpen();
    const state = options.state ?? 'all';
    const keep = (r: DomainRef) => state === 'all' || r.active === (state === 'active');
    return this.driver
      .listDomains()
      .filter(keep)
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((r) => new Domain(this.driver, r.name, r.uuid));
  }

  /**
   * Migration step 2 (destination): checks the offer from `Domain.migrateBegin` against this host
   * (a domain of that uuid defined here must have the same definition; disk images must exist),
   * defines the domain if it is new here, and starts QEMU with every vCPU paused, waiting for the
   * stream at `listen`. Privileged operations run in phase `migration-in` before any incoming vCPU
   * runs.
   *
   * @returns the incoming migration: its `uri` and `cookie` go to `Domain.migratePerform`
   * @throws {@link VirtError} `INVALID_URI` for a listen address other than `tcp:HOST:PORT` or
   *   `unix:/path`, `XML_ERROR` for a malformed offer, `CONFIG_UNSUPPORTED` for a definition this
   *   destination cannot honour identically, `OPERATION_INVALID` when the domain is active here
   */
  async migratePrepare(offer: MigrationOffer, options: MigratePrepareOptions): Promise<IncomingMigration> {
    this.#checkOpen();
    if (!this.driver.migratePrepare)
      throw new VirtError(ErrorCode.NO_SUPPORT, `the driver of '${this.uri}' cannot migrate domains`);
    const parsed = offerSchema.safeParse(offer);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new VirtError(
        ErrorCode.XML_ERROR,
        `malformed migration offer at ${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'malformed'}; pass the object migrateBegin returned`,
        { field: issue?.path.join('.') ?? '' },
      );
    }
    const cookie = parsed.data.cookie;
    const definition = resolveDomainXml(cookie.inactiveXml);
    const live = resolveDomainXml(parsed.data.xml);
    if (definition.uuid !== cookie.uuid || live.uuid !== cookie.uuid)
      throw new VirtError(ErrorCode.XML_ERROR, 'the migration offer names two different domains', {
        field: 'cookie.uuid',
      });
    const prepared = await this.driver.migratePrepare({ definition, live, cookie }, options);
    return new IncomingMigration(this.driver, prepared);
  }

  /** Calls `listener` for every life-cycle event of every domain of this connection. */
  on(event: 'domain-event', listener: (event: DomainEvent) => void): this {
    if (event !== 'domain-event')
      throw new VirtError(ErrorCode.OPERATION_INVALID, `unknown event '${event}'`);
    if (!this.#listeners.has(listener)) this.#listeners.set(listener, this.driver.subscribe(listener));
    return this;
  }

  /** Removes a listener added with {@link Connection.on}. */
  off(event: 'domain-event', listener: (event: DomainEvent) => void): this {
    if (event === 'domain-event') {
      this.#listeners.get(listener)?.();
      this.#listeners.delete(listener);
    }
    return this;
  }

  /**
   * The life-cycle events as an async iterable, buffered from the moment of the call, ending when
   * `signal` aborts or the connection closes.
   */
  async *events(options: { signal?: AbortSignal } = {}): AsyncGenerator<DomainEvent, void, undefined> {
    const queue: DomainEvent[] = [];
    let wake: (() => void) | undefined;
    const unsubscribe = this.driver.subscribe((e) => {
      queue.push(e);
      wake?.();
    });
    const onAbort = () => wake?.();
    options.signal?.addEventListener('abort', onAbort);
    try {
      while (!options.signal?.aborted && !this.#closed) {
        const next = queue.shift();
        if (next) {
          yield next;
          continue;
        }
        await new Promise<void>((resolve) => {
          wake = resolve;
          this.#wakers.add(resolve);
        });
        if (wake) this.#wakers.delete(wake);
        wake = undefined;
      }
    } finally {
      unsubscribe();
      options.signal?.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Runs `fn` first when the connection closes (the control socket stops serving before the
   * driver lets go of the root).
   *
   * @internal
   */
  beforeClose(fn: () => void): void {
    this.#beforeClose.push(fn);
  }

  /** Releases the driver (and the root's lock). Running domains keep running. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const fn of this.#beforeClose.splice(0)) fn();
    for (const off of this.#listeners.values()) off();
    this.#listeners.clear();
    for (const wake of this.#wakers) wake();
    await this.driver.close();
  }

  /** Closes the connection; lets callers write `await using conn = await connect(…)`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /**
   * The host's and the emulators' capabilities: libvirt's capabilities XML (`virsh capabilities`)
   * and the same facts as a typed object. Each emulator is probed once (QMP on `-machine none`) and
   * the result cached under the root until the binary changes.
   *
   * @throws {@link VirtError} `NO_SUPPORT` when the driver has no capabilities (the test driver) or
   *   the emulator is missing, `OPERATION_FAILED` when probing it fails
   */
  async getCapabilities(): Promise<Capabilities> {
    this.#checkOpen();
    if (!this.driver.getCapabilities) throw noCapabilities(this.uri);
    return this.driver.getCapabilities();
  }

  /**
   * What virtkit supports with one emulator, architecture, machine type and domain type: libvirt's
   * domain capabilities XML (`virsh domcapabilities`), derived from the same tables the definition
   * parser uses, so it never offers what a definition may not use.
   *
   * @throws {@link VirtError} `CONFIG_UNSUPPORTED` (`details.field`) for malformed options, and for an
   *   architecture, machine type or domain type the emulator or host does not provide,
   *   `NO_SUPPORT` as {@link Connection.getCapabilities}
   */
  async getDomainCapabilities(options: DomainCapabilitiesOptions = {}): Promise<DomainCapabilities> {
    this.#checkOpen();
    const parsed = domainCapabilitiesOptions.safeParse(options);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new VirtError(
        ErrorCode.CONFIG_UNSUPPORTED,
        `invalid getDomainCapabilities option ${issue?.path.join('.') || ''}: ${issue?.message ?? 'malformed'}`,
        { field: issue?.path.join('.') ?? '' },
      );
    }
    if (!this.driver.getDomainCapabilities) throw noCapabilities(this.uri);
    return this.driver.getDomainCapabilities(parsed.data);
  }

  #checkOpen(): void {
    if (this.#closed)
      throw new VirtError(ErrorCode.CONNECTION_CLOSED, 'the connection is closed; open a new one');
  }
}

const offerSchema = z.strictObject({
  xml: z.string(),
  cookie: z.strictObject({
    version: z.literal(1),
    uuid: z.string(),
    name: z.string(),
    inactiveXml: z.string(),
    running: z.boolean(),
    taints: z.array(z.string()),
  }),
});

const domainCapabilitiesOptions = z.strictObject({
  emulator: z.string().startsWith('/', 'an absolute path').optional(),
  arch: z.string().min(1).optional(),
  machine: z.string().min(1).optional(),
  virttype: z.enum(['qemu', 'kvm']).optional(),
});

function noCapabilities(uri: string): VirtError {
  return new VirtError(
    ErrorCode.NO_SUPPORT,
    `the driver of '${uri}' reports no capabilities; use qemu:///embed`,
  );
}

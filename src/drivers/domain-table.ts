import { ErrorCode, VirtError } from '../errors.js';
import type { DomainDefinition } from '../stable/definition/schema.js';
import type { DomainEvent } from '../stable/events.js';
import { publishDomainEvent } from '../stable/tracing.js';

/**
 * The domains of one driver, by uuid, with the lookup and naming rules every driver shares: a
 * name or a uuid finds a domain, and a name and a uuid may each belong to one domain only.
 */
export class DomainTable<D extends { def: DomainDefinition }> {
  readonly #byUuid = new Map<string, D>();

  /** The domain named `nameOrUuid` (uuid compared case-insensitively), if any. */
  find(nameOrUuid: string): D | undefined {
    return this.#byUuid.get(nameOrUuid.toLowerCase()) ?? this.values().find((d) => d.def.name === nameOrUuid);
  }

  /** The domain with `uuid`, or NO_DOMAIN. */
  get(uuid: string): D {
    const dom = this.#byUuid.get(uuid);
    if (!dom) throw new VirtError(ErrorCode.NO_DOMAIN, `domain ${uuid} is no longer defined`);
    return dom;
  }

  values(): D[] {
    return [...this.#byUuid.values()];
  }

  set(dom: D): void {
    this.#byUuid.set(dom.def.uuid, dom);
  }

  delete(uuid: string): void {
    this.#byUuid.delete(uuid);
  }

  clear(): void {
    this.#byUuid.clear();
  }

  /**
   * The domain a definition updates (same name and uuid), undefined for a new one, or
   * DOMAIN_EXISTS when its name or uuid already belongs to another domain.
   */
  existingFor(def: DomainDefinition): D | undefined {
    const byName = this.values().find((d) => d.def.name === def.name);
    const byUuid = this.#byUuid.get(def.uuid);
    if (byName && byName.def.uuid !== def.uuid) {
      throw new VirtError(
        ErrorCode.DOMAIN_EXISTS,
        `domain '${def.name}' already exists with uuid ${byName.def.uuid}`,
        {
          domain: { name: def.name, uuid: byName.def.uuid },
        },
      );
    }
    if (byUuid && byUuid.def.name !== def.name) {
      throw new VirtError(
        ErrorCode.DOMAIN_EXISTS,
        `uuid ${def.uuid} already belongs to domain '${byUuid.def.name}'`,
        {
          domain: { name: byUuid.def.name, uuid: def.uuid },
        },
      );
    }
    return byUuid;
  }
}

/**
 * Calls every listener with `event`. A listener that throws must not stop the others nor the
 * driver: its error is rethrown on a microtask, where it surfaces as an uncaught exception.
 */
export function deliverEvent(listeners: Iterable<(event: DomainEvent) => void>, event: DomainEvent): void {
  publishDomainEvent(event);
  for (const listener of listeners) {
    try {
      listener(event);
    } catch (err) {
      queueMicrotask(() => {
        throw err;
      });
    }
  }
}

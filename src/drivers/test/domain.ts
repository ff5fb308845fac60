import { ErrorCode, VirtError } from '../../errors.js';
import type { DomainDefinition } from '../../stable/definition/schema.js';
import type { DomainState } from '../../stable/events.js';
import { JobSlot } from '../jobs.js';

/** What exists only while a test domain "runs": no process, just its id and live definition. */
export interface TestRuntime {
  /** The driver's id of the running domain (1, 2, … per driver). */
  readonly id: number;
  /** The definition as it was when the domain started, plus its device changes; a redefinition does not change it. */
  live: DomainDefinition;
  /** Settles when the domain stops (or the driver closes), so a waiting shutdown learns of it. */
  readonly stopped: Promise<'stopped' | 'closed'>;
  /** Settles {@link TestRuntime.stopped}. */
  readonly markStopped: (how: 'stopped' | 'closed') => void;
}

/** One domain of the test driver: definition, state and, while active, its runtime. */
export class TestDomain {
  def: DomainDefinition;
  state: DomainState = 'shutoff';
  reason = 'unknown';
  run: TestRuntime | undefined;
  /** The modifying job under way and those waiting for it, as in the embedded driver. */
  readonly jobs = new JobSlot();

  constructor(def: DomainDefinition) {
    this.def = def;
  }

  get active(): boolean {
    return this.run !== undefined;
  }

  /** The identity given in errors and events. */
  get ident(): { name: string; uuid: string } {
    return { name: this.def.name, uuid: this.def.uuid };
  }

  /** The runtime, or OPERATION_INVALID naming what the caller must do (as the embedded driver). */
  requireActive(): TestRuntime {
    if (!this.run) {
      throw new VirtError(
        ErrorCode.OPERATION_INVALID,
        `domain '${this.def.name}' is not running; start it first`,
        { domain: this.ident },
      );
    }
    return this.run;
  }
}

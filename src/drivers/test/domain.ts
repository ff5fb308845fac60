import { ErrorCode, VirtError } from '../../errors.js';
import type { DomainDefinition } from '../../stable/definition/schema.js';
import { CoreDomain } from '../domain-core.js';

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
export class TestDomain extends CoreDomain {
  run: TestRuntime | undefined;

  get active(): boolean {
    return this.run !== undefined;
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

import { ErrorCode, VirtError } from '../../errors.js';

/**
 * A refusal by the policy: `ACCESS_DENIED` with `details.rule` naming the policy rule.
 *
 * @param rule - e.g. `memlock.maxBytes`
 * @param message - what was asked and what the policy allows
 * @param details - more structured fields
 */
export function denied(rule: string, message: string, details: Record<string, unknown> = {}): VirtError {
  return new VirtError(ErrorCode.ACCESS_DENIED, `denied by policy rule ${rule}: ${message}`, {
    ...details,
    rule,
  });
}

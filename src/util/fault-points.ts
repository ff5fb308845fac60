/**
 * Named points in the driver's multi-step operations (start, shutdown, destroy, define, undefine,
 * atomic writes) where the fault-injection tests kill the managing process, to prove that a
 * successor finds no orphan and no leftover, whatever step the kill interrupted.
 *
 * In production this is a no-op: the only way to install a hook is {@link installFaultHook},
 * which neither package entry point exports; the test fixture that wraps the driver imports it
 * from the source tree.
 *
 * @internal
 * @packageDocumentation
 */

let hook: ((point: string) => void) | undefined;

/**
 * Marks that the operation under way has reached `point`.
 *
 * @param point - a stable name such as `start:spawned` or `atomic:domains`
 */
export function faultPoint(point: string): void {
  hook?.(point);
}

/**
 * Installs the hook called at every {@link faultPoint} (tests only).
 *
 * @param fn - called synchronously with the point's name; may kill the process
 */
export function installFaultHook(fn: ((point: string) => void) | undefined): void {
  hook = fn;
}

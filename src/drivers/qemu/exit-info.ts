// Apart from process.ts, so that the domain object can name it without importing the launcher
// (which imports the emulator's kill logic, which names the domain object).

/** How a QEMU process ended. */
export interface ExitInfo {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

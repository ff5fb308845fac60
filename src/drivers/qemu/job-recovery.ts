import type { JobRecord } from './status.js';

/** What a new driver does with a domain whose status file records an unfinished job. */
export type Settlement =
  | { readonly action: 'kill'; readonly why: string }
  | {
      readonly action: 'adopt';
      readonly why: string;
      readonly keepPaused?: 'migration';
      /** A reboot was under way: finish it (reset a guest that powered off) and restore the power-off action. */
      readonly finishReboot?: true;
    };
// 'kill' has no job type today: a start that never recorded the domain running is killed before
// these rules apply; the action stays for job types whose half-done state is not a guest.

/**
 * The documented rule (docs/jobs.md) for a job a killed driver left unfinished, by job type. The
 * status file's `phase` (`starting` until the start sequence recorded the domain as running) is
 * settled before this: a domain that never finished starting is always killed.
 */
export function settleInterruptedJob(job: JobRecord): Settlement {
  switch (job.operation) {
    case 'migration-in':
      // The guest may already run on the source again, or the stream may still come: a waiting
      // destination is never resumed here; the application finishes it or destroys it.
      return {
        action: 'adopt',
        why: `an incoming migration was interrupted in phase ${job.phase}; the domain stays paused (migration) for the application to finish or destroy`,
        keepPaused: 'migration',
      };
    case 'migration-out':
      // The source is never resumed on its own once the stream may have completed: the
      // application decides (confirm or cancel), as DESIGN's migration section requires.
      return {
        action: 'adopt',
        why: `an outgoing migration was interrupted in phase ${job.phase}; the domain stays as QEMU reports it, paused ones for the application to confirm`,
        keepPaused: 'migration',
      };
    case 'reboot':
      // QEMU pauses instead of exiting while a reboot is under way: a guest that powered off
      // meanwhile waits for the reset no driver sent.
      return {
        action: 'adopt',
        why: `a reboot was interrupted in phase ${job.phase}; a guest that powered off is reset, and a guest power-off ends QEMU again`,
        finishReboot: true,
      };
    case 'start':
      return {
        action: 'adopt',
        why: `its start had recorded it running (phase ${job.phase}); adopted as QEMU reports it`,
      };
    default:
      // suspend, resume, shutdown, device changes: QEMU holds the truth; its state is read back.
      return {
        action: 'adopt',
        why: `${job.operation} was interrupted in phase ${job.phase}; adopted as QEMU reports it`,
      };
  }
}

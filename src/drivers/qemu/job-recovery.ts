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
    case 'migration-out':
      // Settled once QEMU answers, by the rule of the job's phase (migration/recover.ts).
      return { action: 'adopt', why: `a ${job.operation} job was interrupted in phase ${job.phase}` };
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

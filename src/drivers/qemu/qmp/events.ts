import { z } from 'zod';

/**
 * The QMP events virtkit reacts to, with their payload schemas (QEMU 7.2, qapi/*.json). A payload
 * comes from a process that may run guest code, so it is checked before anything reads it.
 */

const Empty = z.looseObject({});
const ShutdownCause = z.string();

/**
 * Every QMP event virtkit awaits or follows, with the schema of its `data`.
 *
 * @internal
 */
export const QMP_EVENTS = {
  STOP: Empty,
  RESUME: Empty,
  SHUTDOWN: z.looseObject({ guest: z.boolean(), reason: ShutdownCause }),
  RESET: z.looseObject({ guest: z.boolean(), reason: ShutdownCause }),
  POWERDOWN: Empty,
  SUSPEND: Empty,
  WAKEUP: Empty,
  DEVICE_DELETED: z.looseObject({ device: z.string().optional(), path: z.string() }),
  MIGRATION: z.looseObject({ status: z.string() }),
  BALLOON_CHANGE: z.looseObject({ actual: z.number().int() }),
  GUEST_PANICKED: z.looseObject({ action: z.string() }),
  WATCHDOG: z.looseObject({ action: z.string() }),
  BLOCK_IO_ERROR: z.looseObject({
    device: z.string(),
    'node-name': z.string().optional(),
    operation: z.string(),
    action: z.string(),
    reason: z.string(),
  }),
} as const;

/**
 * The name of an event in {@link QMP_EVENTS}.
 *
 * @internal
 */
export type QmpEventName = keyof typeof QMP_EVENTS;

/**
 * The validated payload of an event.
 *
 * @internal
 */
export type QmpEventData<E extends QmpEventName> = z.output<(typeof QMP_EVENTS)[E]>;

/** True when `name` is an event of {@link QMP_EVENTS}. @internal */
export function isKnownEvent(name: string): name is QmpEventName {
  return Object.hasOwn(QMP_EVENTS, name);
}

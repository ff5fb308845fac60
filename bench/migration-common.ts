/*
 * What both migration benchmarks set up: two embedded places under one temporary directory and,
 * in the first, the running 256 MiB TCG guest (the test kernel counting on its console) they
 * migrate back and forth; the clean-up of all of it; and how they listen to virtkit's QMP traffic.
 */

import diagnosticsChannel, { tracingChannel } from 'node:diagnostics_channel';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  type Connection,
  connect,
  type Domain,
  diagnosticsChannels,
  type QmpCommandMessage,
  type QmpEventMessage,
} from '../src/index.js';
import { ensureGuestImage } from '../test/fixtures/guest-image.js';

/** The guest's memory. */
export const MEMORY_MIB = 256;
/** The test kernel and initramfs the guest boots. */
export const image = ensureGuestImage();
/** The guest's kernel command line: it counts on its console. */
export const cmdline = 'console=ttyS0 panic=-1 quiet virtkit.mode=count';

/** Connections to the two places, `A` and `B` under `dir`. */
export async function openPlaces(dir: string): Promise<[Connection, Connection]> {
  const a = await connect(`qemu:///embed?root=${join(dir, 'A')}`);
  const b = await connect(`qemu:///embed?root=${join(dir, 'B')}`);
  return [a, b];
}

/** Defines the guest, `bench-mig`, on `conn` and starts it. */
export async function startGuest(conn: Connection): Promise<Domain> {
  const dom = await conn.defineDomain({
    name: 'bench-mig',
    type: 'qemu',
    memoryKiB: MEMORY_MIB * 1024,
    vcpu: { count: 1 },
    os: { kernel: image.kernel, initrd: image.initrd, cmdline },
    serials: [{ type: 'file' }],
  });
  await dom.start();
  return dom;
}

/** What a benchmark hears of virtkit's QMP traffic, from its diagnostics channels. */
export interface QmpWatch {
  /** A command, as it is sent. */
  readonly sent?: (m: QmpCommandMessage) => void;
  /** A command, once its reply has arrived. */
  readonly answered?: (m: QmpCommandMessage) => void;
  /** An event QEMU sent. */
  readonly event?: (m: QmpEventMessage) => void;
}

/** Subscribes `watch` to virtkit's QMP command and event channels, for the rest of the process. */
export function watchQmp(watch: QmpWatch): void {
  tracingChannel<string, QmpCommandMessage>(diagnosticsChannels.qmpCommand).subscribe({
    start: (m) => watch.sent?.(m),
    end: () => undefined,
    asyncStart: () => undefined,
    asyncEnd: (m) => watch.answered?.(m),
    error: () => undefined,
  });
  diagnosticsChannel.subscribe(diagnosticsChannels.qmpEvent, (m) => watch.event?.(m as QmpEventMessage));
}

/** Destroys what runs in the places, closes them and removes `dir`. */
export async function closePlaces(conns: readonly Connection[], dir: string): Promise<void> {
  for (const c of conns) {
    for (const d of await c.listDomains({ state: 'active' })) await d.destroy({ graceMs: 1000 });
    await c.close();
  }
  rmSync(dir, { recursive: true, force: true });
}

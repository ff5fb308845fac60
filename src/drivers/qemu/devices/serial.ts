import type { DomainDefinition } from '../../../stable/definition/schema.js';
import { channelSocketPath } from './channel.js';
import type { QapiObject } from './qapi.js';

/** The alias of serial port `port`, as libvirt names it. */
export function serialAlias(port: number): string {
  return `serial${port}`;
}

/** An ISA serial port on its chardev (`-device` arguments). */
export function serialDevice(port: number): QapiObject {
  return { driver: 'isa-serial', chardev: `char${serialAlias(port)}`, id: serialAlias(port) };
}

/**
 * The sockets QEMU listened on for serial and parallel ports and channels, to remove once it is gone (libvirt's
 * qemuProcessCleanupChardevDevice): QEMU leaves them behind. A socket QEMU connected to is not
 * among them: it belongs to whoever listens there. Channels always listen (`server=on`).
 */
export function listeningSockets(def: DomainDefinition, runDir: string): string[] {
  return [
    ...[...def.serials, ...(def.parallels ?? [])].flatMap((s) =>
      s.type === 'unix' && s.mode === 'bind' ? [s.path] : [],
    ),
    ...(def.channels ?? []).map((c) => channelSocketPath(def, c, runDir)),
  ];
}

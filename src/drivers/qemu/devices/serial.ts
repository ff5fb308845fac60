import type { QapiObject } from './qapi.js';

/** The alias of serial port `port`, as libvirt names it. */
export function serialAlias(port: number): string {
  return `serial${port}`;
}

/** An ISA serial port on its chardev (`-device` arguments). */
export function serialDevice(port: number): QapiObject {
  return { driver: 'isa-serial', chardev: `char${serialAlias(port)}`, id: serialAlias(port) };
}

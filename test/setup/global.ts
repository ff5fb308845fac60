import { accessSync, constants } from 'node:fs';
import { ensureGuestImage } from '../fixtures/guest-image.js';

/**
 * Runs once before the suite: the tests drive a real QEMU, so a machine without one fails here,
 * loudly, instead of skipping. The guest initramfs is built once and cached.
 */
export default function setup(): void {
  try {
    accessSync('/usr/bin/qemu-system-x86_64', constants.X_OK);
  } catch {
    throw new Error(
      'qemu-system-x86_64 is not installed: the tests drive a real QEMU. Run the README test command (npm test), which installs qemu-system-x86.',
    );
  }
  ensureGuestImage();
}

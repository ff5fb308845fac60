import { execFileSync } from 'node:child_process';
import { accessSync, constants, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
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
  ensureTestUser();
  ensureHugepages();
}

/** hugetlbfs with a few 2 MiB pages reserved, for the hugepage-backed domains of the XML corpus. */
function ensureHugepages(): void {
  const pages = '/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages';
  if (Number(readFileSync(pages, 'utf8')) < 128) writeFileSync(pages, '128');
  if (!readFileSync('/proc/mounts', 'utf8').includes(' hugetlbfs ')) {
    mkdirSync('/dev/hugepages', { recursive: true });
    execFileSync('mount', ['-t', 'hugetlbfs', 'hugetlbfs', '/dev/hugepages']);
  }
}

/** The unprivileged user the end-to-end tests run the driver as. */
export const TEST_USER = 'virtkit-test';

function ensureTestUser(): void {
  try {
    execFileSync('id', ['-u', TEST_USER], { stdio: 'ignore' });
  } catch {
    execFileSync('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', TEST_USER]);
  }
}

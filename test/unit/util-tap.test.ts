import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readdirSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCode, VirtError } from '../../src/errors.js';
import { closeFd } from '../../src/util/libc.js';
import { isTapFd, openTap, tapNameOf } from '../../src/util/tap.js';

const openFds: number[] = [];
const persistent: string[] = [];

function track(fds: number[]): number[] {
  openFds.push(...fds);
  return fds;
}

function closeTracked(fd: number): void {
  const i = openFds.indexOf(fd);
  if (i >= 0) openFds.splice(i, 1);
  closeFd(fd);
}

function linkExists(ifname: string): boolean {
  try {
    execFileSync('ip', ['link', 'show', 'dev', ifname], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}

function linkDetails(ifname: string): string {
  return execFileSync('ip', ['-d', 'link', 'show', 'dev', ifname], { encoding: 'utf8' });
}

async function waitGone(ifname: string): Promise<boolean> {
  for (let i = 0; i < 50; i++) {
    if (!linkExists(ifname)) return true;
    await sleep(20);
  }
  return false;
}

afterEach(() => {
  for (const fd of openFds.splice(0)) {
    try {
      closeFd(fd);
    } catch {
      // already closed
    }
  }
  for (const ifname of persistent.splice(0)) {
    try {
      execFileSync('ip', ['tuntap', 'del', 'dev', ifname, 'mode', 'tap'], { stdio: 'pipe' });
    } catch {
      // already gone
    }
  }
});

function catchErr(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected a throw');
}

describe('openTap', () => {
  it('creates a TAP from the vk%d template that disappears with its fd', async () => {
    const tap = openTap(undefined, { queues: 1, vnetHdr: true });
    track(tap.fds);
    expect(tap.ifname).toMatch(/^vk\d+$/);
    expect(tap.fds).toHaveLength(1);
    const fd = tap.fds[0]!;
    expect(linkExists(tap.ifname)).toBe(true);
    const details = linkDetails(tap.ifname);
    expect(details).toMatch(/tun type tap pi off vnet_hdr on persist off/);
    expect(isTapFd(fd, tap.ifname)).toBe(true);
    expect(isTapFd(fd, 'other')).toBe(false);
    expect(tapNameOf(fd)).toBe(tap.ifname);

    closeTracked(fd);
    expect(await waitGone(tap.ifname)).toBe(true);
    expect(isTapFd(fd, tap.ifname)).toBe(false);
  });

  it('creates a TAP without vnet_hdr', () => {
    const tap = openTap('vktest-novnet', { queues: 1, vnetHdr: false });
    track(tap.fds);
    expect(tap.ifname).toBe('vktest-novnet');
    expect(linkDetails(tap.ifname)).toMatch(/vnet_hdr off/);
  });

  it('opens one fd per queue of a multi-queue TAP', async () => {
    const tap = openTap('vktest-mq', { queues: 2, vnetHdr: true });
    track(tap.fds);
    expect(tap.ifname).toBe('vktest-mq');
    expect(tap.fds).toHaveLength(2);
    expect(new Set(tap.fds).size).toBe(2);
    for (const fd of tap.fds) expect(isTapFd(fd, 'vktest-mq')).toBe(true);
    expect(linkDetails('vktest-mq')).toMatch(/multi_queue/);
    // The interface lives as long as any queue is open.
    closeTracked(tap.fds[0]!);
    expect(linkExists('vktest-mq')).toBe(true);
    closeTracked(tap.fds[1]!);
    expect(await waitGone('vktest-mq')).toBe(true);
  });

  it('attaches to a pre-created persistent TAP by name', () => {
    execFileSync('ip', ['tuntap', 'add', 'dev', 'vktest-pre', 'mode', 'tap', 'vnet_hdr'], { stdio: 'pipe' });
    persistent.push('vktest-pre');
    const tap = openTap('vktest-pre', { queues: 1, vnetHdr: true });
    track(tap.fds);
    expect(tap.ifname).toBe('vktest-pre');
    expect(isTapFd(tap.fds[0]!, 'vktest-pre')).toBe(true);
    closeTracked(tap.fds[0]!);
    // Persistent: it outlives the fd.
    expect(linkExists('vktest-pre')).toBe(true);
  });

  it('with exclusive, creates a new device and refuses to attach to an existing one', () => {
    execFileSync('ip', ['tuntap', 'add', 'dev', 'vktest-excl', 'mode', 'tap', 'vnet_hdr'], { stdio: 'pipe' });
    persistent.push('vktest-excl');
    const before = openFdCount();
    expect(() => openTap('vktest-excl', { queues: 1, vnetHdr: true, exclusive: true })).toThrow(
      expect.objectContaining({ name: 'VirtError', details: expect.objectContaining({ errno: 'EBUSY' }) }),
    );
    expect(openFdCount()).toBe(before);
    const fresh = openTap('vktest-new%d', { queues: 2, vnetHdr: true, exclusive: true });
    track(fresh.fds);
    expect(fresh.fds.map((fd) => isTapFd(fd, fresh.ifname))).toEqual([true, true]);
  });

  it('fails with SYSTEM_ERROR and closes its fds when the kernel refuses a queue', () => {
    // A persistent TAP created without multi_queue cannot take a second queue.
    execFileSync('ip', ['tuntap', 'add', 'dev', 'vktest-sq', 'mode', 'tap'], { stdio: 'pipe' });
    persistent.push('vktest-sq');
    const before = openFdCount();
    const err = catchErr(() => openTap('vktest-sq', { queues: 2, vnetHdr: false }));
    expect(VirtError.is(err)).toBe(true);
    expect((err as VirtError).code).toBe(ErrorCode.SYSTEM_ERROR);
    expect((err as VirtError).details.errno).toBe('EINVAL');
    expect(openFdCount()).toBe(before);
  });

  it('rejects invalid names and queue counts before any syscall', () => {
    const before = openFdCount();
    for (const name of ['a'.repeat(16), 'a'.repeat(17), '', '.', '..', 'a/b', 'a b', 'a:b']) {
      const err = catchErr(() => openTap(name, { queues: 1, vnetHdr: true }));
      expect(VirtError.is(err)).toBe(true);
      expect((err as VirtError).code).toBe(ErrorCode.XML_ERROR);
    }
    for (const queues of [0, -1, 1.5, 257]) {
      const err = catchErr(() => openTap('vktest-q', { queues, vnetHdr: true }));
      expect((err as VirtError).code).toBe(ErrorCode.XML_ERROR);
    }
    expect(openFdCount()).toBe(before);
    expect(linkExists('vktest-q')).toBe(false);
  });
});

describe('tapNameOf / isTapFd', () => {
  it('answers undefined / false for fds that are not TAP fds', () => {
    const fd = openSync('/etc/hostname', 'r');
    try {
      expect(tapNameOf(fd)).toBeUndefined();
      expect(isTapFd(fd, 'vk0')).toBe(false);
    } finally {
      closeSync(fd);
    }
  });

  it('treats an unattached /dev/net/tun fd as not a TAP', () => {
    const fd = openSync('/dev/net/tun', 'r+');
    try {
      expect(tapNameOf(fd)).toBeUndefined();
      expect(isTapFd(fd, 'vk0')).toBe(false);
    } finally {
      closeSync(fd);
    }
  });

  it('throws SYSTEM_ERROR for a closed fd, which isTapFd reports as false', () => {
    const fd = openSync('/etc/hostname', 'r');
    closeSync(fd);
    const err = catchErr(() => tapNameOf(fd));
    expect((err as VirtError).code).toBe(ErrorCode.SYSTEM_ERROR);
    expect((err as VirtError).details.errno).toBe('EBADF');
    expect(isTapFd(fd, 'vk0')).toBe(false);
  });
});

function openFdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

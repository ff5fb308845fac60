/**
 * TAP network devices through `/dev/net/tun`: create (or attach to) a TAP interface and hand back
 * the raw fds QEMU's `-netdev tap,fds=…` takes, and recognise such fds later.
 *
 * A TAP that was not made persistent (`ip tuntap add`, `TUNSETPERSIST`) disappears when its last
 * fd is closed. Creating one needs `CAP_NET_ADMIN`; attaching to a persistent one needs either
 * `CAP_NET_ADMIN` or being its owner (`ip tuntap add … user <uid>`).
 *
 * @internal
 * @packageDocumentation
 */

import { readFileSync, readlinkSync } from 'node:fs';
import { endianness } from 'node:os';
import koffi from 'koffi';
import { ErrorCode, errnoOf, VirtError } from '../errors.js';
import { closeFd, ioctlBuffer, loadLibc, O, openRaw, SyscallError } from './libc.js';

// ---------------------------------------------------------------------------------------------------------
// Kernel ABI (include/uapi/linux/if_tun.h, if.h) — x86_64/arm64 ioctl encoding
// ---------------------------------------------------------------------------------------------------------

const TUN_DEVICE = '/dev/net/tun';
/** `_IOW('T', 202, int)` */
const TUNSETIFF = 0x400454ca;
/** `_IOR('T', 210, unsigned int)` */
const TUNGETIFF = 0x800454d2;
const IFF_TAP = 0x0002;
const IFF_NO_PI = 0x1000;
const IFF_VNET_HDR = 0x4000;
const IFF_MULTI_QUEUE = 0x0100;
const IFF_TUN_EXCL = 0x8000;
const IFF_PERSIST = 0x0800;
/** `_IOW('T', 203, int)`, `_IOW('T', 204, int)`, `_IOW('T', 206, int)`: the argument is the value. */
const TUNSETPERSIST = 0x400454cb;
const TUNSETOWNER = 0x400454cc;
const TUNSETGROUP = 0x400454ce;
/** `IFNAMSIZ`: 15 bytes and the terminating NUL. */
const IFNAMSIZ = 16;
/** `sizeof(struct ifreq)`: the name and a 24-byte union (`ifr_flags` is a short at offset 16). */
const IFREQ_SIZE = 40;
/** `MAX_TAP_QUEUES` in drivers/net/tun.c. */
const MAX_QUEUES = 256;
/** The name template used when the caller does not choose one; the kernel replaces `%d`. */
const DEFAULT_TEMPLATE = 'vk%d';
/** errnos TUNGETIFF leaves for an fd that is not an attached TUN/TAP fd. */
const NOT_TAP = new Set(['EBADFD', 'EINVAL', 'ENOTTY']);

// ---------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------

/**
 * Checks an interface name the way the kernel's `dev_valid_name()` does: 1..15 bytes, not `.` or
 * `..`, no `/`, `:` or whitespace. A `%d` template is allowed (the kernel picks the number).
 */
function checkIfname(ifname: string): void {
  const bytes = Buffer.byteLength(ifname, 'utf8');
  if (
    bytes === 0 ||
    bytes >= IFNAMSIZ ||
    ifname === '.' ||
    ifname === '..' ||
    // biome-ignore lint/suspicious/noControlCharactersInRegex: NUL and control characters are what is rejected
    /[\s/:\u0000-\u001f\u007f]/.test(ifname)
  ) {
    throw new VirtError(
      ErrorCode.XML_ERROR,
      `invalid network interface name ${JSON.stringify(ifname)}: it must be 1 to ${IFNAMSIZ - 1} bytes, not '.' or '..', without '/', ':' or whitespace`,
      { path: 'ifname' },
    );
  }
}

/** A zeroed `struct ifreq` with `ifr_name` and `ifr_flags` set. */
function ifreq(ifname: string, flags: number): Buffer {
  const buf = Buffer.alloc(IFREQ_SIZE);
  buf.write(ifname, 0, IFNAMSIZ - 1, 'utf8');
  // ifr_flags is a host-endian short.
  if (endianness() === 'LE') buf.writeUInt16LE(flags & 0xffff, IFNAMSIZ);
  else buf.writeUInt16BE(flags & 0xffff, IFNAMSIZ);
  return buf;
}

/** `ifr_name` of a `struct ifreq`: the bytes up to the first NUL. */
function ifreqName(buf: Buffer): string {
  const end = buf.indexOf(0);
  return buf.toString('utf8', 0, end < 0 || end > IFNAMSIZ ? IFNAMSIZ : end);
}

function tapError(err: unknown, ifname: string, what: string): VirtError {
  const errno = errnoOf(err) ?? 'EUNKNOWN';
  const detail = err instanceof Error ? err.message : String(err);
  if (errno === 'EPERM' || errno === 'EACCES') {
    return new VirtError(
      ErrorCode.ACCESS_DENIED,
      `cannot ${what} TAP device ${JSON.stringify(ifname)}: ${detail}. Creating a TAP needs CAP_NET_ADMIN; ` +
        'without it, pre-create a persistent TAP owned by this uid (ip tuntap add dev <name> mode tap ' +
        'user <uid> [multi_queue] [vnet_hdr]) and name it, or delegate the operation to a privileged handler',
      { capability: 'CAP_NET_ADMIN', errno, ifname },
      { cause: err },
    );
  }
  return new VirtError(
    ErrorCode.SYSTEM_ERROR,
    `cannot ${what} TAP device ${JSON.stringify(ifname)}: ${detail}`,
    {
      errno,
      ifname,
    },
    { cause: err },
  );
}

// ---------------------------------------------------------------------------------------------------------
// API
// ---------------------------------------------------------------------------------------------------------

/**
 * Creates a TAP interface, or attaches to an existing (persistent) one, and returns one fd per
 * queue: `open("/dev/net/tun", O_RDWR | O_CLOEXEC)` and `ioctl(TUNSETIFF)` with
 * `IFF_TAP | IFF_NO_PI` (plus `IFF_VNET_HDR` when `vnetHdr`, `IFF_MULTI_QUEUE` when `queues > 1`).
 * The fds are close-on-exec; hand them to QEMU through `spawn`'s `stdio` and close them with
 * `closeFd`. A TAP created here is not persistent: it disappears when its last fd is closed.
 *
 * @param ifname - the interface name (≤ 15 bytes; may be a `%d` template), or undefined for the
 *   template `vk%d`
 * @param options - `queues`: 1..256 fds to open; `vnetHdr`: ask for the virtio-net header
 * @returns the name the kernel chose and the fds, in queue order
 * @throws {@link VirtError} `XML_ERROR` for a bad name or queue count (before any syscall),
 *   `ACCESS_DENIED` (`capability: 'CAP_NET_ADMIN'`) on `EPERM`, `SYSTEM_ERROR` otherwise (e.g.
 *   `EINVAL` when a persistent TAP was created without `multi_queue` and `queues > 1`, `EBUSY`
 *   when the name belongs to a non-TAP interface). Every fd opened so far is closed first.
 */
export function openTap(
  ifname: string | undefined,
  options: { queues: number; vnetHdr: boolean; exclusive?: boolean },
): { ifname: string; fds: number[] } {
  const { queues, vnetHdr, exclusive = false } = options;
  if (!Number.isInteger(queues) || queues < 1 || queues > MAX_QUEUES) {
    throw new VirtError(
      ErrorCode.XML_ERROR,
      `TAP queue count must be an integer in [1, ${MAX_QUEUES}], got ${queues}`,
      {
        path: 'queues',
      },
    );
  }
  let name = ifname ?? DEFAULT_TEMPLATE;
  checkIfname(name);
  const flags = IFF_TAP | IFF_NO_PI | (vnetHdr ? IFF_VNET_HDR : 0) | (queues > 1 ? IFF_MULTI_QUEUE : 0);
  const fds: number[] = [];
  try {
    for (let q = 0; q < queues; q++) {
      let fd: number;
      try {
        fd = openRaw(TUN_DEVICE, O.RDWR | O.CLOEXEC);
      } catch (err) {
        throw tapError(err, name, `open ${TUN_DEVICE} for`);
      }
      fds.push(fd);
      // After the first queue the kernel has resolved the template: attach the others by name.
      // `exclusive`: the first queue must create the device (IFF_TUN_EXCL), never attach to one.
      const req = ifreq(name, q === 0 && exclusive ? flags | IFF_TUN_EXCL : flags);
      try {
        ioctlBuffer(fd, TUNSETIFF, req);
      } catch (err) {
        throw tapError(err, name, q === 0 ? 'create or attach to' : `attach queue ${q} to`);
      }
      name = ifreqName(req);
    }
  } catch (err) {
    for (const fd of fds) {
      try {
        closeFd(fd);
      } catch {
        // Nothing more can be done; the original error matters.
      }
    }
    throw err;
  }
  return { ifname: name, fds };
}

/**
 * The interface a TUN/TAP fd is attached to: `ioctl(fd, TUNGETIFF)`.
 *
 * @param fd - an open fd
 * @returns the interface name, or undefined when the fd is not an attached TUN/TAP fd
 *   (`EBADFD`, `EINVAL`, `ENOTTY`)
 * @throws {@link VirtError} `SYSTEM_ERROR` on any other error (`EBADF` for a closed fd)
 */
export function tapNameOf(fd: number): string | undefined {
  const req = Buffer.alloc(IFREQ_SIZE);
  try {
    ioctlBuffer(fd, TUNGETIFF, req);
  } catch (err) {
    if (err instanceof SyscallError && NOT_TAP.has(err.code)) return undefined;
    throw new VirtError(
      ErrorCode.SYSTEM_ERROR,
      `cannot query fd ${fd} for its TAP device: ${err instanceof Error ? err.message : String(err)}`,
      { errno: errnoOf(err) },
      { cause: err },
    );
  }
  return ifreqName(req);
}

/**
 * Whether `fd` is a `/dev/net/tun` fd attached to the interface `ifname`: the fd's
 * `/proc/self/fd` link reads `/dev/net/tun` and `TUNGETIFF` names `ifname`.
 *
 * @param fd - a raw fd of this process
 * @param ifname - the expected interface name
 * @returns true when both hold; false for a closed fd or any other file
 */
export function isTapFd(fd: number, ifname: string): boolean {
  if (!Number.isInteger(fd) || fd < 0) return false;
  let target: string;
  try {
    target = readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return false;
  }
  if (target !== TUN_DEVICE) return false;
  try {
    return tapNameOf(fd) === ifname;
  } catch {
    return false;
  }
}

/**
 * A TUN/TAP device as sysfs shows it.
 *
 * @internal
 */
export interface TapState {
  /** The interface index: a new device of the same name gets another one. */
  readonly ifindex: number;
  /** `tun_flags` (IFF_TAP, IFF_PERSIST, IFF_VNET_HDR, IFF_MULTI_QUEUE…). */
  readonly flags: number;
  /** The owner uid, -1 for none. */
  readonly owner: number;
  /** The group, -1 for none. */
  readonly group: number;
  /** Whether it outlives its last descriptor. */
  readonly persistent: boolean;
}

function sysfs(ifname: string, attr: string): string | undefined {
  try {
    return readFileSync(`/sys/class/net/${ifname}/${attr}`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/**
 * The state of a TUN/TAP interface from `/sys/class/net/<ifname>`.
 *
 * @param ifname - the interface name
 * @returns undefined when there is no such interface or it is not a TUN/TAP device
 * @internal
 */
export function tapState(ifname: string): TapState | undefined {
  checkIfname(ifname);
  const flags = sysfs(ifname, 'tun_flags');
  const ifindex = sysfs(ifname, 'ifindex');
  if (flags === undefined || ifindex === undefined) return undefined;
  const f = Number.parseInt(flags, 16);
  return {
    ifindex: Number(ifindex),
    flags: f,
    owner: Number(sysfs(ifname, 'owner') ?? -1),
    group: Number(sysfs(ifname, 'group') ?? -1),
    persistent: (f & IFF_PERSIST) !== 0,
  };
}

type ValueIoctl = (fd: number, request: number, type: string, value: number) => number;
let valueIoctl: ValueIoctl | undefined;

function ioctlValue(fd: number, request: number, value: number, what: string): void {
  // Variadic in C: the argument goes as a (type, value) pair.
  valueIoctl ??= loadLibc().func('ioctl', 'int', ['int', 'unsigned long', '...']) as unknown as ValueIoctl;
  if (valueIoctl(fd, request, 'unsigned long', value) !== 0) {
    throw new SyscallError('ioctl', koffi.errno(), `${fd}, ${what}`);
  }
}

/**
 * Takes a TAP back from whoever holds a descriptor of it: any holder may make a TAP persistent or
 * give it an owner (the kernel checks nothing for TUNSETPERSIST and TUNSETOWNER on an attached
 * descriptor). Attaches to it (needs `CAP_NET_ADMIN`) with the flags it already has, gives it to
 * root (owner and group 0, which an unprivileged user can no longer attach to) and clears
 * IFF_PERSIST, so that it disappears with its last descriptor — at once when none is left.
 *
 * @param ifname - the interface
 * @param expected - the state it must still be in (same device: same ifindex)
 * @returns false when the device is gone or is another device now
 * @throws {@link VirtError} `SYSTEM_ERROR` when attaching fails, e.g. `EBUSY` while a
 *   single-queue TAP is still attached elsewhere (try again once it is not)
 * @internal
 */
export function disownTap(ifname: string, expected: { ifindex: number }): boolean {
  const state = tapState(ifname);
  if (!state || state.ifindex !== expected.ifindex) return false;
  let fd: number;
  try {
    fd = openRaw(TUN_DEVICE, O.RDWR | O.CLOEXEC);
  } catch (err) {
    throw tapError(err, ifname, `open ${TUN_DEVICE} for`);
  }
  try {
    // The device's own features: attaching with others would change them under its user.
    try {
      ioctlBuffer(fd, TUNSETIFF, ifreq(ifname, state.flags & ~IFF_PERSIST));
    } catch (err) {
      throw tapError(err, ifname, 'attach to');
    }
    if (tapNameOf(fd) !== ifname || tapState(ifname)?.ifindex !== expected.ifindex) return false;
    try {
      if (state.owner !== -1) ioctlValue(fd, TUNSETOWNER, 0, 'TUNSETOWNER');
      if (state.group !== -1) ioctlValue(fd, TUNSETGROUP, 0, 'TUNSETGROUP');
      ioctlValue(fd, TUNSETPERSIST, 0, 'TUNSETPERSIST');
    } catch (err) {
      throw tapError(err, ifname, 'take back');
    }
    return true;
  } finally {
    closeFd(fd);
  }
}

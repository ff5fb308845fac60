import { accessSync, constants, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type Connection,
  connect,
  type DomainDefinitionInput,
  type DomainEvent,
} from '../../src/stable/index.js';
import { ensureGuestImage, GUEST_MARKER } from '../fixtures/guest-image.js';

export { GUEST_MARKER };

/** Whether this host can run `kvm` domains at all (some CI machines have no /dev/kvm). */
export function hostHasKvm(): boolean {
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * The document as this host can start it: without /dev/kvm a `kvm` domain becomes `qemu` (TCG) and
 * a host-passthrough CPU (KVM only) becomes host-model, which TCG maps to `max`. What the tests
 * inspect (devices, topology, threads) does not depend on the accelerator.
 */
export function forThisHost(xml: string): string {
  if (hostHasKvm()) return xml;
  return xml
    .replace(/<domain type=(['"])kvm\1/, '<domain type=$1qemu$1')
    .replace(/mode=(['"])host-passthrough\1/, 'mode=$1host-model$1');
}

/** A fresh embedded root in a temporary directory. */
export function tempRoot(prefix = 'vk-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export async function openRoot(root: string): Promise<Connection> {
  return connect(`qemu:///embed?root=${root}`);
}

/** A TCG guest that boots the test kernel; `mode` is read by the initramfs's /init. */
export function tinyGuest(
  name: string,
  mode: 'hello' | 'wait' | 'count' | 'devices' | 'resources' | 'echo' | 'reboot' | 'panic' = 'hello',
  extra: Partial<DomainDefinitionInput> = {},
) {
  const image = ensureGuestImage();
  return {
    name,
    type: 'qemu',
    memoryKiB: 128 * 1024,
    vcpu: { count: 1 },
    os: {
      kernel: image.kernel,
      initrd: image.initrd,
      cmdline: `console=ttyS0 panic=-1 quiet virtkit.mode=${mode}`,
    },
    serials: [{ type: 'file' }],
    ...extra,
  } satisfies DomainDefinitionInput;
}

/** A KVM-less, kernel-less domain that only ever runs paused or sits in firmware. */
export function pausedOnly(name: string, extra: Partial<DomainDefinitionInput> = {}) {
  return { name, type: 'qemu', memoryKiB: 64 * 1024, ...extra } satisfies DomainDefinitionInput;
}

/** Records every event of a connection; `next` waits for the first one matching. */
export function recordEvents(conn: Connection) {
  const events: DomainEvent[] = [];
  const waiters: Array<{ match: (e: DomainEvent) => boolean; resolve: (e: DomainEvent) => void }> = [];
  conn.on('domain-event', (e) => {
    events.push(e);
    for (const w of waiters.splice(0)) {
      if (w.match(e)) w.resolve(e);
      else waiters.push(w);
    }
  });
  return {
    events,
    next(match: (e: DomainEvent) => boolean, timeoutMs = 60_000): Promise<DomainEvent> {
      const seen = events.find(match);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`no matching event within ${timeoutMs} ms`)),
          timeoutMs,
        );
        waiters.push({
          match,
          resolve: (e) => {
            clearTimeout(timer);
            resolve(e);
          },
        });
      });
    },
  };
}

/** Files left under `<root>/run` besides the driver's lock: sockets and status files of running domains. */
export function runLeftovers(root: string): string[] {
  return readdirSync(join(root, 'run')).filter((f) => f !== 'driver.lock');
}

export function removeRoot(root: string): void {
  rmSync(root, { recursive: true, force: true });
}

/** True while a process exists and is not a zombie. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Pids of processes whose command line mentions `needle` (a domain uuid): leaked QEMUs or stubs. */
export function processesMentioning(needle: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(needle) && alive(Number(entry)))
        pids.push(Number(entry));
    } catch {}
  }
  return pids;
}

/** Files of `<root>/etc/domains`. */
export function definitionFiles(root: string): string[] {
  return readdirSync(join(root, 'etc', 'domains'));
}

/** Whether something accepts a connection on the UNIX socket `path` (the probe's connection is closed at once). */
export function acceptsConnection(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = netConnect(path);
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });
}

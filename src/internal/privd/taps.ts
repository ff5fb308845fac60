import { disownTap, tapState } from '../../util/tap.js';

/*
 * TAPs the helper created and handed to a peer. The peer holds attached descriptors, and with one
 * the kernel lets anybody make the device persistent (TUNSETPERSIST) and give it an owner
 * (TUNSETOWNER): a TAP that should have vanished with the VM would then survive it, belong to the
 * peer, and squat a name other tenants' VMs may need. That cannot be prevented, so it is undone:
 * a helper-created TAP found persistent or owned is taken back (root-owned, not persistent, so it
 * disappears with its last descriptor) — at once when the peer releases the domain
 * (`cgroup.release`), and otherwise by a periodic sweep. The record lives as long as the helper;
 * TAPs created by an earlier helper process are not known to this one.
 */

interface Created {
  readonly ifname: string;
  readonly ifindex: number;
  readonly peerUid: number;
  readonly uuid: string;
}

/** At most this many TAPs are tracked; the oldest record goes first (its device may be long gone). */
const MAX_TRACKED = 4096;

export class HelperTaps {
  readonly #created = new Map<string, Created>();
  readonly #sweepMs: number;
  readonly #log: (entry: Record<string, unknown>) => void;
  #timer: NodeJS.Timeout | undefined;

  constructor(sweepMs: number, log: (entry: Record<string, unknown>) => void) {
    this.#sweepMs = sweepMs;
    this.#log = log;
  }

  /** Notes a TAP just created for `peerUid`'s domain `uuid`. */
  record(ifname: string, peerUid: number, uuid: string): void {
    const state = tapState(ifname);
    if (!state) return;
    this.#created.delete(ifname);
    this.#created.set(ifname, { ifname, ifindex: state.ifindex, peerUid, uuid: uuid.toLowerCase() });
    if (this.#created.size > MAX_TRACKED) {
      this.#created.delete(this.#created.keys().next().value as string);
    }
    if (!this.#timer) {
      this.#timer = setInterval(() => this.sweep(), this.#sweepMs);
      this.#timer.unref();
    }
  }

  /** The domain is gone: its TAPs are taken back now, whatever state the peer left them in. */
  release(peerUid: number, uuid: string): void {
    const id = uuid.toLowerCase();
    for (const c of [...this.#created.values()]) {
      if (c.peerUid === peerUid && c.uuid === id) this.#takeBack(c);
    }
  }

  /** Takes back every tracked TAP that is persistent or owned; forgets those that are gone. */
  sweep(): void {
    for (const c of [...this.#created.values()]) this.#takeBack(c);
    if (this.#created.size === 0 && this.#timer) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }

  /** Stops the sweep. */
  close(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #takeBack(c: Created): void {
    const state = tapState(c.ifname);
    if (!state || state.ifindex !== c.ifindex) {
      this.#created.delete(c.ifname);
      return;
    }
    if (!state.persistent && state.owner === -1 && state.group === -1) return;
    try {
      if (!disownTap(c.ifname, c)) {
        this.#created.delete(c.ifname);
        return;
      }
      this.#log({
        event: 'tap-taken-back',
        ifname: c.ifname,
        peer: { uid: c.peerUid },
        domain: c.uuid,
        was: { persistent: state.persistent, owner: state.owner, group: state.group },
      });
    } catch (err) {
      // Typically EBUSY: a single-queue TAP still attached to its VM. The next sweep retries.
      this.#log({ event: 'tap-take-back-failed', ifname: c.ifname, error: String(err) });
    }
    if (!tapState(c.ifname)) this.#created.delete(c.ifname);
  }
}

/*
 * virtkit contenders: the embedded driver in this process, started plain, paused, and with
 * in-process handlers doing the privileged work (memlock, scheduler, cgroup placement) with the
 * util functions a privileged agent would use.
 */

import { join } from 'node:path';
import { QmpClient } from '../src/drivers/qemu/qmp/client.js';
import { type Connection, connect, type Domain, type DomainDefinitionInput } from '../src/index.js';
import { delegate, openInternal } from '../src/internal/index.js';
import { threadGroups } from '../src/privileged/builtins.js';
import { placeThreads, releaseCgroups } from '../src/util/cgroup.js';
import { prlimitGet, prlimitSet, RLIMIT, schedSet } from '../src/util/libc.js';
import {
  type Accel,
  MARKER,
  MEMORY_KIB,
  msSince,
  onCleanup,
  QEMU,
  registerCgroupParent,
  tempDir,
  VCPUS,
} from './common.js';

export type VirtkitKind = 'plain' | 'paused' | 'handlers' | 'delegated';

/** Who does the privileged operations of a host's domains. */
export type HandlerMode = { type: 'none' } | { type: 'in-process' } | { type: 'delegated'; socket: string };

/** The bench VM as a virtkit definition. */
export function benchDomain(name: string, accel: Accel, extra: Partial<DomainDefinitionInput> = {}) {
  return {
    name,
    type: accel === 'kvm' ? 'kvm' : 'qemu',
    memoryKiB: MEMORY_KIB,
    vcpu: { count: VCPUS },
    emulator: QEMU,
    ...extra,
  } satisfies DomainDefinitionInput;
}

const MiB = 1024n * 1024n;

/**
 * Counts the QMP commands the driver sends while `fn` runs, by wrapping QmpClient.connect (the
 * only way the driver opens a monitor) and reading each client's `commandCount`. Used only on
 * untimed (warm-up) runs.
 */
export async function countQmpCommands(fn: () => Promise<void>): Promise<number> {
  const original = QmpClient.connect;
  const clients: QmpClient[] = [];
  QmpClient.connect = (path, options) => {
    const p = original.call(QmpClient, path, options);
    p.then((c) => clients.push(c)).catch(() => undefined);
    return p;
  };
  try {
    await fn();
  } finally {
    QmpClient.connect = original;
  }
  return clients.reduce((n, c) => n + c.commandCount, 0);
}

/** One virtkit connection (one embedded root) and the domains of the contenders it serves. */
export class VirtkitHost {
  readonly conn: Connection;
  readonly root: string;
  readonly cgroupParent: string | undefined;

  private constructor(conn: Connection, root: string, cgroupParent: string | undefined) {
    this.conn = conn;
    this.root = root;
    this.cgroupParent = cgroupParent;
  }

  static async open(label: string, mode: HandlerMode): Promise<VirtkitHost> {
    const root = tempDir(`vk-${label}`);
    const conn = await connect(`qemu:///embed?root=${root}`);
    let parent: string | undefined;
    let close: (() => void) | undefined;
    if (mode.type === 'in-process') {
      parent = `${MARKER}-cg`;
      registerCgroupParent(parent);
      registerInProcessHandlers(conn, parent);
    } else if (mode.type === 'delegated') {
      const d = delegate(mode.socket);
      d.install(openInternal(conn, { apiVersion: '1.0' }));
      close = () => d.close();
    }
    const host = new VirtkitHost(conn, root, parent);
    onCleanup(async () => {
      await host.close();
      close?.();
    });
    return host;
  }

  async close(): Promise<void> {
    if (this.conn.closed) return;
    const active = await this.conn.listDomains({ state: 'active' });
    await Promise.all(active.map((d) => d.destroy({ graceMs: 2000 }).catch(() => undefined)));
    await this.conn.close();
  }
}

/**
 * Handlers that do the work themselves, as a privileged agent would (the same calls as
 * test/integration/internal-handlers.test.ts).
 */
function registerInProcessHandlers(conn: Connection, cgroupParent: string): void {
  const internal = openInternal(conn, { apiVersion: '1.0' });
  internal.setHandler('process.setMaxMemLock', (_ctx, args) => {
    prlimitSet(args.pid, RLIMIT.MEMLOCK, { soft: args.bytes, hard: args.bytes });
  });
  internal.setHandler('thread.setScheduler', (_ctx, args) => {
    for (const t of args.threads) schedSet(t.tid, t.policy, t.priority);
  });
  internal.setHandler('cgroup.placeThreads', (ctx, args) => {
    const { placements } = placeThreads({
      parent: cgroupParent,
      name: `vk-${ctx.domain.uuid}`,
      pid: args.pid,
      groups: threadGroups(args, 'housekeeping'),
    });
    return { placements };
  });
  internal.setHandler('cgroup.release', (ctx) => {
    releaseCgroups({ parent: cgroupParent, name: `vk-${ctx.domain.uuid}` });
  });
}

/** A virtkit contender: one domain, started and destroyed once per iteration. */
export class VirtkitContender {
  readonly kind: VirtkitKind;
  readonly #dom: Domain;
  /** QMP commands of the last counted start. */
  qmpCommands: number | undefined;

  private constructor(kind: VirtkitKind, dom: Domain) {
    this.kind = kind;
    this.#dom = dom;
  }

  static async create(host: VirtkitHost, kind: VirtkitKind, accel: Accel): Promise<VirtkitContender> {
    const name = `${MARKER}-vk-${kind}`;
    const extra: Partial<DomainDefinitionInput> =
      kind === 'handlers' || kind === 'delegated'
        ? {
            // 4 MiB: under this machine's 8 MiB hard RLIMIT_MEMLOCK ceiling.
            memtune: { hardLimitKiB: 4096 },
            cputune: {
              vcpupin: Array.from({ length: VCPUS }, (_, i) => ({ vcpu: i, cpuset: String(i % 2) })),
              emulatorpin: { cpuset: '0-1' },
              // The VM is resumed: SCHED_FIFO on a running vCPU is not allowed here, batch is harmless.
              vcpusched: [{ ids: `0-${VCPUS - 1}`, scheduler: 'batch', priority: 0 }],
            },
          }
        : {};
    const dom = await host.conn.defineDomain(benchDomain(name, accel, extra));
    return new VirtkitContender(kind, dom);
  }

  /** Starts the domain; returns the wall time in ms. With `count`, also records QMP commands. */
  async start(count = false): Promise<number> {
    const paused = this.kind === 'paused';
    // The stub inherits this process's RLIMIT_MEMLOCK: 1 MiB soft is below the domain's 4 MiB,
    // so process.setMaxMemLock is really invoked (not skipped as already covered).
    const own =
      this.kind === 'handlers' || this.kind === 'delegated'
        ? prlimitGet(process.pid, RLIMIT.MEMLOCK)
        : undefined;
    if (own) prlimitSet(process.pid, RLIMIT.MEMLOCK, { soft: MiB, hard: own.hard });
    try {
      let ms = 0;
      const run = async () => {
        const t0 = process.hrtime.bigint();
        await this.#dom.start({ paused });
        ms = msSince(t0);
      };
      if (count) this.qmpCommands = await countQmpCommands(run);
      else await run();
      return ms;
    } finally {
      if (own) prlimitSet(process.pid, RLIMIT.MEMLOCK, own);
    }
  }

  async destroy(): Promise<number> {
    const t0 = process.hrtime.bigint();
    await this.#dom.destroy();
    return msSince(t0);
  }

  /** The domain log, for profiling. */
  logPath(root: string): string {
    return join(root, 'log', `${this.#dom.name}.log`);
  }
}

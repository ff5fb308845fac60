/*
 * virtkit-privd for the delegated contenders: the real helper CLI (built: dist/privd-cli.js) in its own
 * process, as deployed, with a policy that admits this run's QEMUs and nothing else. Its audit
 * lines (standard error) go to a file, as a service manager would keep them.
 */

import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { delegate } from '../src/internal/index.js';
import { HandlerTable } from '../src/privileged/handler-table.js';
import { invoke } from '../src/privileged/invoke.js';
import {
  type Accel,
  MARKER,
  onCleanup,
  QEMU,
  registerCgroupParent,
  sampleMicros,
  tempDir,
} from './common.js';
import { RawContender } from './raw.js';

export class Privd {
  readonly socket: string;
  readonly cgroupParent: string;
  readonly auditLog: string;
  readonly #child: ChildProcess;
  readonly #exited: Promise<void>;

  private constructor(child: ChildProcess, socket: string, cgroupParent: string, auditLog: string) {
    this.#child = child;
    this.socket = socket;
    this.cgroupParent = cgroupParent;
    this.auditLog = auditLog;
    this.#exited = new Promise((r) => child.once('exit', () => r()));
  }

  get pid(): number {
    return this.#child.pid as number;
  }

  static async launch(): Promise<Privd> {
    const dir = tempDir('privd');
    const socket = join(dir, 'privd.sock');
    const policyPath = join(dir, 'policy.json');
    const auditLog = join(dir, 'audit.log');
    const cgroupParent = `${MARKER}-privd`;
    registerCgroupParent(cgroupParent);
    writeFileSync(
      policyPath,
      JSON.stringify({
        version: 1,
        peers: { uids: [process.getuid?.() ?? 0] },
        targets: { qualify: ['descendant'], emulators: [QEMU] },
        memlock: { maxBytes: 8 * 1024 * 1024 },
        // batch: the contender's vCPUs run; fifo is never asked for by this bench.
        scheduler: { policies: ['batch', 'other'] },
        cgroup: { parent: cgroupParent },
      }),
    );
    const err = openSync(auditLog, 'a');
    // The built CLI, as deployed (npm run bench builds first); not through tsx's loader.
    const child = spawn(
      process.execPath,
      [join(import.meta.dirname, '..', 'dist', 'privd-cli.js'), '--socket', socket, '--policy', policyPath],
      { stdio: ['ignore', 'ignore', err], cwd: join(import.meta.dirname, '..') },
    );
    closeSync(err);
    const p = new Privd(child, socket, cgroupParent, auditLog);
    onCleanup(() => p.stop());
    const deadline = Date.now() + 30_000;
    while (!(existsSync(socket) && readFileSync(auditLog, 'utf8').includes('listening on'))) {
      if (child.exitCode !== null || Date.now() > deadline)
        throw new Error(`virtkit-privd did not start: ${readFileSync(auditLog, 'utf8').trim()}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    return p;
  }

  async stop(): Promise<void> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    this.#child.kill('SIGTERM');
    const t = setTimeout(() => this.#child.kill('SIGKILL'), 5000);
    await this.#exited;
    clearTimeout(t);
  }
}

/** Delegated dispatch samples (µs, sorted ascending) per operation. */
export interface DelegatedSamples {
  /** cgroup.release of a domain with nothing placed: no target process, nothing to remove. */
  release: number[];
  /** thread.setScheduler other/0 on vCPU 0 of a paused QEMU (target checks in /proc, then the syscall). */
  setScheduler: number[];
}

/**
 * Delegated dispatch: the driver's invoke() → delegate() → virtkit-privd (peer check, policy,
 * audit line, the built-in operation) → response → the driver's post-check. Same measurement loop
 * as the in-process dispatch. The scheduler target is a paused raw QEMU, a child of this process
 * (the policy admits descendants running the emulator).
 */
export async function measureDelegatedDispatch(
  privd: Privd,
  accel: Accel,
  n: number,
): Promise<DelegatedSamples> {
  const d = delegate(privd.socket);
  const handlers = new HandlerTable();
  d.install({
    setHandler: (op, handler, options) => {
      if (op === 'cgroup.release' || op === 'thread.setScheduler') handlers.set(op, handler, options);
    },
  });
  const target = new RawContender('fd', accel);
  await target.start({ paused: true });
  const vcpu0 = target.vcpuTids[0] as number;
  const scope = {
    handlers,
    domain: { uuid: '00000000-0000-4000-8000-00000000be0c', name: `${MARKER}-dispatch`, id: 1 },
    pid: target.pid,
    taints: [] as string[],
    cgroupParent: privd.cgroupParent,
    log: () => {},
  };
  const measure = (fn: () => Promise<unknown>) => sampleMicros(fn, n, Math.min(1000, n));
  try {
    const release = await measure(() =>
      invoke(scope, 'cgroup.release', 'release', { pid: target.pid, placements: [] }),
    );
    const threads = [{ tid: vcpu0, role: 'vcpu' as const, index: 0, policy: 'other' as const, priority: 0 }];
    const setScheduler = await measure(() =>
      invoke(scope, 'thread.setScheduler', 'startup', { pid: target.pid, threads }),
    );
    return { release, setScheduler };
  } finally {
    d.close();
    await target.destroy();
  }
}

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, errorMessage, VirtError } from '../../../errors.js';
import { closeFd, listenUnixSocket } from '../../../util/libc.js';
import { QmpClient } from '../qmp/client.js';

/**
 * What one emulator binary reports about itself on `-machine none`, the facts capabilities and
 * machine-type expansion are built from. Plain JSON, so it can be cached as it is.
 *
 * @internal
 */
export interface EmulatorProbe {
  /** The emulator's path. */
  readonly emulator: string;
  /** QEMU's version, e.g. `{ major: 7, minor: 2, micro: 3 }`. */
  readonly version: { readonly major: number; readonly minor: number; readonly micro: number };
  /** The distribution package string. */
  readonly package: string;
  /** The target architecture, e.g. `x86_64`. */
  readonly arch: string;
  /** Machine types, versioned names with their alias (`pc` for `pc-i440fx-7.2`). */
  readonly machines: readonly ProbedMachine[];
  /** CPU models the emulator offers. */
  readonly cpuModels: readonly ProbedCpuModel[];
  /** True when KVM acceleration worked in the probe (`/dev/kvm` usable). */
  readonly kvm: boolean;
}

/** @internal */
export interface ProbedMachine {
  readonly name: string;
  readonly alias?: string;
  readonly isDefault: boolean;
  readonly maxCpus: number;
  readonly deprecated: boolean;
}

/** @internal */
export interface ProbedCpuModel {
  readonly name: string;
  readonly aliasOf?: string;
  readonly deprecated: boolean;
}

const PROBE_TIMEOUT_MS = 30_000;

/**
 * Starts the emulator on `-machine none` (no guest, nothing to boot), asks QMP what it supports
 * and makes it quit. KVM is tried first and TCG taken when KVM cannot start, as libvirt does.
 *
 * @throws VirtError `NO_SUPPORT` when the emulator is missing, `OPERATION_FAILED` when it does not
 *   start or answer; nothing is left running
 * @internal
 */
export async function probeEmulator(emulator: string): Promise<EmulatorProbe> {
  try {
    accessSync(emulator, constants.X_OK);
  } catch {
    throw new VirtError(ErrorCode.NO_SUPPORT, `the emulator ${emulator} is missing or not executable`, {
      path: emulator,
    });
  }
  const dir = mkdtempSync(join(tmpdir(), 'virtkit-probe-'));
  let monitorFd: number | undefined = listenUnixSocket(join(dir, 'qmp.sock'), 1);
  const child = spawn(
    emulator,
    [
      '-S',
      '-no-user-config',
      '-nodefaults',
      '-nographic',
      '-machine',
      'none',
      '-accel',
      'kvm',
      '-accel',
      'tcg',
      '-chardev',
      'socket,id=probe,fd=3,server=on,wait=off',
      '-mon',
      'chardev=probe,mode=control',
    ],
    // A process group of its own: whatever the emulator forks is killed with it in the end.
    { stdio: ['ignore', 'ignore', 'pipe', monitorFd], env: { ...process.env, LC_ALL: 'C' }, detached: true },
  );
  closeFd(monitorFd);
  monitorFd = undefined;
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    if (stderr.length < 4096) stderr += d;
  });
  const exited = once(child, 'exit').catch(() => undefined);
  let qmp: QmpClient | undefined;
  try {
    const connecting = QmpClient.connect(join(dir, 'qmp.sock'), { timeoutMs: PROBE_TIMEOUT_MS });
    const first = await Promise.race([connecting, exited.then(() => undefined)]);
    if (first === undefined) {
      connecting.then((q) => q.close()).catch(() => undefined);
      throw new VirtError(
        ErrorCode.OPERATION_FAILED,
        `probing ${emulator} failed: it exited${stderr ? `: ${stderr.trim()}` : ''}`,
        { path: emulator },
      );
    }
    qmp = first;
    const client = qmp;
    const opts = { timeoutMs: PROBE_TIMEOUT_MS };
    const [version, target, machines, cpus, kvm] = await Promise.all([
      client.command('query-version', undefined, opts),
      client.command('query-target', undefined, opts),
      client.command('query-machines', undefined, opts),
      client.command('query-cpu-definitions', undefined, opts),
      client.command('query-kvm', undefined, opts),
    ]);
    return {
      emulator,
      version: { major: version.qemu.major, minor: version.qemu.minor, micro: version.qemu.micro },
      package: version.package.trim(),
      arch: target.arch,
      machines: machines
        .filter((m) => m.name !== 'none')
        .map((m) => ({
          name: m.name,
          ...(m.alias !== undefined ? { alias: m.alias } : {}),
          isDefault: m['is-default'] === true,
          maxCpus: m['cpu-max'],
          deprecated: m.deprecated,
        }))
        .sort((a, b) => a.name.localeCompare(b.name)),
      cpuModels: cpus
        .map((c) => ({
          name: c.name,
          ...(c['alias-of'] !== undefined ? { aliasOf: c['alias-of'] } : {}),
          deprecated: c.deprecated,
        }))
        .sort((a, b) => a.name.localeCompare(b.name)),
      kvm: kvm.enabled,
    };
  } catch (err) {
    // QEMU's own words, when it died, say more than a reset connection.
    await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 1000).unref())]);
    throw new VirtError(
      ErrorCode.OPERATION_FAILED,
      `probing ${emulator} failed: ${errorMessage(err)}${stderr ? `; QEMU said: ${stderr.trim()}` : ''}`,
      { path: emulator },
      { cause: err },
    );
  } finally {
    qmp?.close();
    // The group, not just the child: a forked survivor would keep running and hold our stderr pipe.
    killGroup(child.pid);
    child.stderr?.destroy();
    await exited;
    rmSync(dir, { recursive: true, force: true });
  }
}

function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // ESRCH: the group is empty already.
  }
}

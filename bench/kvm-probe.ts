/*
 * Does KVM actually run guest code here? /dev/kvm may exist on a nested host whose vCPUs hang.
 * The probe starts a paused KVM VM of the bench shape, resumes it, and checks that the monitor
 * keeps answering and that vCPU 0 has left the reset vector (CS:IP f000:fff0), i.e. the
 * firmware runs. Anything else (no /dev/kvm, QEMU refusing, a hang past the deadline) -> TCG.
 */

import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import * as net from 'node:net';
import { join } from 'node:path';
import { closeFd, listenUnixSocket } from '../src/util/libc.js';
import { type Accel, MARKER, tempDir } from './common.js';
import { vmArgs } from './raw.js';
import { RawQmp } from './raw-qmp.js';

export interface ProbeResult {
  accel: Accel;
  why: string;
}

export async function probeKvm(timeoutMs = 5000): Promise<ProbeResult> {
  if (process.env['BENCH_ACCEL'] === 'tcg' || process.env['BENCH_ACCEL'] === 'kvm')
    return { accel: process.env['BENCH_ACCEL'] as Accel, why: 'forced by BENCH_ACCEL' };
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    return { accel: 'tcg', why: '/dev/kvm is missing or not accessible' };
  }
  const sock = join(tempDir('kvmprobe'), 'probe.qmp');
  const fd = listenUnixSocket(sock);
  const client = net.createConnection(sock);
  const child = spawn(
    '/usr/bin/qemu-system-x86_64',
    [
      ...vmArgs(`${MARKER}-kvmprobe`, 'kvm'),
      '-chardev',
      'socket,id=charmonitor,fd=3,server=on,wait=off',
      '-mon',
      'chardev=charmonitor,id=monitor,mode=control',
    ],
    { stdio: ['ignore', 'ignore', 'pipe', fd] },
  );
  closeFd(fd);
  let stderr = '';
  child.stderr?.on('data', (d) => {
    stderr += String(d);
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const qmp = new RawQmp(client);
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    const result = await Promise.race([
      deadline,
      exited.then(() => {
        throw new Error(`QEMU exited: ${stderr.trim().split('\n').pop() ?? ''}`);
      }),
      (async (): Promise<ProbeResult> => {
        await qmp.next();
        await qmp.command('qmp_capabilities');
        await qmp.command('cont');
        await new Promise((r) => setTimeout(r, 200));
        const status = await qmp.command<{ status: string }>('query-status');
        const regs = await qmp.command<string>('human-monitor-command', { 'command-line': 'info registers' });
        const eip = /EIP=([0-9a-f]+)/i.exec(regs)?.[1];
        const cs = /CS =([0-9a-f]+)/i.exec(regs)?.[1];
        if (status.status !== 'running')
          return { accel: 'tcg', why: `KVM VM is ${status.status} after cont` };
        if (
          !eip ||
          (Number.parseInt(eip, 16) === 0xfff0 && cs !== undefined && Number.parseInt(cs, 16) === 0xf000)
        )
          return { accel: 'tcg', why: 'KVM vCPU never left the reset vector' };
        return {
          accel: 'kvm',
          why: `KVM runs guest code: firmware reached CS:EIP ${cs}:${eip} within 200 ms of cont`,
        };
      })(),
    ]);
    return result;
  } catch (err) {
    return { accel: 'tcg', why: `KVM probe failed (${(err as Error).message}), using TCG` };
  } finally {
    clearTimeout(timer);
    qmp.close();
    child.kill('SIGKILL');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
  }
}

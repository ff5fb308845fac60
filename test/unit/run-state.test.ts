import { describe, expect, it } from 'vitest';
import { reconcileStatus, recordedStatus, statusOfRunState } from '../../src/drivers/qemu/run-state.js';

/*
 * How a new driver reads an adopted domain's state: QEMU's run state (libvirt's
 * qemuMonitorVMStatusToPausedReason) and the state the status file recorded (libvirt's
 * qemuProcessUpdateState). The integration tests (state.test.ts) drive the same through real QEMU.
 */

describe("QEMU's run state, read as libvirt reads it", () => {
  it('maps each run state to its reason; an unknown one reads paused/unknown', () => {
    expect(statusOfRunState('running', true)).toEqual({ state: 'running', reason: 'unpaused' });
    expect(statusOfRunState('paused', false)).toEqual({ state: 'paused', reason: 'user' });
    expect(statusOfRunState('io-error', false)).toEqual({ state: 'paused', reason: 'ioerror' });
    expect(statusOfRunState('postmigrate', false)).toEqual({ state: 'paused', reason: 'migration' });
    expect(statusOfRunState('shutdown', false)).toEqual({ state: 'paused', reason: 'shutting-down' });
    // Run states libvirt's table does not name, and untrusted values, are `unknown`.
    for (const status of ['debug', 'internal-error', 'colo', 'suspended', '__proto__', 'toString', ''])
      expect(statusOfRunState(status, false), status).toEqual({ state: 'paused', reason: 'unknown' });
  });
});

describe('the recorded state against what QEMU reports', () => {
  const running = { state: 'running', reason: 'booted' } as const;
  const migrated = { state: 'paused', reason: 'migrated' } as const;

  it('keeps a reason QEMU cannot tell when QEMU agrees on the state', () => {
    expect(reconcileStatus(running, 'running', true)).toEqual(running);
    expect(reconcileStatus(migrated, 'paused', false)).toEqual(migrated);
    expect(reconcileStatus({ state: 'paused', reason: 'user' }, 'prelaunch', false)).toEqual({
      state: 'paused',
      reason: 'user',
    });
  });

  it("takes QEMU's word on whether the vCPUs run, and its reason when it can tell one", () => {
    expect(reconcileStatus(migrated, 'running', true)).toEqual({ state: 'running', reason: 'unpaused' });
    expect(reconcileStatus(running, 'paused', false)).toEqual({ state: 'paused', reason: 'user' });
    expect(reconcileStatus(running, 'io-error', false)).toEqual({ state: 'paused', reason: 'ioerror' });
    expect(reconcileStatus({ state: 'paused', reason: 'user' }, 'guest-panicked', false)).toEqual({
      state: 'paused',
      reason: 'crashed',
    });
  });

  it('keeps a crashed domain (on_crash=preserve) crashed while QEMU holds the guest panicked', () => {
    const crashed = { state: 'crashed', reason: 'panicked' } as const;
    expect(recordedStatus(crashed)).toEqual(crashed);
    expect(reconcileStatus(crashed, 'guest-panicked', false)).toEqual(crashed);
    // A reset guest runs again: QEMU's word wins.
    expect(reconcileStatus(crashed, 'running', true)).toEqual({ state: 'running', reason: 'unpaused' });
  });

  it('never keeps starting-up or unknown, and reads QEMU alone without a record', () => {
    expect(reconcileStatus({ state: 'paused', reason: 'starting-up' }, 'prelaunch', false)).toEqual({
      state: 'paused',
      reason: 'user',
    });
    expect(reconcileStatus({ state: 'paused', reason: 'unknown' }, 'paused', false)).toEqual({
      state: 'paused',
      reason: 'user',
    });
    expect(reconcileStatus(undefined, 'running', true)).toEqual({ state: 'running', reason: 'unpaused' });
    expect(reconcileStatus(undefined, 'debug', false)).toEqual({ state: 'paused', reason: 'unknown' });
  });

  it('reads a recorded state only when it is one an active domain can be in', () => {
    expect(recordedStatus({ state: 'paused', reason: 'migrated' })).toEqual(migrated);
    expect(recordedStatus(undefined)).toBeUndefined();
    // Written by another version, or damaged: ignored, never fatal to the adoption.
    expect(recordedStatus({ state: 'paused', reason: 'booted' })).toBeUndefined();
    expect(recordedStatus({ state: 'shutoff', reason: 'destroyed' })).toBeUndefined();
    expect(recordedStatus({ state: 'pmsuspended', reason: 'unknown' })).toBeUndefined();
    expect(recordedStatus({ state: 'running', reason: 'booted', extra: 1 })).toBeUndefined();
    expect(recordedStatus('running')).toBeUndefined();
  });
});

import diagnosticsChannel from 'node:diagnostics_channel';
import { openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openInternal } from '../../src/internal/index.js';
import {
  type Connection,
  type DomainEvent,
  diagnosticsChannels,
  type HandlerMessage,
  type JobMessage,
  type QmpCommandMessage,
  type QmpEventMessage,
} from '../../src/stable/index.js';
import { prlimitGet, prlimitSet, RLIMIT } from '../../src/util/libc.js';
import { openRoot, pausedOnly, removeRoot, tempRoot } from '../helpers/env.js';

let root: string;
let conn: Connection;
const cleanups: Array<() => void> = [];

beforeEach(async () => {
  root = tempRoot('vk-trace-');
  conn = await openRoot(root);
});

afterEach(async () => {
  for (const off of cleanups.splice(0)) off();
  timeline.length = 0;
  for (const dom of await conn.listDomains({ state: 'active' })) await dom.destroy({ graceMs: 1000 });
  await conn.close();
  removeRoot(root);
});

type Phase = 'start' | 'end' | 'asyncStart' | 'asyncEnd' | 'error';
/** Every traced phase of every recorded channel, in the order published. */
const timeline: Array<{ phase: Phase; message: unknown }> = [];

/** Subscribes to every part of a tracing channel, recording (phase, message) in order. */
function recordTracing<M extends object>(name: string): Array<{ phase: Phase; message: M; snapshot: M }> {
  const seen: Array<{ phase: Phase; message: M; snapshot: M }> = [];
  const channel = diagnosticsChannel.tracingChannel<string, M>(name);
  const at = (phase: Phase) => (message: M) => {
    const entry = { phase, message, snapshot: { ...message } };
    seen.push(entry);
    timeline.push(entry);
  };
  const handlers = {
    start: at('start'),
    end: at('end'),
    asyncStart: at('asyncStart'),
    asyncEnd: at('asyncEnd'),
    error: at('error'),
  };
  channel.subscribe(handlers);
  cleanups.push(() => channel.unsubscribe(handlers));
  return seen;
}

function recordChannel<M>(name: string): M[] {
  const seen: M[] = [];
  const listener = (message: unknown) => seen.push(message as M);
  diagnosticsChannel.subscribe(name, listener);
  cleanups.push(() => diagnosticsChannel.unsubscribe(name, listener));
  return seen;
}

describe('tracing on node:diagnostics_channel, against real QEMU', () => {
  it('traces every QMP command of a start, of a passthrough and of a failure, with domain and duration', async () => {
    const trace = recordTracing<QmpCommandMessage>('virtkit:qmp:command');
    expect(diagnosticsChannels.qmpCommand).toBe('virtkit:qmp:command');
    const dom = await conn.defineDomain(pausedOnly('tr', { vcpu: { count: 2 } }));
    // A capability probe (machine types, on a first define) is traced too, as a QEMU of no domain.
    const probes = trace.filter((t) => t.message.domain === undefined);
    expect(probes.every((t) => t.message.passthrough === false)).toBe(true);
    trace.length = 0;
    await dom.start({ paused: true });
    const ofDomain = trace.filter((t) => t.message.domain !== undefined);
    const started = ofDomain.filter((t) => t.phase === 'start').map((t) => t.message.command);
    expect(started).toEqual(['qmp_capabilities', 'query-cpus-fast']);
    for (const { message } of ofDomain) {
      expect(message.domain).toEqual({ name: 'tr', uuid: dom.uuid });
      expect(message.passthrough).toBe(false);
    }
    const cpus = trace.find((t) => t.phase === 'asyncEnd' && t.message.command === 'query-cpus-fast');
    expect(cpus?.message.result).toHaveLength(2);
    expect(cpus?.message.durationMs).toBeGreaterThanOrEqual(0);
    // Each command goes through start, end, asyncStart, asyncEnd with one message object.
    expect(trace.filter((t) => t.message === cpus?.message).map((t) => t.phase)).toEqual([
      'start',
      'end',
      'asyncStart',
      'asyncEnd',
    ]);
    expect(trace.find((t) => t.phase === 'start')?.snapshot.durationMs).toBeUndefined();

    trace.length = 0;
    const internal = openInternal(conn, { apiVersion: '1.0' });
    await internal.monitorCommand(dom, 'query-status');
    await expect(internal.monitorCommand(dom, 'no-such-command', { x: 1 })).rejects.toThrow();
    const failed = trace.find((t) => t.phase === 'error')?.message;
    expect(failed).toMatchObject({
      command: 'no-such-command',
      arguments: { x: 1 },
      passthrough: true,
      error: { code: 'OPERATION_FAILED', details: { qmpClass: 'CommandNotFound' } },
    });
    expect(
      trace.filter((t) => t.phase === 'start').map((t) => [t.message.command, t.message.passthrough]),
    ).toEqual([
      ['query-status', true],
      ['no-such-command', true],
    ]);
  });

  it('publishes QMP events and life-cycle events on their channels', async () => {
    const qmpEvents = recordChannel<QmpEventMessage>(diagnosticsChannels.qmpEvent);
    const lifecycle = recordChannel<DomainEvent>(diagnosticsChannels.domainEvent);
    const dom = await conn.defineDomain(pausedOnly('tr'));
    await dom.start({ paused: true });
    await dom.resume();
    await dom.destroy();
    expect(qmpEvents.map((e) => e.event).slice(0, 1)).toEqual(['RESUME']);
    expect(qmpEvents.map((e) => e.event)).toContain('SHUTDOWN');
    for (const e of qmpEvents) expect(e.domain).toEqual({ name: 'tr', uuid: dom.uuid });
    expect(qmpEvents.find((e) => e.event === 'SHUTDOWN')?.data).toMatchObject({ guest: false });
    expect(lifecycle.map((e) => `${e.type}:${e.reason}`)).toEqual([
      'defined:added',
      'started:booted',
      'suspended:user',
      'resumed:unpaused',
      'stopped:destroyed',
    ]);
    expect(lifecycle.every((e) => e.domain.uuid === dom.uuid)).toBe(true);
  });

  it('traces handler invocations and built-ins: operation, phase, domain, via, outcome, duration', async () => {
    const trace = recordTracing<HandlerMessage>('virtkit:handler');
    const internal = openInternal(conn, { apiVersion: '1.0' });
    internal.setHandler('storage.openFile', async (_ctx, { path, mode }) => {
      if (path.endsWith('bad.img')) return { fd: 'not a descriptor' } as never;
      return { fd: openSync(path, mode === 'r' ? 'r' : 'r+') };
    });
    const disk = (name: string) => {
      const path = join(root, 'lib', name);
      writeFileSync(path, Buffer.alloc(1024 * 1024));
      return [{ type: 'file' as const, source: path, target: { dev: 'vda', bus: 'virtio' as const } }];
    };
    // QEMU inherits a soft limit of 1 MiB, below the 4 MiB of hard_limit: the built-in prlimit runs.
    const own = prlimitGet(process.pid, RLIMIT.MEMLOCK);
    prlimitSet(process.pid, RLIMIT.MEMLOCK, { soft: 1024n * 1024n, hard: own.hard });
    cleanups.push(() => prlimitSet(process.pid, RLIMIT.MEMLOCK, own));
    const dom = await conn.defineDomain(
      pausedOnly('tr', { disks: disk('good.img'), memtune: { hardLimitKiB: 4 * 1024 } }),
    );
    await dom.start({ paused: true });
    const { pid } = await dom.getInfo();
    const done = trace.filter((t) => t.phase === 'asyncEnd').map((t) => t.message);
    expect(done.map((m) => [m.operation, m.phase, m.via, m.outcome])).toEqual([
      ['storage.openFile', 'pre-exec', 'handler', 'ok'],
      ['process.setMaxMemLock', 'pre-exec', 'built-in', 'ok'],
    ]);
    expect(done[0]).toMatchObject({
      source: 'setHandler',
      domain: { name: 'tr', uuid: dom.uuid, id: null },
      pid: undefined,
      arguments: { path: join(root, 'lib', 'good.img'), mode: 'rw' },
    });
    expect(done[1]).toMatchObject({
      source: 'built-in',
      pid,
      arguments: { pid, bytes: 4n * 1024n * 1024n },
    });
    for (const m of done) expect(m.durationMs).toBeGreaterThanOrEqual(0);

    trace.length = 0;
    const bad = await conn.defineDomain(pausedOnly('bad', { disks: disk('bad.img') }));
    await expect(bad.start({ paused: true })).rejects.toMatchObject({ code: 'HANDLER_FAILED' });
    const failed = trace.find((t) => t.phase === 'error')?.message;
    expect(failed).toMatchObject({
      operation: 'storage.openFile',
      via: 'handler',
      outcome: 'failed',
      error: { code: 'HANDLER_FAILED' },
      domain: { name: 'bad' },
    });
  });

  it('traces every job: operation, domain, duration, outcome, with its QMP commands inside it', async () => {
    const jobs = recordTracing<JobMessage>(diagnosticsChannels.job);
    const qmp = recordTracing<QmpCommandMessage>(diagnosticsChannels.qmpCommand);
    const dom = await conn.defineDomain(pausedOnly('tr'));
    await dom.start({ paused: true });
    await expect(dom.suspend()).rejects.toMatchObject({ code: 'OPERATION_INVALID' });
    await dom.resume();
    await dom.destroy();
    const settled = jobs.filter((t) => t.phase === 'asyncEnd').map((t) => t.message);
    expect(
      settled.map((m) => [m.job, m.error === undefined ? 'ok' : (m.error as { code: string }).code]),
    ).toEqual([
      ['define', 'ok'],
      ['start', 'ok'],
      ['suspend', 'OPERATION_INVALID'],
      ['resume', 'ok'],
      ['destroy', 'ok'],
    ]);
    for (const m of settled) {
      expect(m.domain).toEqual({ name: 'tr', uuid: dom.uuid });
      expect(m.durationMs).toBeGreaterThanOrEqual(0);
    }
    expect(jobs.filter((t) => t.phase === 'error').map((t) => t.message.job)).toEqual(['suspend']);
    // The resume job's `cont` runs inside it: started after the job began, settled before it ended.
    const resume = settled.find((m) => m.job === 'resume');
    const cont = qmp.find((t) => t.phase === 'start' && t.message.command === 'cont')?.message;
    const at = (message: unknown, phase: Phase) =>
      timeline.findIndex((t) => t.message === message && t.phase === phase);
    expect(at(resume, 'start')).toBeGreaterThanOrEqual(0);
    expect(at(resume, 'start')).toBeLessThan(at(cont, 'start'));
    expect(at(cont, 'start')).toBeLessThan(at(cont, 'asyncEnd'));
    expect(at(cont, 'asyncEnd')).toBeLessThan(at(resume, 'asyncEnd'));
  });

  it('publishes nothing once unsubscribed', async () => {
    const trace = recordTracing<QmpCommandMessage>(diagnosticsChannels.qmpCommand);
    for (const off of cleanups.splice(0)) off();
    const dom = await conn.defineDomain(pausedOnly('tr'));
    await dom.start({ paused: true });
    expect(trace).toEqual([]);
  });
});

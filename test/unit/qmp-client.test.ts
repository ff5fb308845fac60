import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { QmpClient, type QmpConnectOptions, type QmpEvent } from '../../src/drivers/qemu/qmp/client.js';
import { LineSplitter } from '../../src/drivers/qemu/qmp/framing.js';

type Message = Record<string, unknown>;

const GREETING = {
  QMP: {
    version: { qemu: { micro: 3, minor: 2, major: 7 }, package: 'Debian 1:7.2+dfsg-7' },
    capabilities: ['oob'],
  },
};

/** The server side of one QMP connection. */
interface Peer {
  readonly socket: net.Socket;
  /** Resolves when the client's side is gone. */
  readonly closed: Promise<void>;
  /** The next message the client sent. */
  next(): Promise<Message>;
  send(msg: unknown): void;
  /** Writes raw bytes and resolves once they are handed to the kernel. */
  write(data: string | Buffer): Promise<void>;
}

function makePeer(socket: net.Socket): Peer {
  const received: Message[] = [];
  const waiters: ((msg: Message) => void)[] = [];
  let buffer = '';
  socket.setEncoding('utf8');
  socket.on('data', (data: string) => {
    buffer += data;
    for (let i = buffer.indexOf('\n'); i !== -1; i = buffer.indexOf('\n')) {
      const msg = JSON.parse(buffer.slice(0, i)) as Message;
      buffer = buffer.slice(i + 1);
      const waiter = waiters.shift();
      if (waiter) waiter(msg);
      else received.push(msg);
    }
  });
  socket.on('error', () => {});
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  return {
    socket,
    closed,
    next: () => {
      const msg = received.shift();
      return msg ? Promise.resolve(msg) : new Promise((resolve) => waiters.push(resolve));
    },
    send: (msg) => socket.write(`${JSON.stringify(msg)}\n`),
    write: (data) =>
      new Promise((resolve, reject) => socket.write(data, (err) => (err ? reject(err) : resolve()))),
  };
}

interface FakeServer {
  readonly dir: string;
  readonly path: string;
  nextPeer(): Promise<Peer>;
  close(): Promise<void>;
}

async function startServer(): Promise<FakeServer> {
  const dir = await mkdtemp(join(tmpdir(), 'virtkit-qmp-'));
  const path = join(dir, 'qmp.sock');
  const peers: Peer[] = [];
  const accepted: Peer[] = [];
  const waiters: ((peer: Peer) => void)[] = [];
  const server = net.createServer((socket) => {
    const peer = makePeer(socket);
    peers.push(peer);
    const waiter = waiters.shift();
    if (waiter) waiter(peer);
    else accepted.push(peer);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, resolve);
  });
  return {
    dir,
    path,
    nextPeer: () => {
      const peer = accepted.shift();
      return peer ? Promise.resolve(peer) : new Promise((resolve) => waiters.push(resolve));
    },
    close: async () => {
      for (const peer of peers) peer.socket.destroy();
      await new Promise((resolve) => server.close(resolve));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

let server: FakeServer;
let clients: QmpClient[];

beforeEach(async () => {
  server = await startServer();
  clients = [];
});

afterEach(async () => {
  for (const client of clients) client.close();
  await server.close();
});

/** Connects a client and plays QEMU's side of the greeting and negotiation. */
async function negotiated(options?: QmpConnectOptions): Promise<{ client: QmpClient; peer: Peer }> {
  const connecting = QmpClient.connect(server.path, options);
  const peer = await server.nextPeer();
  peer.send(GREETING);
  const caps = await peer.next();
  expect(caps).toEqual({ execute: 'qmp_capabilities', id: expect.any(Number) });
  peer.send({ return: {}, id: caps.id });
  const client = await connecting;
  clients.push(client);
  return { client, peer };
}

const event = (name: string, data: Message = {}) => ({
  event: name,
  data,
  timestamp: { seconds: 1700000000, microseconds: 42 },
});

describe('LineSplitter', () => {
  it('decodes lines split at every byte position, including inside multibyte characters', () => {
    const text = '{"a":"héllo € 😀"}\n{"b":2}\n';
    const bytes = Buffer.from(text);
    for (let cut = 0; cut <= bytes.length; cut++) {
      const lines: string[] = [];
      const splitter = new LineSplitter(1024);
      expect(splitter.push(bytes.subarray(0, cut), (l) => lines.push(l))).toBe(true);
      expect(splitter.push(bytes.subarray(cut), (l) => lines.push(l))).toBe(true);
      expect(lines).toEqual(['{"a":"héllo € 😀"}', '{"b":2}']);
    }
  });

  it('decodes a line fed one byte at a time', () => {
    const bytes = Buffer.from('"😀€é"\n');
    const lines: string[] = [];
    const splitter = new LineSplitter(1024);
    for (let i = 0; i < bytes.length; i++) splitter.push(bytes.subarray(i, i + 1), (l) => lines.push(l));
    expect(lines).toEqual(['"😀€é"']);
  });

  it('accepts a line of exactly the limit and rejects one byte more, with or without a newline', () => {
    const ok: string[] = [];
    expect(new LineSplitter(4).push(Buffer.from('abcd\n'), (l) => ok.push(l))).toBe(true);
    expect(ok).toEqual(['abcd']);
    expect(new LineSplitter(4).push(Buffer.from('abcde\n'), () => {})).toBe(false);
    const partial = new LineSplitter(4);
    expect(partial.push(Buffer.from('abc'), () => {})).toBe(true);
    expect(partial.push(Buffer.from('de'), () => {})).toBe(false);
  });
});

describe('QmpClient', () => {
  it('reads the greeting and negotiates capabilities', async () => {
    const { client } = await negotiated();
    expect(client.greeting).toEqual({
      qemu: { major: 7, minor: 2, micro: 3 },
      package: 'Debian 1:7.2+dfsg-7',
      capabilities: ['oob'],
    });
    expect(client.commandCount).toBe(1);
    expect(client.closed).toBe(false);
  });

  it('sends arguments only when given and counts commands', async () => {
    const { client, peer } = await negotiated();
    const a = client.execute('device_del', { id: 'net0' });
    const first = await peer.next();
    expect(first).toEqual({ execute: 'device_del', arguments: { id: 'net0' }, id: expect.any(Number) });
    const b = client.execute('query-status');
    const second = await peer.next();
    expect(second).toEqual({ execute: 'query-status', id: expect.any(Number) });
    expect(second.id).not.toBe(first.id);
    peer.send({ return: {}, id: first.id });
    peer.send({ return: { status: 'running' }, id: second.id });
    await expect(a).resolves.toEqual({});
    await expect(b).resolves.toEqual({ status: 'running' });
    expect(client.commandCount).toBe(3);
  });

  it('matches out-of-order responses to concurrent commands by id and skips unknown ids', async () => {
    const { client, peer } = await negotiated();
    const results = ['a', 'b', 'c'].map((name) => client.execute(`cmd-${name}`));
    const sent = [await peer.next(), await peer.next(), await peer.next()];
    peer.send({ return: 'stray', id: 999_999 });
    peer.send({ return: 'stray', id: 'not-a-number' });
    for (const msg of [...sent].reverse()) peer.send({ return: `${msg.execute}-result`, id: msg.id });
    await expect(Promise.all(results)).resolves.toEqual(['cmd-a-result', 'cmd-b-result', 'cmd-c-result']);
    expect(client.closed).toBe(false);
  });

  it('delivers an event that precedes a response before the response resolves', async () => {
    const { client, peer } = await negotiated();
    const seen: string[] = [];
    client.onEvent((ev) => seen.push(ev.event));
    const done = client.execute('cont').then(() => seen.push('response'));
    const cmd = await peer.next();
    // Event and response in one write, as QEMU often does.
    await peer.write(`${JSON.stringify(event('RESUME'))}\n${JSON.stringify({ return: {}, id: cmd.id })}\n`);
    await done;
    expect(seen).toEqual(['RESUME', 'response']);
  });

  it('delivers events in order with their payload to every subscriber, and unsubscribes', async () => {
    const { client, peer } = await negotiated();
    const first: QmpEvent[] = [];
    const second: string[] = [];
    const unsubscribe = client.onEvent((ev) => first.push(ev));
    client.onEvent((ev) => second.push(ev.event));
    // A subscriber added during dispatch must not see the event being dispatched.
    const late: string[] = [];
    const once = client.onEvent(() => {
      once();
      client.onEvent((ev) => late.push(ev.event));
    });
    peer.send(event('STOP', { reason: 'x' }));
    peer.send(event('RESUME'));
    peer.send({ event: 'BARE' });
    const sync = client.execute('query-status');
    peer.send({ return: {}, id: (await peer.next()).id });
    await sync;
    expect(first).toEqual([
      { event: 'STOP', data: { reason: 'x' }, timestamp: { seconds: 1700000000, microseconds: 42 } },
      { event: 'RESUME', data: {}, timestamp: { seconds: 1700000000, microseconds: 42 } },
      { event: 'BARE', data: {}, timestamp: { seconds: 0, microseconds: 0 } },
    ]);
    expect(second).toEqual(['STOP', 'RESUME', 'BARE']);
    expect(late).toEqual(['RESUME', 'BARE']);
    unsubscribe();
    peer.send(event('SHUTDOWN'));
    const sync2 = client.execute('query-status');
    peer.send({ return: {}, id: (await peer.next()).id });
    await sync2;
    expect(first).toHaveLength(3);
    expect(second).toEqual(['STOP', 'RESUME', 'BARE', 'SHUTDOWN']);
  });

  it('rejects a QMP error with OPERATION_FAILED and keeps the error class', async () => {
    const { client, peer } = await negotiated();
    const result = client.execute('no-such-command');
    const cmd = await peer.next();
    peer.send({
      error: { class: 'CommandNotFound', desc: 'The command no-such-command has not been found' },
      id: cmd.id,
    });
    await expect(result).rejects.toMatchObject({
      name: 'VirtError',
      code: 'OPERATION_FAILED',
      message: expect.stringMatching(/no-such-command.*has not been found/),
      details: { qmpClass: 'CommandNotFound', command: 'no-such-command' },
    });
    expect(client.closed).toBe(false);
  });

  it('times out a command, ignores its late response and keeps working', async () => {
    const { client, peer } = await negotiated();
    const slow = client.execute('query-slow', undefined, { timeoutMs: 30 });
    const cmd = await peer.next();
    await expect(slow).rejects.toMatchObject({
      code: 'OPERATION_TIMEOUT',
      details: { command: 'query-slow' },
    });
    peer.send({ return: 'late', id: cmd.id });
    const next = client.execute('query-status');
    peer.send({ return: 'fresh', id: (await peer.next()).id });
    await expect(next).resolves.toBe('fresh');
    expect(client.closed).toBe(false);
  });

  it('maps an abort to OPERATION_FAILED, or OPERATION_TIMEOUT for a timeout reason', async () => {
    const { client, peer } = await negotiated();
    const controller = new AbortController();
    const aborted = client.execute('query-a', undefined, { signal: controller.signal });
    await peer.next();
    controller.abort();
    await expect(aborted).rejects.toMatchObject({
      code: 'OPERATION_FAILED',
      details: { command: 'query-a' },
    });
    await expect(
      client.execute('query-b', undefined, { signal: AbortSignal.timeout(20) }),
    ).rejects.toMatchObject({
      code: 'OPERATION_TIMEOUT',
    });
    await expect(client.execute('query-c', undefined, { signal: controller.signal })).rejects.toMatchObject({
      code: 'OPERATION_FAILED',
    });
    expect(client.closed).toBe(false);
  });

  it('decodes a response delivered in many chunks split inside multibyte characters', async () => {
    const { client, peer } = await negotiated();
    const result = client.execute('query-name');
    const cmd = await peer.next();
    const bytes = Buffer.from(`${JSON.stringify({ return: { name: 'vm-é€😀-ok' }, id: cmd.id })}\r\n`);
    for (let i = 0; i < bytes.length; i += 3) await peer.write(bytes.subarray(i, i + 3));
    await expect(result).resolves.toEqual({ name: 'vm-é€😀-ok' });
  });

  it('kills the connection when a line exceeds maxLineBytes', async () => {
    const { client, peer } = await negotiated({ maxLineBytes: 1024 });
    const disconnects: (Error | undefined)[] = [];
    client.onDisconnect((err) => disconnects.push(err));
    const pending = client.execute('query-huge');
    await peer.next();
    await peer.write('{"return":"'.padEnd(700, 'x'));
    await peer.write(''.padEnd(700, 'x'));
    await expect(pending).rejects.toMatchObject({
      code: 'OPERATION_FAILED',
      message: expect.stringContaining('QMP line exceeds 1024 bytes'),
    });
    await peer.closed;
    expect(client.closed).toBe(true);
    expect(disconnects).toEqual([expect.objectContaining({ code: 'OPERATION_FAILED' })]);
    await expect(client.execute('query-status')).rejects.toMatchObject({ code: 'CONNECTION_CLOSED' });
  });

  it('treats malformed JSON as a protocol error', async () => {
    const { client, peer } = await negotiated();
    const pending = client.execute('query-status');
    await peer.next();
    await peer.write('{"return": {\n');
    await expect(pending).rejects.toMatchObject({
      code: 'OPERATION_FAILED',
      message: expect.stringContaining('malformed JSON'),
    });
    await peer.closed;
    expect(client.closed).toBe(true);
  });

  it('ignores blank lines', async () => {
    const { client, peer } = await negotiated();
    const pending = client.execute('query-status');
    const cmd = await peer.next();
    await peer.write(`\r\n\n  \n${JSON.stringify({ return: 1, id: cmd.id })}\n`);
    await expect(pending).resolves.toBe(1);
  });

  it('rejects pending commands with CONNECTION_CLOSED when the server disconnects', async () => {
    const { client, peer } = await negotiated();
    const disconnects: (Error | undefined)[] = [];
    client.onDisconnect((err) => disconnects.push(err));
    const a = client.execute('query-a');
    const b = client.execute('query-b');
    await peer.next();
    await peer.next();
    peer.socket.destroy();
    await expect(a).rejects.toMatchObject({ code: 'CONNECTION_CLOSED' });
    await expect(b).rejects.toMatchObject({ code: 'CONNECTION_CLOSED' });
    expect(client.closed).toBe(true);
    await new Promise((resolve) => setImmediate(resolve));
    expect(disconnects).toEqual([expect.objectContaining({ code: 'CONNECTION_CLOSED' })]);
    await expect(client.execute('query-c')).rejects.toMatchObject({ code: 'CONNECTION_CLOSED' });
  });

  it('close() rejects pending commands, notifies once without error, and later commands fail', async () => {
    const { client, peer } = await negotiated();
    const disconnects: (Error | undefined)[] = [];
    client.onDisconnect((err) => disconnects.push(err));
    const pending = client.execute('query-status');
    await peer.next();
    client.close();
    client.close();
    await expect(pending).rejects.toMatchObject({ code: 'CONNECTION_CLOSED' });
    await expect(client.execute('query-status')).rejects.toMatchObject({ code: 'CONNECTION_CLOSED' });
    await peer.closed;
    expect(client.closed).toBe(true);
    expect(disconnects).toEqual([undefined]);
    const late = await new Promise((resolve) => client.onDisconnect(resolve));
    expect(late).toBeUndefined();
  });

  it('fails with SYSTEM_ERROR ENOENT for a missing socket', async () => {
    await expect(QmpClient.connect(join(server.dir, 'missing.sock'))).rejects.toMatchObject({
      code: 'SYSTEM_ERROR',
      details: { errno: 'ENOENT' },
    });
  });

  it('fails with SYSTEM_ERROR ECONNREFUSED for a path that is not a listening socket', async () => {
    const path = join(server.dir, 'plain-file');
    await writeFile(path, '');
    await expect(QmpClient.connect(path)).rejects.toMatchObject({
      code: 'SYSTEM_ERROR',
      details: { errno: 'ECONNREFUSED' },
    });
  });

  it('times out a silent server with OPERATION_TIMEOUT and closes the socket', async () => {
    const connecting = QmpClient.connect(server.path, { timeoutMs: 50 });
    const peer = await server.nextPeer();
    await expect(connecting).rejects.toMatchObject({ code: 'OPERATION_TIMEOUT' });
    await peer.closed;
  });

  it('times out a negotiation that is never answered', async () => {
    const connecting = QmpClient.connect(server.path, { timeoutMs: 50 });
    const peer = await server.nextPeer();
    peer.send(GREETING);
    await peer.next();
    await expect(connecting).rejects.toMatchObject({ code: 'OPERATION_TIMEOUT' });
    await peer.closed;
  });

  it('rejects a peer that does not send a QMP greeting with OPERATION_FAILED', async () => {
    const connecting = QmpClient.connect(server.path);
    const peer = await server.nextPeer();
    peer.send({ hello: 'world' });
    await expect(connecting).rejects.toMatchObject({ code: 'OPERATION_FAILED' });
    await peer.closed;
  });

  it('rejects a refused negotiation with OPERATION_FAILED', async () => {
    const connecting = QmpClient.connect(server.path);
    const peer = await server.nextPeer();
    peer.send(GREETING);
    const caps = await peer.next();
    peer.send({ error: { class: 'GenericError', desc: 'nope' }, id: caps.id });
    await expect(connecting).rejects.toMatchObject({
      code: 'OPERATION_FAILED',
      details: { qmpClass: 'GenericError' },
    });
    await peer.closed;
  });

  it('aborts connecting through the signal', async () => {
    const controller = new AbortController();
    const connecting = QmpClient.connect(server.path, { signal: controller.signal });
    const peer = await server.nextPeer();
    controller.abort();
    await expect(connecting).rejects.toMatchObject({ code: 'OPERATION_FAILED' });
    await peer.closed;
    await expect(
      QmpClient.connect(server.path, { signal: AbortSignal.abort(new DOMException('t', 'TimeoutError')) }),
    ).rejects.toMatchObject({ code: 'OPERATION_TIMEOUT' });
  });

  it('rejects with CONNECTION_CLOSED when the server hangs up before the greeting', async () => {
    const connecting = QmpClient.connect(server.path);
    const peer = await server.nextPeer();
    peer.socket.end();
    await expect(connecting).rejects.toMatchObject({ code: 'CONNECTION_CLOSED' });
  });

  it('command() validates the reply and rejects a malformed one without closing', async () => {
    const { client, peer } = await negotiated();
    const good = client.command('query-status');
    peer.send({
      return: { status: 'running', running: true, singlestep: false },
      id: (await peer.next()).id,
    });
    await expect(good).resolves.toEqual({ status: 'running', running: true, singlestep: false });
    const bad = client.command('query-cpus-fast');
    peer.send({ return: [{ 'cpu-index': 0, 'thread-id': 'nope' }], id: (await peer.next()).id });
    await expect(bad).rejects.toMatchObject({
      code: 'OPERATION_FAILED',
      details: { command: 'query-cpus-fast' },
      message: expect.stringContaining('0.thread-id'),
    });
    expect(client.closed).toBe(false);
    const args = client.command('balloon', { value: 1024 });
    const sent = await peer.next();
    expect(sent).toEqual({ execute: 'balloon', arguments: { value: 1024 }, id: expect.any(Number) });
    peer.send({ return: {}, id: sent.id });
    await expect(args).resolves.toEqual({});
  });

  it('waitForEvent sees an event that arrives before the response of the command that provoked it', async () => {
    const { client, peer } = await negotiated();
    const stopped = client.waitForEvent('STOP');
    const done = client.command('stop');
    const cmd = await peer.next();
    await peer.write(`${JSON.stringify(event('STOP'))}\n${JSON.stringify({ return: {}, id: cmd.id })}\n`);
    await done;
    await expect(stopped).resolves.toEqual({
      event: 'STOP',
      data: {},
      timestamp: { seconds: 1700000000, microseconds: 42 },
    });
  });

  it('waitForEvent applies the predicate to the validated payload', async () => {
    const { client, peer } = await negotiated();
    const deleted = client.waitForEvent('DEVICE_DELETED', (ev) => ev.data.device === 'net1');
    peer.send(event('DEVICE_DELETED', { device: 'net0', path: '/machine/peripheral/net0' }));
    peer.send(event('DEVICE_DELETED', { device: 'net1', path: '/machine/peripheral/net1' }));
    await expect(deleted).resolves.toMatchObject({ data: { device: 'net1' } });
  });

  it('waitForEvent rejects a malformed payload, a timeout, an abort and a disconnect', async () => {
    const { client, peer } = await negotiated();
    const malformed = client.waitForEvent('SHUTDOWN');
    peer.send(event('SHUTDOWN', { guest: 'yes' }));
    await expect(malformed).rejects.toMatchObject({
      code: 'OPERATION_FAILED',
      details: { event: 'SHUTDOWN' },
    });
    await expect(client.waitForEvent('RESUME', undefined, { timeoutMs: 20 })).rejects.toMatchObject({
      code: 'OPERATION_TIMEOUT',
    });
    const controller = new AbortController();
    const aborted = client.waitForEvent('RESUME', undefined, { signal: controller.signal });
    controller.abort();
    await expect(aborted).rejects.toMatchObject({ code: 'OPERATION_FAILED' });
    const pending = client.waitForEvent('RESUME');
    peer.socket.destroy();
    await expect(pending).rejects.toMatchObject({ code: 'CONNECTION_CLOSED' });
    await expect(client.waitForEvent('RESUME')).rejects.toMatchObject({ code: 'CONNECTION_CLOSED' });
  });
});

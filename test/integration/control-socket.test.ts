import { execFile, execFileSync } from 'node:child_process';
import { chmodSync, existsSync, statSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startControlServer } from '../../src/stable/control/server.js';
import { type Connection, connect } from '../../src/stable/index.js';
import { removeRoot, tempRoot } from '../helpers/env.js';
import { TEST_USER } from '../setup/global.js';

/*
 * The control socket against clients that do not play by its rules: each gets a typed error and
 * loses its own connection, and the driver goes on serving everyone else.
 */

const opened: Array<{ conn: Connection; root: string }> = [];
const sockets: Socket[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  for (const { conn, root } of opened.splice(0)) {
    if (conn.closed) {
      removeRoot(root);
      continue;
    }
    for (const dom of await conn.listDomains({ state: 'active' })) await dom.destroy();
    await conn.close();
    removeRoot(root);
  }
});

async function holdRoot(controlSocket: boolean | { uids: number[] } = true) {
  const root = tempRoot();
  const conn = await connect(`qemu:///embed?root=${encodeURIComponent(root)}`, { controlSocket });
  opened.push({ conn, root });
  return { root, conn, path: join(root, 'run', 'control.sock') };
}

interface Reply {
  v: number;
  id: number | null;
  ok?: boolean;
  result?: unknown;
  error?: { code: string; message: string; details: Record<string, unknown> };
  event?: unknown;
}

/** A raw client: what it sends is up to the test; replies are collected line by line. */
function client(path: string) {
  const socket = createConnection(path);
  sockets.push(socket);
  const replies: Reply[] = [];
  const waiters: Array<() => void> = [];
  let buffered = '';
  let closed = false;
  socket.on('data', (d: Buffer) => {
    buffered += d.toString();
    for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
      replies.push(JSON.parse(buffered.slice(0, nl)) as Reply);
      buffered = buffered.slice(nl + 1);
    }
    for (const w of waiters.splice(0)) w();
  });
  socket.on('error', () => {});
  socket.on('close', () => {
    closed = true;
    for (const w of waiters.splice(0)) w();
  });
  const until = async (done: () => boolean): Promise<void> => {
    while (!done()) {
      if (closed) throw new Error(`connection closed; replies: ${JSON.stringify(replies)}`);
      await new Promise<void>((r) => waiters.push(r));
    }
  };
  return {
    socket,
    replies,
    get closed() {
      return closed;
    },
    send(line: string) {
      socket.write(line);
    },
    async request(id: number, op: string, args?: unknown): Promise<Reply> {
      socket.write(`${JSON.stringify({ v: 1, id, op, args })}\n`);
      await until(() => replies.some((r) => r.id === id));
      return replies.find((r) => r.id === id) as Reply;
    },
    /** The next reply (or none) and the close that must follow it. */
    async closing(): Promise<Reply | undefined> {
      while (!closed) await new Promise<void>((r) => waiters.push(r));
      return replies.at(-1);
    },
  };
}

describe('the control socket', () => {
  it('is a socket only its owner may open, removed when the connection closes', async () => {
    const { conn, path } = await holdRoot();
    const st = statSync(path);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o600);
    expect(st.uid).toBe(process.getuid?.());
    expect(await client(path).request(1, 'version')).toMatchObject({ ok: true, result: { protocol: 1 } });
    await conn.close();
    expect(existsSync(path)).toBe(false);
  });

  it('refuses a peer of another uid by SO_PEERCRED, even when the file mode would let it in, and serves a listed uid', async () => {
    const uid = Number(execFileSync('id', ['-u', TEST_USER]).toString().trim());
    // Asynchronously: the server answering it runs in this very process.
    const ask = (path: string): Promise<string> => {
      const script = `const s=require('node:net').createConnection(${JSON.stringify(path)});s.on('error',e=>{console.log('ERR '+e.code)});s.on('connect',()=>s.write(JSON.stringify({v:1,id:7,op:'list',args:{state:'all'}})+'\\n'));let b='';s.on('data',d=>{b+=d;if(b.includes('\\n')){console.log(b.trim());process.exit(0);}});`;
      return new Promise((resolve) => {
        execFile(
          process.execPath,
          ['-e', script],
          { uid, gid: uid, encoding: 'utf8', timeout: 30_000 },
          (_e, stdout) => resolve(stdout.trim()),
        );
      });
    };
    const refused = await holdRoot();
    chmodSync(refused.root, 0o755);
    expect(await ask(refused.path)).toBe('ERR EACCES');
    chmodSync(refused.path, 0o666);
    const reply = JSON.parse(await ask(refused.path)) as Reply;
    expect(reply).toMatchObject({ id: null, ok: false, error: { code: 'ACCESS_DENIED', details: { uid } } });

    const listed = await holdRoot({ uids: [uid] });
    chmodSync(listed.root, 0o755);
    chmodSync(listed.path, 0o666);
    expect(JSON.parse(await ask(listed.path))).toEqual({
      v: 1,
      id: 7,
      ok: true,
      result: [],
    });
  });

  it('answers malformed JSON, another version and an oversized line with PROTOCOL_ERROR, closing only that client', async () => {
    const { path } = await holdRoot();
    const bystander = client(path);
    expect(await bystander.request(1, 'version')).toMatchObject({ ok: true });

    const garbage = client(path);
    garbage.send('{"v":1,"id":1,"op":\n');
    expect(await garbage.closing()).toMatchObject({ id: null, ok: false, error: { code: 'PROTOCOL_ERROR' } });

    const envelope = client(path);
    envelope.send('{"v":1,"id":-4,"op":"list","extra":true}\n');
    expect(await envelope.closing()).toMatchObject({ id: null, error: { code: 'PROTOCOL_ERROR' } });

    const future = client(path);
    future.send(`${JSON.stringify({ v: 2, id: 1, op: 'list' })}\n`);
    expect(await future.closing()).toMatchObject({
      error: { code: 'PROTOCOL_ERROR', details: { peerProtocol: 2, protocol: 1 } },
    });

    const huge = client(path);
    const chunk = Buffer.alloc(1024 * 1024, 0x61);
    for (let i = 0; i < 5; i++) huge.send(chunk.toString());
    expect(await huge.closing()).toMatchObject({
      error: { code: 'PROTOCOL_ERROR', details: { limit: 4 * 1024 * 1024 } },
    });

    expect(bystander.closed).toBe(false);
    expect(await bystander.request(2, 'list', { state: 'all' })).toMatchObject({ ok: true, result: [] });
  });

  it('answers an unknown operation or bad arguments with a typed error and keeps the connection', async () => {
    const { path } = await holdRoot();
    const c = client(path);
    for (const [id, op] of [
      [1, 'frobnicate'],
      [2, 'setHandler'],
      [3, 'monitorCommand'],
      [4, '__proto__'],
      [5, 'constructor'],
    ] as const) {
      expect(await c.request(id, op)).toMatchObject({ id, ok: false, error: { code: 'OPERATION_INVALID' } });
    }
    expect(await c.request(6, 'start', { domain: 5 })).toMatchObject({
      ok: false,
      error: { code: 'OPERATION_INVALID', details: { path: 'domain', operation: 'start' } },
    });
    expect(await c.request(7, 'list', { state: 'all', extra: 1 })).toMatchObject({
      error: { code: 'OPERATION_INVALID' },
    });
    expect(await c.request(8, 'define', { xml: '<domain' })).toMatchObject({ error: { code: 'XML_ERROR' } });
    expect(await c.request(9, 'define', { definition: { name: 'x', memoryKiB: -1 } })).toMatchObject({
      error: { code: expect.stringMatching(/XML_ERROR|CONFIG_UNSUPPORTED/) },
    });
    expect(await c.request(10, 'dominfo', { domain: 'nope' })).toMatchObject({
      error: { code: 'NO_DOMAIN' },
    });
    expect(await c.request(11, 'events', { domain: 1 })).toMatchObject({
      error: { code: 'OPERATION_INVALID' },
    });
    expect(
      await c.request(13, 'migratePerform', {
        domain: 'x',
        uri: 'tcp:1:1',
        cookie: { version: 2, uuid: 'x', uri: '' },
      }),
    ).toMatchObject({ error: { code: 'OPERATION_INVALID', details: { path: 'cookie.version' } } });
    expect(await c.request(14, 'migratePrepare', { offer: {}, listen: 'tcp:127.0.0.1:0' })).toMatchObject({
      error: { code: 'XML_ERROR' },
    });
    expect(await c.request(15, 'migrateFinish', { uuid: 'nope' })).toMatchObject({
      error: { code: 'NO_DOMAIN' },
    });
    expect(await c.request(12, 'version')).toMatchObject({ ok: true });
    expect(c.closed).toBe(false);
  });

  it('goes on when a client leaves in the middle of a start or a subscription', async () => {
    const { conn, path } = await holdRoot();
    await conn.defineDomain({ name: 'leaver', type: 'qemu', memoryKiB: 65536 });
    const subscriber = client(path);
    expect(await subscriber.request(1, 'events')).toMatchObject({ ok: true, result: { subscribed: true } });
    const leaver = client(path);
    leaver.send(
      `${JSON.stringify({ v: 1, id: 1, op: 'start', args: { domain: 'leaver', paused: true } })}\n`,
    );
    // Its request goes out, then it is gone before the answer; the subscriber just vanishes.
    leaver.socket.end();
    subscriber.socket.destroy();
    const watcher = client(path);
    let state = '';
    for (let i = 2; state !== 'paused' && i < 600; i++) {
      const r = await watcher.request(i, 'dominfo', { domain: 'leaver' });
      state = String((r.result as { state: string }).state);
      if (state !== 'paused') await new Promise((res) => setTimeout(res, 100));
    }
    expect((await conn.lookupDomain('leaver').then((d) => d.getInfo())).state).toBe('paused');
  });
});

describe('the control socket’s limits', () => {
  async function smallServer() {
    const { conn, root } = await holdRoot(false);
    const path = join(root, 'run', 'small.sock');
    const logged: string[] = [];
    const server = startControlServer(conn, {
      path,
      uids: [],
      version: 'test',
      log: (m) => logged.push(m),
      limits: { maxConnections: 2, lineTimeoutMs: 300, maxUnreadBytes: 64 * 1024 },
    });
    conn.beforeClose(() => server.close());
    return { path, logged };
  }

  it('refuses clients beyond the cap until one leaves, and drops a client that leaves a line unfinished', async () => {
    const { path, logged } = await smallServer();
    const a = client(path);
    const b = client(path);
    expect(await a.request(1, 'version')).toMatchObject({ ok: true });
    expect(await b.request(1, 'version')).toMatchObject({ ok: true });
    const third = client(path);
    expect(await third.closing()).toMatchObject({
      id: null,
      error: { code: 'OPERATION_FAILED', details: { limit: 2 } },
    });
    b.socket.destroy();
    // b's slot is free once the server has seen it go.
    let stalled = client(path);
    for (let i = 0; i < 100; i++) {
      const refused = await Promise.race([
        stalled.closing().then(() => true),
        new Promise<boolean>((r) => setTimeout(() => r(false), 200)),
      ]);
      if (!refused) break;
      stalled = client(path);
    }
    stalled.send('{"v":1,"id":1,');
    expect(await stalled.closing()).toMatchObject({
      error: { code: 'PROTOCOL_ERROR', message: expect.stringMatching(/not completed within 300 ms/) },
    });
    expect(logged.some((l) => /not completed/.test(l))).toBe(true);
    expect(await a.request(2, 'version')).toMatchObject({ ok: true });
  });

  it('drops a client that does not read its replies, and still serves the others', async () => {
    const { path } = await smallServer();
    const flooder = client(path);
    flooder.socket.pause();
    const request = `${JSON.stringify({ v: 1, id: 1, op: 'capabilities' })}\n`;
    flooder.send(request.repeat(200));
    const other = client(path);
    // Served while the flood is answered, and after it.
    expect(await other.request(1, 'list', { state: 'all' })).toMatchObject({ ok: true });
    flooder.socket.resume();
    await flooder.closing();
    expect(flooder.replies.length).toBeLessThan(200);
    expect(await other.request(500, 'capabilities')).toMatchObject({ ok: true });
  });
});

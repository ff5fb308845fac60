/*
 * The smallest QMP client that does the job by hand: newline-delimited JSON over a UNIX socket,
 * one command at a time, events skipped. The raw-QEMU floor and the KVM probe use it, so the
 * floor carries no framework overhead of its own.
 */

import * as net from 'node:net';

export class RawQmp {
  readonly socket: net.Socket;
  #buf = '';
  #waiters: Array<(msg: Record<string, unknown>) => void> = [];
  #queue: Array<Record<string, unknown>> = [];
  #error: Error | undefined;
  #failers: Array<(err: Error) => void> = [];
  /** Sees every event (the migration bench times STOP and RESUME); events are otherwise skipped. */
  onEvent: ((msg: Record<string, unknown>) => void) | undefined;

  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.#buf += chunk;
      let nl = this.#buf.indexOf('\n');
      while (nl !== -1) {
        const line = this.#buf.slice(0, nl);
        this.#buf = this.#buf.slice(nl + 1);
        nl = this.#buf.indexOf('\n');
        if (!line.trim()) continue;
        const msg = JSON.parse(line) as Record<string, unknown>;
        if ('event' in msg) {
          this.onEvent?.(msg);
          continue;
        }
        const w = this.#waiters.shift();
        if (w) {
          this.#failers.shift();
          w(msg);
        } else this.#queue.push(msg);
      }
    });
    const fail = (err: Error) => {
      this.#error ??= err;
      for (const f of this.#failers.splice(0)) f(this.#error);
      this.#waiters = [];
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('QMP socket closed')));
  }

  /** The next greeting or response. */
  next(): Promise<Record<string, unknown>> {
    const queued = this.#queue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.#error) return Promise.reject(this.#error);
    return new Promise((resolve, reject) => {
      this.#waiters.push(resolve);
      this.#failers.push(reject);
    });
  }

  async command<T = unknown>(execute: string, args?: Record<string, unknown>): Promise<T> {
    this.socket.write(`${JSON.stringify(args ? { execute, arguments: args } : { execute })}\n`);
    const msg = await this.next();
    if ('error' in msg) throw new Error(`QMP ${execute}: ${JSON.stringify(msg['error'])}`);
    return msg['return'] as T;
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Connects to a path QEMU creates itself (`-qmp unix:PATH,server=on,wait=off`): retries every 1 ms. */
export async function connectPolling(path: string, timeoutMs: number): Promise<net.Socket> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await new Promise<net.Socket>((resolve, reject) => {
        const s = net.createConnection(path);
        s.once('connect', () => {
          s.removeAllListeners('error');
          resolve(s);
        });
        s.once('error', (err) => {
          s.destroy();
          reject(err);
        });
      });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if ((code !== 'ENOENT' && code !== 'ECONNREFUSED') || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 1));
    }
  }
}

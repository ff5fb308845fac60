import { closeSync, constants, openSync, writeSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { ReadStream } from 'node:tty';
import { ErrorCode, errorMessage, VirtError } from '../errors.js';
import type { ConsoleJson } from '../stable/control/operations.js';

/** virsh's escape: Ctrl+] (GS) leaves the console. */
const ESCAPE = 0x1d;

/** The terminal the user types on and reads from. */
export interface Terminal {
  readonly input: NodeJS.ReadStream;
  write(text: string | Uint8Array): void;
}

/** The guest's end of the console: its bytes as a stream, a way to send it keys, a way to let go. */
interface GuestEnd {
  readonly stream: NodeJS.ReadableStream & { destroy(): void };
  send(data: Uint8Array): void;
  close(): void;
}

/** The serial pty, opened twice: a raw tty stream to read, a descriptor to write. */
function openPty(target: ConsoleJson): GuestEnd {
  let readFd: number;
  let writeFd: number;
  try {
    readFd = openSync(target.path, constants.O_RDWR | constants.O_NOCTTY);
  } catch (err) {
    throw new VirtError(
      ErrorCode.SYSTEM_ERROR,
      `cannot open the console ${target.path} of domain '${target.name}': ${errorMessage(err)}`,
      { path: target.path },
    );
  }
  try {
    writeFd = openSync(target.path, constants.O_WRONLY | constants.O_NOCTTY);
  } catch (err) {
    closeSync(readFd);
    throw new VirtError(ErrorCode.SYSTEM_ERROR, `cannot open ${target.path}: ${errorMessage(err)}`, {
      path: target.path,
    });
  }
  const stream = new ReadStream(readFd);
  stream.setRawMode(true);
  return {
    stream,
    send: (data) => writeSync(writeFd, data),
    close: () => {
      stream.destroy();
      closeSync(writeFd);
    },
  };
}

/** The unix socket QEMU listens on for the serial port (it serves one client at a time). */
async function openUnix(target: ConsoleJson): Promise<GuestEnd> {
  const socket = await new Promise<Socket>((resolve, reject) => {
    const s = createConnection(target.path);
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  }).catch((err: unknown) => {
    throw new VirtError(
      ErrorCode.SYSTEM_ERROR,
      `cannot connect to the console ${target.path} of domain '${target.name}': ${errorMessage(err)}`,
      { path: target.path },
    );
  });
  return {
    stream: socket,
    send: (data) => {
      if (!socket.writable) throw new Error('the console socket closed');
      socket.write(data);
    },
    close: () => socket.destroy(),
  };
}

/**
 * Connects the terminal to the domain's serial port (its pty, or the unix socket QEMU listens on)
 * until the user types Ctrl+] or the domain stops (the pty hangs up, the socket closes). The
 * terminal is put in raw mode meanwhile, so every key (Ctrl+C too) reaches the guest, as with
 * `virsh console`.
 */
export async function attachConsole(target: ConsoleJson, term: Terminal): Promise<'escape' | 'hangup'> {
  const guest = target.type === 'unix' ? await openUnix(target) : openPty(target);
  const raw = term.input.isTTY === true;
  if (raw) term.input.setRawMode(true);
  term.write(`Connected to domain '${target.name}'\r\nEscape character is ^] (Ctrl + ])\r\n`);
  try {
    return await new Promise<'escape' | 'hangup'>((resolve) => {
      guest.stream.on('data', (chunk: Buffer) => term.write(chunk));
      // QEMU exiting closes the master (the slave reads EIO or end) or the socket.
      guest.stream.once('error', () => resolve('hangup'));
      guest.stream.once('end', () => resolve('hangup'));
      guest.stream.once('close', () => resolve('hangup'));
      term.input.on('data', (chunk: Buffer) => {
        const at = chunk.indexOf(ESCAPE);
        const pass = at === -1 ? chunk : chunk.subarray(0, at);
        try {
          if (pass.length > 0) guest.send(pass);
        } catch {
          resolve('hangup');
        }
        if (at !== -1) resolve('escape');
      });
      term.input.once('end', () => resolve('escape'));
      term.input.resume();
    });
  } finally {
    term.input.pause();
    if (raw) term.input.setRawMode(false);
    term.input.removeAllListeners('data');
    guest.stream.removeAllListeners('data');
    guest.close();
    term.write('\r\n');
  }
}

import { closeSync, constants, openSync, writeSync } from 'node:fs';
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

/**
 * Connects the terminal to the domain's serial pty until the user types Ctrl+] or the domain
 * stops (the pty hangs up). The terminal is put in raw mode meanwhile, so every key (Ctrl+C too)
 * reaches the guest, as with `virsh console`.
 */
export async function attachConsole(target: ConsoleJson, term: Terminal): Promise<'escape' | 'hangup'> {
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
  const guest = new ReadStream(readFd);
  guest.setRawMode(true);
  const raw = term.input.isTTY === true;
  if (raw) term.input.setRawMode(true);
  term.write(`Connected to domain '${target.name}'\r\nEscape character is ^] (Ctrl + ])\r\n`);
  try {
    return await new Promise<'escape' | 'hangup'>((resolve) => {
      guest.on('data', (chunk: Buffer) => term.write(chunk));
      // QEMU exiting closes the master: the slave reads EIO (or end).
      guest.once('error', () => resolve('hangup'));
      guest.once('end', () => resolve('hangup'));
      term.input.on('data', (chunk: Buffer) => {
        const at = chunk.indexOf(ESCAPE);
        const pass = at === -1 ? chunk : chunk.subarray(0, at);
        try {
          if (pass.length > 0) writeSync(writeFd, pass);
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
    guest.removeAllListeners('data');
    guest.destroy();
    closeSync(writeFd);
    term.write('\r\n');
  }
}

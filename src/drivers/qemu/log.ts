import { appendFileSync, closeSync, fstatSync, openSync, readSync } from 'node:fs';

/** Appends one timestamped driver record to a domain log (QEMU writes its stderr to the same file). */
export function appendLog(path: string, message: string): void {
  try {
    appendFileSync(path, `${new Date().toISOString()} virtkit: ${message}\n`);
  } catch {
    // A log that cannot be written must never fail the operation it describes.
  }
}

/** The last `lines` non-empty lines of a log written since `offset`, to explain a failed start. */
export function logTail(path: string, offset: number, lines = 3): string {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const size = fstatSync(fd).size;
    const start = Math.max(offset, size - 8192);
    const buf = Buffer.alloc(Math.max(0, size - start));
    readSync(fd, buf, 0, buf.length, start);
    return buf
      .toString('utf8')
      .split('\n')
      .filter((l) => l.trim() && !l.includes(' virtkit: '))
      .slice(-lines)
      .join(' | ');
  } catch {
    return '';
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

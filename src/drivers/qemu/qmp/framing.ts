/**
 * Splits a byte stream into newline-terminated lines with a hard bound on the bytes held.
 *
 * Chunks are kept as Buffers and only whole lines are decoded, so a chunk boundary inside a
 * multibyte UTF-8 character is harmless.
 *
 * @internal
 */
export class LineSplitter {
  readonly #maxLineBytes: number;
  #parts: Buffer[] = [];
  #size = 0;

  /** @param maxLineBytes - the longest line accepted, in bytes, newline excluded */
  constructor(maxLineBytes: number) {
    this.#maxLineBytes = maxLineBytes;
  }

  /**
   * Feeds one chunk and calls `onLine` for every line it completes, in order.
   *
   * @returns false once a line exceeds the limit; the splitter must not be fed again
   */
  push(chunk: Buffer, onLine: (line: string) => void): boolean {
    let start = 0;
    let newline = chunk.indexOf(0x0a);
    while (newline !== -1) {
      const length = this.#size + newline - start;
      if (length > this.#maxLineBytes) return false;
      let line: string;
      if (this.#size === 0) {
        // Common case: the whole line sits in this chunk, decode it without copying.
        line = chunk.toString('utf8', start, newline);
      } else {
        this.#parts.push(chunk.subarray(start, newline));
        line = Buffer.concat(this.#parts, length).toString('utf8');
        this.#parts = [];
        this.#size = 0;
      }
      onLine(line);
      start = newline + 1;
      newline = chunk.indexOf(0x0a, start);
    }
    const rest = chunk.length - start;
    if (rest > 0) {
      // Check before keeping the tail, so a peer that never sends a newline cannot grow the buffer.
      if (this.#size + rest > this.#maxLineBytes) return false;
      // A copy: the caller may reuse the chunk's memory for its next read.
      this.#parts.push(Buffer.from(chunk.subarray(start)));
      this.#size += rest;
    }
    return true;
  }
}

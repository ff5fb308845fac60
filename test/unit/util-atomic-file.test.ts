import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VirtError } from '../../src/errors.js';
import { writeFileAtomic, writeFileAtomicSync } from '../../src/util/atomic-file.js';
import { renameExchange } from '../../src/util/libc.js';

let root: string;
let n = 0;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'virtkit-atomic-'));
});
afterAll(() => {
  rmSync(root, { recursive: true, force: true });
});

function freshDir(): string {
  const d = join(root, String(n++));
  mkdirSync(d);
  return d;
}

const variants = [
  ['writeFileAtomic', writeFileAtomic],
  ['writeFileAtomicSync', async (...a: Parameters<typeof writeFileAtomicSync>) => writeFileAtomicSync(...a)],
  // Without the fsyncs, every guarantee a reader or a killed writer sees must stay the same.
  [
    'writeFileAtomic, not durable',
    (path: string, data: string | Uint8Array, mode?: number) =>
      writeFileAtomic(path, data, mode, { durable: false }),
  ],
  // Durable, with the fsync after the rename (one journal commit).
  [
    'writeFileAtomic, fsync after rename',
    (path: string, data: string | Uint8Array, mode?: number) =>
      writeFileAtomic(path, data, mode, { syncAfterRename: true }),
  ],
  // Replaces an existing file by exchange (renameat2), then removes the temporary.
  [
    'writeFileAtomicSync, not durable',
    async (path: string, data: string | Uint8Array, mode?: number) =>
      writeFileAtomicSync(path, data, mode, { durable: false }),
  ],
] as const;

describe.each(variants)('%s', (_name, write) => {
  it('writes a new file and leaves no temp file', async () => {
    const d = freshDir();
    const f = join(d, 'state.xml');
    await write(f, '<domain/>\n');
    expect(readFileSync(f, 'utf8')).toBe('<domain/>\n');
    expect(readdirSync(d)).toEqual(['state.xml']);
  });

  it('overwrites an existing file, with bytes', async () => {
    const d = freshDir();
    const f = join(d, 'blob');
    writeFileSync(f, 'old content that is longer');
    const bytes = new Uint8Array([0, 1, 2, 255]);
    await write(f, bytes);
    expect(new Uint8Array(readFileSync(f))).toEqual(bytes);
    await write(f, '');
    expect(readFileSync(f, 'utf8')).toBe('');
    expect(readdirSync(d)).toEqual(['blob']);
  });

  it('applies the mode exactly', async () => {
    const d = freshDir();
    const f = join(d, 'secret');
    await write(f, 'x', 0o640);
    expect(statSync(f).mode & 0o777).toBe(0o640);
    await write(f, 'y', 0o600);
    expect(statSync(f).mode & 0o777).toBe(0o600);
  });

  it('writes large content completely', async () => {
    const d = freshDir();
    const f = join(d, 'big');
    const big = 'z'.repeat(5 * 1024 * 1024 + 3);
    await write(f, big);
    expect(readFileSync(f, 'utf8')).toBe(big);
  });

  it('fails with a VirtError and removes the temp file when rename fails', async () => {
    const d = freshDir();
    const target = join(d, 'isdir');
    mkdirSync(join(target, 'child'), { recursive: true });
    const err = await write(target, 'x').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(VirtError);
    expect((err as VirtError).code).toBe('SYSTEM_ERROR');
    expect((err as VirtError).details.errno).toMatch(/^E(ISDIR|NOTEMPTY|EXIST)$/);
    expect(readdirSync(d)).toEqual(['isdir']);
  });

  it('fails with ENOENT when the directory does not exist', async () => {
    const f = join(root, 'missing-dir', 'f');
    const err = await write(f, 'x').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(VirtError);
    expect((err as VirtError).details.errno).toBe('ENOENT');
  });
});

describe('concurrency', () => {
  it('concurrent writers leave one complete version and no temp files', async () => {
    const d = freshDir();
    const f = join(d, 'racy');
    const versions = Array.from({ length: 20 }, (_, i) => String(i).repeat(100_000));
    const reads: string[] = [];
    let done = false;
    const reader = (async () => {
      while (!done) {
        try {
          reads.push(readFileSync(f, 'utf8'));
        } catch {}
        await new Promise((r) => setImmediate(r));
      }
    })();
    await Promise.all(versions.map((v) => writeFileAtomic(f, v)));
    done = true;
    await reader;
    expect(versions).toContain(readFileSync(f, 'utf8'));
    for (const r of reads) expect(versions).toContain(r);
    expect(readdirSync(d)).toEqual(['racy']);
  });
});

describe('renameExchange', () => {
  it('swaps two files atomically, and answers false (changing nothing) when the target is missing', () => {
    const d = freshDir();
    writeFileSync(join(d, 'a'), 'A');
    writeFileSync(join(d, 'b'), 'B');
    expect(renameExchange(join(d, 'a'), join(d, 'b'))).toBe(true);
    expect(readFileSync(join(d, 'a'), 'utf8')).toBe('B');
    expect(readFileSync(join(d, 'b'), 'utf8')).toBe('A');
    expect(renameExchange(join(d, 'a'), join(d, 'missing'))).toBe(false);
    expect(readdirSync(d).sort()).toEqual(['a', 'b']);
  });
});

import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { ABI_STRUCTS, checkLayout } from '../../src/internal/native-abi.js';
import { NATIVE_DIR } from '../fixtures/native-build.js';

/*
 * The loader's koffi structures against the C compiler's view of native/virtkit-internal.h: every
 * member the loader writes or reads exists in C at the same offset, and every size matches.
 */

const dir = mkdtempSync(join(tmpdir(), 'vk-abi-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it('every member of every structure has the same offset in C and in the loader', () => {
  const lines: string[] = [];
  const expected: string[] = [];
  for (const [name, type, size] of ABI_STRUCTS) {
    lines.push(`  printf("${name} %zu\\n", sizeof(struct ${name}));`);
    expected.push(`${name} ${size}`);
    for (const member of Object.values(
      (type as unknown as { members: Record<string, { name: string; offset: number }> }).members,
    )) {
      lines.push(`  printf("${name}.${member.name} %zu\\n", offsetof(struct ${name}, ${member.name}));`);
      expected.push(`${name}.${member.name} ${member.offset}`);
    }
  }
  const source = join(dir, 'offsets.c');
  writeFileSync(
    source,
    `#include <stddef.h>\n#include <stdio.h>\n#include "virtkit-internal.h"\nint main(void) {\n${lines.join('\n')}\n  return 0;\n}\n`,
  );
  const exe = join(dir, 'offsets');
  execFileSync('cc', ['-Wall', '-Werror', '-I', NATIVE_DIR, '-o', exe, source]);
  expect(execFileSync(exe, { encoding: 'utf8' }).trim().split('\n')).toEqual(expected);
  expect(() => checkLayout()).not.toThrow();
});

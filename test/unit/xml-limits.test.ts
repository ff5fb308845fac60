import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { MAX_DEFINITION_JSON_BYTES, resolveDefinition } from '../../src/stable/definition/validate.js';
import { MAX_XML_BYTES, readXmlTree } from '../../src/stable/definition/xml-tree.js';
import { ErrorCode, parseDomainXml, VirtError } from '../../src/stable/index.js';

/*
 * Issue 11, defect 6: the pre-scan searched from every opener of a comment, CDATA section or
 * processing instruction to a terminator that never came, so 0.5 MB of openers inside an attribute
 * value took 5–12 s. The documents below are 4 MiB (the size limit lifted): quadratic time on them
 * is many minutes, linear time is seconds. Each runs in a child process that is killed at a bound
 * far above the linear time, so a regression fails the test in bounded time instead of hanging it.
 */

const CHILD = join(import.meta.dirname, '../fixtures/xml-read-child.ts');
const BIG = 4 * 1024 * 1024;
const BOUND_MS = 90_000;

function readInChild(shape: string, bytes: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, shape, String(bytes)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), BOUND_MS);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (signal === 'SIGKILL')
        reject(new Error(`reading a ${bytes}-byte '${shape}' document took over ${BOUND_MS} ms`));
      else if (code !== 0) reject(new Error(`child failed (${code}): ${err}`));
      else resolve(out.trim());
    });
  });
}

function failure(fn: () => unknown): VirtError {
  try {
    fn();
  } catch (err) {
    if (VirtError.is(err)) return err;
    throw err;
  }
  throw new Error('accepted');
}

describe('reading XML takes time linear in the document size', () => {
  it.each([
    ['attr-pi', ErrorCode.XML_ERROR],
    ['attr-comment', ErrorCode.XML_ERROR],
    ['attr-cdata', ErrorCode.XML_ERROR],
    ['text-pi', ErrorCode.XML_ERROR],
    ['text-comment', ErrorCode.XML_ERROR],
  ])(
    'a 4 MiB %s document: %s, within the bound',
    async (shape, outcome) => {
      expect(await readInChild(shape, BIG)).toBe(outcome);
    },
    BOUND_MS + 10_000,
  );

  // Well-formed documents of the size limit, in the shapes slowest for the parser beneath.
  it.each([
    ['many-attributes', 'ok'],
    ['references', 'ok'],
    ['comments', 'ok'],
  ])(
    'a 1 MiB %s document: %s, within the bound',
    async (shape, outcome) => {
      expect(await readInChild(shape, MAX_XML_BYTES)).toBe(outcome);
    },
    BOUND_MS + 10_000,
  );
});

describe('well-formedness the pre-scan enforces', () => {
  it.each([
    ["<domain type='a<b'/>", 1, 16],
    ["<domain type='<?x'/>", 1, 15],
    ["<domain>\n<name a='<!--'/></domain>", 2, 10],
  ])("'<' in an attribute value is malformed: %s", (xml, line, column) => {
    const err = failure(() => readXmlTree(xml));
    expect(err.code).toBe(ErrorCode.XML_ERROR);
    expect({ line: err.details.line, column: err.details.column }).toEqual({ line, column });
  });

  it.each([
    ["<domain a='&nbsp;'/>", 1, 12],
    ["<domain a='x&y'/>", 1, 13],
    ["<domain a='&#0;'/>", 1, 12],
  ])('a bad reference in an attribute value is malformed: %s', (xml, line, column) => {
    const err = failure(() => readXmlTree(xml));
    expect(err.code).toBe(ErrorCode.XML_ERROR);
    expect({ line: err.details.line, column: err.details.column }).toEqual({ line, column });
  });

  it('comment-like text in an attribute value written with references is kept', () => {
    const el = readXmlTree("<domain a='&lt;!-- &lt;? x' b=\"'&gt;'\"><!-- '<x>' --></domain>");
    expect(el.attrs.get('a')).toBe('<!-- <? x');
    expect(el.attrs.get('b')).toBe("'>'");
    expect(el.children).toEqual([]);
  });
});

describe('the size limit on definitions', () => {
  const description = (bytes: number) => {
    const head = "<domain type='qemu'><name>big</name><memory unit='MiB'>64</memory><description>";
    const tail = '</description></domain>';
    return head + 'x'.repeat(bytes - head.length - tail.length) + tail;
  };

  it('is 1 MiB', () => {
    expect(MAX_XML_BYTES).toBe(1024 * 1024);
  });

  it('a document of exactly the limit is read', () => {
    const xml = description(MAX_XML_BYTES);
    expect(Buffer.byteLength(xml)).toBe(MAX_XML_BYTES);
    expect(parseDomainXml(xml).description).toMatch(/^x+$/);
  });

  it('a document one byte over the limit is XML_ERROR with its size and the limit', () => {
    const err = failure(() => parseDomainXml(description(MAX_XML_BYTES + 1)));
    expect(err.code).toBe(ErrorCode.XML_ERROR);
    expect(err.details).toMatchObject({ size: MAX_XML_BYTES + 1, limit: MAX_XML_BYTES });
  });

  it('counts bytes of UTF-8, not characters', () => {
    // 'é' is two bytes: a document of little more than half the limit in characters is over it in bytes.
    const xml = description(MAX_XML_BYTES / 2 + 100).replace(/x/g, 'é');
    expect(xml.length).toBeLessThan(MAX_XML_BYTES);
    const err = failure(() => parseDomainXml(xml));
    expect(err.details.limit).toBe(MAX_XML_BYTES);
    expect(err.details.size).toBeGreaterThan(MAX_XML_BYTES);
  });

  it('a 50 MB document is refused before it is read', () => {
    const err = failure(() => parseDomainXml(description(50_000_000)));
    expect(err.details).toMatchObject({ size: 50_000_000, limit: MAX_XML_BYTES });
  });

  it('a typed definition is held to twice that, as JSON', () => {
    expect(MAX_DEFINITION_JSON_BYTES).toBe(2 * MAX_XML_BYTES);
    const err = failure(() =>
      resolveDefinition({
        name: 'big',
        type: 'qemu',
        memoryKiB: 65536,
        description: 'x'.repeat(MAX_DEFINITION_JSON_BYTES),
      }),
    );
    expect(err.code).toBe(ErrorCode.XML_ERROR);
    expect(err.details).toMatchObject({ limit: MAX_DEFINITION_JSON_BYTES });
    expect(
      resolveDefinition({ name: 'small', type: 'qemu', memoryKiB: 65536, description: 'x'.repeat(1000) })
        .description,
    ).toHaveLength(1000);
  });
});

/*
 * Measures the XML layer against a directory of domain XML documents written by others:
 * `npm run corpus -- DIR [DIR…]`. For every `*.xml` below each DIR it reports whether the document
 * parses (`resolveDomainXml`), round-trips (`formatDomainXml` read back to the same definition, and
 * formatting is a fixed point) and builds a QEMU command line; then, per directory, the counts, and
 * a ranked list of the reasons that stopped documents (code and XML path, indexes removed).
 *
 * A directory may hold an `INDEX.tsv` with the columns `file` and `expect` (libvirt's test inputs:
 * `valid`, `invalid`, `xml2xml-only`); documents are then counted per expectation as well.
 *
 * The documents are third-party data: this script reads them where they are and copies nothing.
 * Options: `--verbose` lists every document with its outcome; `--json` prints the figures as JSON;
 * `--blockers` also ranks every element that blocks a document, not only the first: it removes the
 * element or attribute an error names from the document (in memory) and parses again, until the
 * document parses or an error names nothing it can remove.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join, relative } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { buildCommandLine } from '../src/drivers/qemu/command-line.js';
import { resolveFirmware } from '../src/drivers/qemu/firmware.js';
import { VirtError } from '../src/errors.js';
import type { DomainDefinition } from '../src/stable/definition/schema.js';
import { formatDomainXml, resolveDomainXml, xmlCanonical } from '../src/stable/definition/xml.js';

type Stage = 'parse' | 'roundtrip' | 'cmdline';
interface Outcome {
  readonly file: string;
  readonly dir: string;
  readonly expect: string;
  /** The stage that failed, or undefined when all three passed. */
  readonly failed?: Stage;
  readonly reason?: string;
  readonly detail?: string;
}

function xmlFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir).sort()) {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) out.push(...xmlFiles(path));
    else if (entry.endsWith('.xml')) out.push(path);
  }
  return out;
}

/** `file` → `expect` from the INDEX.tsv of a directory, when it has one. */
function expectations(dir: string): Map<string, string> {
  const map = new Map<string, string>();
  let text: string;
  try {
    text = readFileSync(join(dir, 'INDEX.tsv'), 'utf8');
  } catch {
    return map;
  }
  const [head, ...rows] = text.split('\n');
  const cols = (head ?? '').split('\t');
  const fileCol = cols.indexOf('file');
  const expectCol = cols.indexOf('expect');
  if (fileCol < 0 || expectCol < 0) return map;
  for (const row of rows) {
    const cells = row.split('\t');
    const file = cells[fileCol];
    if (file) map.set(file.endsWith('.xml') ? file : `${file}.xml`, cells[expectCol] ?? '');
  }
  return map;
}

/** The reason an error stopped a document, in a form that groups: code and path without indexes. */
function reasonOf(err: unknown): { reason: string; detail: string } {
  if (VirtError.is(err)) {
    const path = typeof err.details.path === 'string' ? err.details.path : '(no path)';
    const general = path.replace(/\[\d+\]/g, '').replace(/\.\d+(?=\.|$)/g, '.N');
    return { reason: `${err.code} ${general}`, detail: err.message };
  }
  const name = err instanceof Error ? err.constructor.name : typeof err;
  const message = err instanceof Error ? err.message : String(err);
  return { reason: `NOT-A-VIRTERROR ${name}`, detail: message };
}

/** A command-line context with made-up descriptor numbers: only the argv's shape matters here. */
function fakeContext(def: DomainDefinition): Parameters<typeof buildCommandLine>[1] {
  return {
    monitorFd: 3,
    consolePath: '/run/virtkit-corpus/console.log',
    homeDir: '/var/lib/virtkit-corpus',
    hugepageMounts: { 2048: '/dev/hugepages', 1048576: '/dev/hugepages1G' },
    defaultHugepageKiB: 2048,
    diskFds: def.disks.map((_, i) => 10 + i),
    backingFds: def.disks.map((d, i) => (d.backingStore ? 50 + i : undefined)),
    tapFds: def.interfaces.map((nic, i) => (nic.type === 'ethernet' ? [100 + i] : undefined)),
    firmware: resolveFirmware(def, '/var/lib/virtkit-corpus/nvram'),
    nowMs: 0,
    runDir: '/run/virtkit-corpus',
  };
}

function measure(path: string, dir: string, expect: string): Outcome {
  const file = relative(dir, path);
  const base = { file, dir, expect };
  const xml = readFileSync(path, 'utf8');
  let def: DomainDefinition;
  try {
    def = resolveDomainXml(xml);
  } catch (err) {
    return { ...base, failed: 'parse', ...reasonOf(err) };
  }
  try {
    const out = formatDomainXml(def);
    const again = resolveDomainXml(out);
    if (!isDeepStrictEqual(again, xmlCanonical(def))) {
      const diff = Object.keys({ ...again, ...def }).filter(
        (k) =>
          !isDeepStrictEqual(
            (again as Record<string, unknown>)[k],
            (xmlCanonical(def) as Record<string, unknown>)[k],
          ),
      );
      return { ...base, failed: 'roundtrip', reason: `differs in ${diff.join(',')}`, detail: diff.join(',') };
    }
    if (formatDomainXml(again) !== out) {
      return { ...base, failed: 'roundtrip', reason: 'formatting is not a fixed point', detail: '' };
    }
  } catch (err) {
    return { ...base, failed: 'roundtrip', ...reasonOf(err) };
  }
  try {
    buildCommandLine(def, fakeContext(def));
  } catch (err) {
    return { ...base, failed: 'cmdline', ...reasonOf(err) };
  }
  return base;
}

/** Offset of a 1-based line and column in `xml`. */
function offsetOf(xml: string, line: number, column: number): number {
  let at = 0;
  for (let l = 1; l < line; l++) at = xml.indexOf('\n', at) + 1;
  return at + column - 1;
}

/** `xml` without the element or attribute `err` names, or undefined when it names neither. */
function withoutBlocker(xml: string, err: unknown): string | undefined {
  if (!VirtError.is(err)) return undefined;
  const { path, line, column } = err.details;
  if (typeof path !== 'string' || typeof line !== 'number' || typeof column !== 'number') return undefined;
  const start = offsetOf(xml, line, column);
  const tag = /^<([A-Za-z_][\w.:-]*)/.exec(xml.slice(start, start + 200));
  if (!tag) return undefined;
  const name = tag[1] as string;
  const headEnd = xml.indexOf('>', start);
  if (headEnd < 0) return undefined;
  const attr = /\/@([\w:.-]+)$/.exec(path)?.[1];
  if (attr) {
    const head = xml.slice(start, headEnd);
    const re = new RegExp(`\\s${attr.replace(/[.]/g, '\\.')}\\s*=\\s*(['"])[^'"]*\\1`);
    if (!re.test(head)) return undefined;
    return xml.slice(0, start) + head.replace(re, '') + xml.slice(headEnd);
  }
  if (!path.endsWith(name) && !new RegExp(`/${name}(\\[\\d+\\])?$`).test(path)) return undefined;
  if (xml[headEnd - 1] === '/') return xml.slice(0, start) + xml.slice(headEnd + 1);
  let depth = 1;
  const re = new RegExp(`<(/?)${name}(?=[\\s/>])[^>]*?(/?)>`, 'g');
  re.lastIndex = headEnd + 1;
  for (let m = re.exec(xml); m; m = re.exec(xml)) {
    if (m[1]) depth--;
    else if (!m[2]) depth++;
    if (depth === 0) return xml.slice(0, start) + xml.slice(m.index + m[0].length);
  }
  return undefined;
}

/** Every reason that blocks parsing `path`, found by removing one blocker after the other. */
function blockersOf(path: string): string[] {
  let xml = readFileSync(path, 'utf8');
  const found: string[] = [];
  for (let round = 0; round < 200; round++) {
    try {
      resolveDomainXml(xml);
      return found;
    } catch (err) {
      found.push(reasonOf(err).reason);
      const next = withoutBlocker(xml, err);
      if (next === undefined) return found;
      xml = next;
    }
  }
  return found;
}

function main(): void {
  const args = process.argv.slice(2);
  const verbose = args.includes('--verbose');
  const json = args.includes('--json');
  const dirs = args.filter((a) => !a.startsWith('--'));
  if (dirs.length === 0) {
    console.error('usage: npm run corpus -- DIR [DIR…] [--verbose] [--json]');
    process.exit(2);
  }
  const outcomes: Outcome[] = [];
  for (const top of dirs) {
    const files = xmlFiles(top);
    for (const path of files) {
      const sub = join(path, '..');
      const expect = expectations(sub).get(basename(path)) ?? '';
      outcomes.push(measure(path, sub, expect));
    }
  }
  const groups = new Map<string, Outcome[]>();
  for (const o of outcomes) {
    const key = o.expect ? `${o.dir} [${o.expect}]` : o.dir;
    groups.set(key, [...(groups.get(key) ?? []), o]);
  }
  const figures = [...groups].map(([group, list]) => ({
    group,
    documents: list.length,
    parse: list.filter((o) => o.failed !== 'parse').length,
    roundtrip: list.filter((o) => o.failed !== 'parse' && o.failed !== 'roundtrip').length,
    cmdline: list.filter((o) => !o.failed).length,
  }));
  const reasons = new Map<string, { count: number; example: string }>();
  for (const o of outcomes) {
    if (!o.failed || o.expect === 'invalid') continue;
    const key = `${o.failed}: ${o.reason}`;
    const r = reasons.get(key) ?? { count: 0, example: `${o.file}: ${o.detail ?? ''}` };
    r.count++;
    reasons.set(key, r);
  }
  const ranked = [...reasons].sort((a, b) => b[1].count - a[1].count);
  if (args.includes('--blockers')) {
    const counts = new Map<string, number>();
    for (const o of outcomes) {
      if (o.failed !== 'parse' || o.expect === 'invalid') continue;
      for (const r of new Set(blockersOf(join(o.dir, o.file)))) counts.set(r, (counts.get(r) ?? 0) + 1);
    }
    console.log('every parse blocker (documents blocked), most frequent first:');
    for (const [r, n] of [...counts].sort((a, b) => b[1] - a[1]))
      console.log(`  ${String(n).padStart(4)}  ${r}`);
    console.log('');
  }
  const foreign = outcomes.filter((o) => o.reason?.startsWith('NOT-A-VIRTERROR')).length;
  if (json) {
    console.log(JSON.stringify({ figures, reasons: Object.fromEntries(ranked), foreign }, null, 2));
    return;
  }
  if (verbose) {
    for (const o of outcomes) {
      console.log(`${o.failed ? `FAIL ${o.failed}` : 'ok'}\t${join(o.dir, o.file)}\t${o.detail ?? ''}`);
    }
    console.log('');
  }
  console.log('documents: parse / round-trip / command line');
  for (const f of figures) {
    console.log(`  ${f.group}: ${f.documents} documents: ${f.parse} / ${f.roundtrip} / ${f.cmdline}`);
  }
  console.log(`exceptions other than VirtError: ${foreign}`);
  console.log('\nreasons (documents not expected invalid), most frequent first:');
  for (const [key, r] of ranked) {
    console.log(`  ${String(r.count).padStart(4)}  ${key}\n        e.g. ${r.example.slice(0, 200)}`);
  }
}

main();

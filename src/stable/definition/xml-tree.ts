import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { ErrorCode, VirtError } from '../../errors.js';

/*
 * The XML layer below the libvirt mapping: checks that a document is well-formed (fast-xml-parser's
 * XMLValidator plus the few rules it does not enforce), reads it with fast-xml-parser in
 * preserve-order mode and turns the result into a small element tree with resolved namespaces and
 * an XPath-like path on every element (see xml-parse.ts for the path format).
 */

/** An element of a parsed document. @internal */
export interface XmlElement {
  /** The name as written, with its prefix (`disk`, `qemu:arg`). */
  readonly qname: string;
  /** The local part of the name. */
  readonly local: string;
  /** The namespace URI the element is in; `''` for none. */
  readonly ns: string;
  /** Attributes by their name as written (`type`, `xmlns:qemu` excluded), values decoded. */
  readonly attrs: ReadonlyMap<string, string>;
  /** Child elements in document order. */
  readonly children: readonly XmlElement[];
  /** The element's own character data (text and CDATA), concatenated, decoded. */
  readonly text: string;
  /** The element's path, e.g. `/domain/devices/disk[2]`. */
  readonly path: string;
  /** 1-based line and column of the element's start tag. */
  readonly line: number;
  readonly column: number;
}

/** Marks every element name so that no XML name can collide with an object property. */
const TAG_MARK = '=';
const ATTR_MARK = '@';
const CDATA = '#cdata';
const TEXT = '#text';

const parser = new XMLParser({
  preserveOrder: true,
  ignoreAttributes: false,
  attributeNamePrefix: ATTR_MARK,
  // Idempotent: fast-xml-parser applies the transformation twice to self-closing tags.
  transformTagName: (name) => (name.startsWith(TAG_MARK) ? name : TAG_MARK + name),
  allowBooleanAttributes: false,
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: false,
  // References are decoded here, after the prescan has checked every one of them.
  processEntities: false,
  cdataPropName: CDATA,
  ignoreDeclaration: true,
  ignorePiTags: true,
  captureMetaData: true,
  maxNestedTags: 256,
});
const META = XMLParser.getMetaDataSymbol() as unknown as symbol;

/** Characters XML 1.0 allows in a document. */
const ILLEGAL_CHAR = /[^\t\n\r\u0020-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/u;

/** True when `value` holds a character that an XML 1.0 document cannot carry. @internal */
export function hasIllegalXmlChar(value: string): boolean {
  return ILLEGAL_CHAR.test(value);
}

type Locate = (index: number) => { line: number; column: number };

/** Maps offsets of `xml` to 1-based lines and columns (by bisection over the line starts). */
function locator(xml: string): Locate {
  const starts = [0];
  for (let i = xml.indexOf('\n'); i !== -1; i = xml.indexOf('\n', i + 1)) starts.push(i + 1);
  return (index) => {
    let lo = 0;
    let hi = starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if ((starts[mid] as number) <= index) lo = mid;
      else hi = mid - 1;
    }
    return { line: lo + 1, column: index - (starts[lo] as number) + 1 };
  };
}

function position(xml: string, index: number): { line: number; column: number } {
  return locator(xml.slice(0, index))(index);
}

function malformed(xml: string, index: number, message: string): VirtError {
  const at = position(xml, index);
  return new VirtError(
    ErrorCode.XML_ERROR,
    `malformed XML at line ${at.line}, column ${at.column}: ${message}`,
    at,
  );
}

/** XML's five predefined entities: the only ones a document without a DTD may use. */
const PREDEFINED = new Set(['amp', 'lt', 'gt', 'quot', 'apos']);

/** Checks the reference at `xml[index]` (an `&`); returns the index after it. */
function checkReference(xml: string, index: number): number {
  const ref = /&([^;&<\s'"]*)(;?)/y;
  ref.lastIndex = index;
  const m = ref.exec(xml) as RegExpExecArray;
  const [whole, name = '', semi] = m;
  const numeric = /^#(?:x([0-9a-fA-F]+)|([0-9]+))$/.exec(name);
  if (!semi || !(numeric || PREDEFINED.has(name))) {
    throw malformed(
      xml,
      index,
      `'&${name.slice(0, 40)}${semi}' is not a reference XML knows; write '&amp;' for '&'`,
    );
  }
  if (numeric) {
    const code = numeric[1] ? Number.parseInt(numeric[1], 16) : Number(numeric[2]);
    if (!(code <= 0x10ffff) || ILLEGAL_CHAR.test(String.fromCodePoint(code))) {
      throw malformed(xml, index, `'&${name.slice(0, 40)};' refers to a character XML does not allow`);
    }
  }
  return index + whole.length;
}

/** The constructs whose content is not markup: where they end and what they are called. */
const OPAQUE = [
  ['<!--', '-->', 'comment'],
  ['<![CDATA[', ']]>', 'CDATA section'],
  ['<?', '?>', 'processing instruction'],
] as const;

/**
 * The well-formedness rules fast-xml-parser's validator lets through: characters XML forbids,
 * references to undeclared entities or to forbidden characters, `<` in an attribute value, a
 * DOCTYPE (which virtkit does not accept: it could declare entities), content outside the root
 * element. Returns the document with comments, CDATA sections and processing instructions blanked
 * out (line ends kept, so offsets stay valid).
 *
 * One pass from left to right: every search starts where the previous construct ended and an
 * unterminated construct ends the scan with an error, so the time is linear in the document's
 * length whatever it holds (a search from every start of a construct to a terminator that never
 * comes was quadratic).
 */
function prescan(xml: string): string {
  const illegal = ILLEGAL_CHAR.exec(xml);
  if (illegal) {
    const code = illegal[0].codePointAt(0) ?? 0;
    throw malformed(
      xml,
      illegal.index,
      `character U+${code.toString(16).padStart(4, '0')} is not allowed in XML`,
    );
  }
  const masked: string[] = [];
  let copied = 0;
  const blank = (from: number, to: number): void => {
    masked.push(xml.slice(copied, from), xml.slice(from, to).replace(/[^\n]/g, ' '));
    copied = to;
  };
  const next = /[<&]/g;
  let i = 0;
  for (;;) {
    next.lastIndex = i;
    const hit = next.exec(xml);
    if (!hit) break;
    i = hit.index;
    if (xml[i] === '&') {
      i = checkReference(xml, i);
      continue;
    }
    const opaque = OPAQUE.find(([open]) => xml.startsWith(open, i));
    if (opaque) {
      const [open, close, what] = opaque;
      const end = xml.indexOf(close, i + open.length);
      if (end === -1) throw malformed(xml, i, `the ${what} is not terminated by '${close}'`);
      blank(i, end + close.length);
      i = end + close.length;
      continue;
    }
    if (xml.slice(i, i + 9).toUpperCase() === '<!DOCTYPE') {
      const at = position(xml, i);
      throw new VirtError(
        ErrorCode.CONFIG_UNSUPPORTED,
        `a document type declaration (line ${at.line}) is not accepted in a domain document; remove it`,
        { path: '/', ...at },
      );
    }
    i = scanTag(xml, i + 1);
  }
  masked.push(xml.slice(copied));
  return masked.join('');
}

/** Scans a start or end tag from after its `<`; returns the index after its `>`. */
function scanTag(xml: string, from: number): number {
  const next = /[>'"]/g;
  let i = from;
  for (;;) {
    next.lastIndex = i;
    const hit = next.exec(xml);
    if (!hit) throw malformed(xml, from - 1, "the tag is not terminated by '>'");
    if (hit[0] === '>') return hit.index + 1;
    const quote = hit[0];
    const end = xml.indexOf(quote, hit.index + 1);
    if (end === -1) throw malformed(xml, hit.index, 'the attribute value is not terminated');
    // Searched within the value only, so a tag with many attributes is still scanned once.
    const value = xml.slice(hit.index + 1, end);
    const lt = value.indexOf('<');
    if (lt !== -1) {
      throw malformed(xml, hit.index + 1 + lt, "'<' is not allowed in an attribute value; write '&lt;'");
    }
    for (let amp = value.indexOf('&'); amp !== -1; amp = value.indexOf('&', amp + 1)) {
      checkReference(xml, hit.index + 1 + amp);
    }
    i = end + 1;
  }
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

function decode(raw: string): string {
  return raw.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|amp|lt|gt|quot|apos);/g, (_m, ref: string) => {
    if (ref.startsWith('#x')) return String.fromCodePoint(Number.parseInt(ref.slice(2), 16));
    if (ref.startsWith('#')) return String.fromCodePoint(Number(ref.slice(1)));
    return ENTITIES[ref] ?? '';
  });
}

type FxpNode = Record<string | symbol, unknown>;

interface Meta {
  startIndex?: number;
  endIndex?: number;
}

function tagOf(node: FxpNode): string | undefined {
  return Object.keys(node).find((k) => k.startsWith(TAG_MARK));
}

function textOf(nodes: unknown): string {
  if (!Array.isArray(nodes)) return '';
  return nodes.map((n: FxpNode) => (typeof n[TEXT] === 'string' ? n[TEXT] : '')).join('');
}

/**
 * The largest domain XML document virtkit reads: 1 MiB of UTF-8. libvirt's own ceilings are 4 MiB
 * for a string over its RPC and 10 MiB for a file virsh reads; real definitions are a few KiB
 * (the largest of libvirt 9.0's own test inputs is 20 KiB), and reading a document blocks the event
 * loop for time proportional to its size (about a second per MiB on a slow machine), so the limit
 * is kept well below libvirt's.
 * @internal
 */
export const MAX_XML_BYTES = 1024 * 1024;

/** Options of {@link readXmlTree}. @internal */
export interface ReadXmlOptions {
  /** The size limit in bytes of UTF-8; {@link MAX_XML_BYTES} unless given (tests of linearity lift it). */
  readonly maxBytes?: number;
}

/**
 * Reads a document into an element tree. Throws `XML_ERROR` with `line` and `column` for a
 * document that is not well-formed or not namespace-well-formed, and `XML_ERROR` with `size` and
 * `limit` for a document larger than {@link MAX_XML_BYTES}.
 * @internal
 */
export function readXmlTree(input: string, options: ReadXmlOptions = {}): XmlElement {
  if (typeof input !== 'string') {
    throw new VirtError(ErrorCode.XML_ERROR, 'a domain XML document must be a string');
  }
  const limit = options.maxBytes ?? MAX_XML_BYTES;
  // Cheap test first: a UTF-16 unit is 1 to 3 bytes of UTF-8.
  if (input.length * 3 > limit) {
    const size = Buffer.byteLength(input, 'utf8');
    if (size > limit) {
      throw new VirtError(
        ErrorCode.XML_ERROR,
        `the domain XML document is ${size} bytes, more than the limit of ${limit} bytes; a domain definition is a few KiB: remove what does not belong in it`,
        { size, limit },
      );
    }
  }
  // XML's end-of-line handling: CR LF and lone CR read as LF.
  const xml = input.replace(/\r\n?/g, '\n');
  const verdict = XMLValidator.validate(xml, { allowBooleanAttributes: false });
  if (verdict !== true) {
    const { msg, line, col } = verdict.err;
    // Without a column ("Start tag expected."), the error is at the end of the document.
    if (col === undefined) throw malformed(xml, xml.length, msg);
    throw new VirtError(ErrorCode.XML_ERROR, `malformed XML at line ${line}, column ${col}: ${msg}`, {
      line,
      column: col,
    });
  }
  const masked = prescan(xml);
  let nodes: FxpNode[];
  try {
    nodes = parser.parse(xml) as FxpNode[];
  } catch (err) {
    throw new VirtError(
      ErrorCode.XML_ERROR,
      `malformed XML: ${err instanceof Error ? err.message : String(err)}`,
      {},
      { cause: err },
    );
  }
  const roots = nodes.filter((n) => tagOf(n) !== undefined);
  const root = roots[0];
  if (!root) throw malformed(xml, xml.length, 'the document has no root element');
  if (roots.length > 1) {
    const second = (roots[1]?.[META] as Meta | undefined)?.startIndex ?? 0;
    throw malformed(xml, second, 'a document has exactly one root element');
  }
  const meta = root[META] as Meta | undefined;
  const start = meta?.startIndex ?? 0;
  const end = meta?.endIndex ?? xml.length;
  const before = /\S/.exec(masked.slice(0, start));
  const after = /\S/.exec(masked.slice(end));
  if (before) throw malformed(xml, before.index, 'content before the root element');
  if (after) throw malformed(xml, end + after.index, 'content after the root element');
  return build(locator(xml), root, '', new Map([['xml', 'http://www.w3.org/XML/1998/namespace']]), '');
}

function build(
  locate: Locate,
  node: FxpNode,
  parentPath: string,
  scope: ReadonlyMap<string, string>,
  step: string,
): XmlElement {
  const tag = tagOf(node) as string;
  const qname = tag.slice(TAG_MARK.length);
  const meta = node[META] as Meta | undefined;
  const at = locate(meta?.startIndex ?? 0);
  const path = `${parentPath}/${step || qname}`;
  const rawAttrs = (node[':@'] ?? {}) as Record<string, string>;
  const attrs = new Map<string, string>();
  let bindings: Map<string, string> | undefined;
  const bind = (prefix: string, uri: string) => {
    bindings ??= new Map(scope);
    bindings.set(prefix, uri);
  };
  for (const [key, raw] of Object.entries(rawAttrs)) {
    const name = key.slice(ATTR_MARK.length);
    const value = decode(String(raw));
    if (name === 'xmlns') bind('', value);
    else if (name.startsWith('xmlns:')) {
      const prefix = name.slice('xmlns:'.length);
      if (!value || prefix === 'xmlns' || prefix === 'xml' || prefix.includes(':')) {
        throw nsError(path, at, `the namespace declaration ${name}='${value}' is not allowed`);
      }
      bind(prefix, value);
    } else attrs.set(name, value);
  }
  const inScope = bindings ?? scope;
  const [prefix, local, extra] = qname.includes(':') ? qname.split(':') : ['', qname];
  if (extra !== undefined || local === '' || prefix === undefined || local === undefined) {
    throw nsError(path, at, `'${qname}' is not a valid qualified name`);
  }
  const ns = inScope.get(prefix) ?? (prefix === '' ? '' : undefined);
  if (ns === undefined) throw nsError(path, at, `the prefix '${prefix}' of <${qname}> is not declared`);
  for (const name of attrs.keys()) {
    const parts = name.split(':');
    if (parts.length > 2 || parts.some((p) => p === '')) {
      throw nsError(`${path}/@${name}`, at, `'${name}' is not a valid attribute name`);
    }
    if (parts.length === 2 && !inScope.has(parts[0] as string)) {
      throw nsError(`${path}/@${name}`, at, `the prefix '${parts[0]}' of attribute ${name} is not declared`);
    }
  }

  const content = (node[tag] ?? []) as FxpNode[];
  let text = '';
  const kids: FxpNode[] = [];
  for (const child of content) {
    if (typeof child[TEXT] === 'string') text += decode(child[TEXT]);
    else if (child[CDATA] !== undefined) text += textOf(child[CDATA]);
    else if (tagOf(child) !== undefined) kids.push(child);
  }
  const counts = new Map<string, number>();
  for (const k of kids) {
    const name = tagOf(k) as string;
    counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  const seen = new Map<string, number>();
  const children = kids.map((k) => {
    const name = tagOf(k) as string;
    const n = (seen.get(name) ?? 0) + 1;
    seen.set(name, n);
    const childQname = name.slice(TAG_MARK.length);
    return build(locate, k, path, inScope, (counts.get(name) ?? 0) > 1 ? `${childQname}[${n}]` : childQname);
  });
  return { qname, local, ns, attrs, children, text, path, line: at.line, column: at.column };
}

function nsError(path: string, at: { line: number; column: number }, message: string): VirtError {
  return new VirtError(ErrorCode.XML_ERROR, `malformed XML at ${path}: ${message}`, { path, ...at });
}

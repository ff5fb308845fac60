import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { ErrorCode, VirtError } from '../errors.js';

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

/**
 * The well-formedness rules fast-xml-parser's validator lets through: characters XML forbids,
 * references to undeclared entities or to forbidden characters, a DOCTYPE (which virtkit does not
 * accept: it could declare entities), content outside the root element.
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
  // Comments, CDATA sections and processing instructions, blanked out with their positions kept.
  const masked = xml.replace(/<!--[\s\S]*?-->|<!\[CDATA\[[\s\S]*?\]\]>|<\?[\s\S]*?\?>/g, (m) =>
    m.replace(/[^\n]/g, ' '),
  );
  const doctype = /<!DOCTYPE/i.exec(masked);
  if (doctype) {
    const at = position(xml, doctype.index);
    throw new VirtError(
      ErrorCode.CONFIG_UNSUPPORTED,
      `a document type declaration (line ${at.line}) is not accepted in a domain document; remove it`,
      { path: '/', ...at },
    );
  }
  for (const m of masked.matchAll(/&([^;&<\s]*)(;?)/g)) {
    const [, name = '', semi] = m;
    const numeric = /^#(?:x([0-9a-fA-F]+)|([0-9]+))$/.exec(name);
    if (!semi || !(numeric || ['amp', 'lt', 'gt', 'quot', 'apos'].includes(name))) {
      throw malformed(xml, m.index, `'&${name}${semi}' is not a reference XML knows; write '&amp;' for '&'`);
    }
    if (numeric) {
      const code = numeric[1] ? Number.parseInt(numeric[1], 16) : Number(numeric[2]);
      if (!(code <= 0x10ffff) || ILLEGAL_CHAR.test(String.fromCodePoint(code))) {
        throw malformed(xml, m.index, `'&${name};' refers to a character XML does not allow`);
      }
    }
  }
  return masked;
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
 * Reads a document into an element tree. Throws `XML_ERROR` with `line` and `column` for a
 * document that is not well-formed or not namespace-well-formed.
 * @internal
 */
export function readXmlTree(input: string): XmlElement {
  if (typeof input !== 'string') {
    throw new VirtError(ErrorCode.XML_ERROR, 'a domain XML document must be a string');
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

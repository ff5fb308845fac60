import { ErrorCode, VirtError } from '../../errors.js';
import { readXmlTree, type XmlElement } from './xml-tree.js';

/*
 * libvirt's `<metadata>`: the application's own elements, kept verbatim. They are stored as XML
 * text in a canonical form (namespaces declared where an element's prefix first needs them,
 * single-quoted attributes, no whitespace-only text between elements), so that reading the text
 * back gives the same text, and a typed definition's `metadata` can never carry anything but
 * well-formed elements into the XML virtkit writes.
 */

const escapeText = (value: string): string =>
  value.replace(/[&<>\r]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '\r': '&#13;' })[c] ?? c);

const escapeAttr = (value: string): string =>
  value.replace(
    /[&<>'\n\r\t]/g,
    (c) =>
      ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', "'": '&apos;', '\n': '&#10;', '\r': '&#13;', '\t': '&#9;' })[
        c
      ] ?? c,
  );

function prefixOf(qname: string): string {
  const i = qname.indexOf(':');
  return i < 0 ? '' : qname.slice(0, i);
}

function serialize(el: XmlElement, scope: ReadonlyMap<string, string>, out: string[]): void {
  const prefix = prefixOf(el.qname);
  let attrs = '';
  let inner = scope;
  if (scope.get(prefix) !== el.ns) {
    attrs += prefix ? ` xmlns:${prefix}='${escapeAttr(el.ns)}'` : ` xmlns='${escapeAttr(el.ns)}'`;
    inner = new Map(scope).set(prefix, el.ns);
  }
  for (const [name, value] of el.attrs) {
    if (name.includes(':') && !name.startsWith('xml:')) {
      throw new VirtError(
        ErrorCode.CONFIG_UNSUPPORTED,
        `${el.path}/@${name}: a namespaced attribute in <metadata> is not supported by virtkit; use an element or an attribute without prefix`,
        { path: `${el.path}/@${name}`, line: el.line, column: el.column },
      );
    }
    attrs += ` ${name}='${escapeAttr(value)}'`;
  }
  const text = el.children.length > 0 && el.text.trim() === '' ? '' : el.text;
  if (el.children.length === 0 && text === '') {
    out.push(`<${el.qname}${attrs}/>`);
    return;
  }
  out.push(`<${el.qname}${attrs}>`, escapeText(text));
  for (const c of el.children) serialize(c, inner, out);
  out.push(`</${el.qname}>`);
}

/** The canonical text of the children of a `<metadata>` element. */
export function metadataText(el: XmlElement): string {
  const out: string[] = [];
  for (const c of el.children) {
    if (c.ns === '') {
      throw new VirtError(
        ErrorCode.XML_ERROR,
        `invalid domain XML at ${c.path}: an element in <metadata> needs its own namespace (xmlns:app='…'), as libvirt requires`,
        { path: c.path, line: c.line, column: c.column },
      );
    }
    serialize(c, new Map([['', '']]), out);
  }
  return out.join('');
}

/**
 * Checks a typed definition's `metadata` and returns it in canonical form: elements only, each
 * with a namespace.
 */
export function canonicalMetadata(text: string): string {
  try {
    const tree = readXmlTree(`<metadata>${text}</metadata>`);
    if (tree.text.trim() !== '') {
      throw new VirtError(ErrorCode.XML_ERROR, 'metadata holds elements, not text', { path: 'metadata' });
    }
    return metadataText(tree);
  } catch (err) {
    throw new VirtError(
      ErrorCode.XML_ERROR,
      `invalid domain definition: metadata: ${VirtError.is(err) ? err.message : 'not well-formed XML'}`,
      { path: 'metadata' },
      { cause: err },
    );
  }
}

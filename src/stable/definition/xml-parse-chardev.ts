import {
  check,
  child,
  childrenOf,
  choice,
  ignoredAttr,
  invalid,
  type Obj,
  type Origins,
  parseUint,
  type Shape,
  set,
} from './xml-parse-rules.js';
import type { XmlElement } from './xml-tree.js';

/*
 * The host side of `<serial>`, `<parallel>` and `<console>`: the type, `<source>` (two for udp),
 * `<protocol>` and `<log>` (schema-chardev.ts).
 *
 * Typed API ↔ XML decisions:
 * - A tcp `<source>` without `mode` connects, as in libvirt.
 * - `<protocol type='raw'/>` on a unix chardev is accepted without effect: a UNIX socket carries
 *   the bytes as they are (libvirt reads a protocol for tcp only).
 * - `<source tls='no'>` is accepted without effect: virtkit never puts TLS on a chardev (libvirt
 *   would only with `chardev_tls` in its qemu.conf); `tls='yes'` is refused.
 */

const SUPPORTED = ['file', 'pty', 'unix', 'dev', 'pipe', 'null', 'vc', 'tcp', 'udp'] as const;
// What libvirt knows and QEMU here cannot do or virtkit does not offer (stdio belongs to virtkit's log).
const KNOWN = ['stdio', 'spicevmc', 'spiceport', 'nmdm', 'qemu-vdagent', 'dbus'];

function port(el: XmlElement, attr: string): number {
  const value = el.attrs.get(attr);
  if (value === undefined) throw invalid(el, `<${el.qname}> needs a ${attr} (a port number)`, attr);
  const n = parseUint(el, value, `the ${attr}`, attr);
  if (n > 65535) throw invalid(el, `the ${attr} ${n} is not a port number (0 to 65535)`, attr);
  return n;
}

function tcpSource(src: XmlElement, field: string, origins: Origins, out: Obj): void {
  check(src, { attrs: ['mode', 'host', 'service', 'tls'] });
  origins.note(`${field}.host`, src, 'host');
  out.mode = choice(
    src,
    src.attrs.get('mode') ?? 'connect',
    'the socket mode',
    ['bind', 'connect'],
    [],
    'mode',
  );
  const host = src.attrs.get('host');
  if (host === undefined) throw invalid(src, 'a tcp <source> needs a host', 'host');
  out.host = host;
  out.service = port(src, 'service');
  const tls = src.attrs.get('tls');
  if (tls !== undefined) choice(src, tls, 'TLS on a chardev', ['no'], ['yes'], 'tls');
}

function udpSources(sources: XmlElement[], field: string, origins: Origins, out: Obj): void {
  if (sources.length > 2) throw invalid(sources[2] as XmlElement, 'a udp chardev has at most two <source>');
  let connect = false;
  for (const src of sources) {
    check(src, { attrs: ['mode', 'host', 'service'] });
    const mode = choice(
      src,
      src.attrs.get('mode') ?? 'connect',
      'the socket mode',
      ['bind', 'connect'],
      [],
      'mode',
    );
    origins.note(`${field}.${mode === 'bind' ? 'bindHost' : 'host'}`, src, 'host');
    if (mode === 'bind') {
      set(out, 'bindHost', src.attrs.get('host'));
      if (src.attrs.has('service')) out.bindService = port(src, 'service');
    } else {
      if (connect) throw invalid(src, 'a udp chardev has one <source mode="connect">', 'mode');
      connect = true;
      set(out, 'host', src.attrs.get('host'));
      out.service = port(src, 'service');
    }
  }
  if (!connect) {
    throw invalid(
      sources[0] as XmlElement,
      "a udp chardev needs <source mode='connect' host service> (where datagrams go)",
    );
  }
}

/**
 * The type, source, protocol and log of a `<serial>`, `<parallel>` or `<console>`; its `<target>` is
 * checked against `targetShape` and returned for the caller.
 */
export function parseCharSource(
  origins: Origins,
  el: XmlElement,
  field: string,
  targetShape: Shape,
): { source: Obj; target?: XmlElement } {
  const type = el.attrs.get('type');
  if (type === undefined)
    throw invalid(el, `<${el.qname}> needs a type such as 'pty', 'file' or 'unix'`, 'type');
  origins.note(`${field}.type`, el, 'type');
  const kind = choice(el, type, `the ${el.local} type`, SUPPORTED, KNOWN, 'type');
  const children = ['source', 'target', 'log'];
  if (kind === 'tcp' || kind === 'unix') children.push('protocol');
  check(el, { attrs: ['type', 'tty'], children, repeat: kind === 'udp' ? ['source'] : [] });
  const source: Obj = { type: kind };
  const sources = childrenOf(el, 'source');
  const src = sources[0];
  if (kind === 'udp') {
    if (!src) throw invalid(el, "a udp <serial> needs <source mode='connect' host service/>");
    udpSources(sources, field, origins, source);
  } else if (kind === 'tcp') {
    if (!src) throw invalid(el, 'a tcp chardev needs <source mode host service/>');
    tcpSource(src, field, origins, source);
    const protocol = child(el, 'protocol');
    if (protocol) {
      check(protocol, { attrs: ['type'] });
      origins.note(`${field}.protocol`, protocol, 'type');
      source.protocol = choice(
        protocol,
        protocol.attrs.get('type') ?? 'raw',
        'the chardev protocol',
        ['raw', 'telnet'],
        ['telnets', 'tls'],
        'type',
      );
    }
  } else if (kind === 'null' || kind === 'vc') {
    if (src) check(src, {});
  } else if (src) {
    const attrs = kind === 'unix' ? ['mode', 'path'] : kind === 'file' ? ['path', 'append'] : ['path'];
    check(src, { attrs });
    origins.note(`${field}.path`, src, 'path');
    // A pty's path is the one a running domain got: output only.
    if (kind !== 'pty') set(source, 'path', src.attrs.get('path'));
    const mode = src.attrs.get('mode');
    if (mode !== undefined) {
      origins.note(`${field}.mode`, src, 'mode');
      source.mode = choice(src, mode, 'the socket mode', ['bind', 'connect'], [], 'mode');
    }
    const append = src.attrs.get('append');
    if (append !== undefined) {
      origins.note(`${field}.append`, src, 'append');
      source.append = choice(src, append, 'append', ['on', 'off'], [], 'append') === 'on';
    }
  }
  const unixProtocol = kind === 'unix' ? child(el, 'protocol') : undefined;
  if (unixProtocol) {
    check(unixProtocol, { attrs: ['type'] });
    ignoredAttr(unixProtocol, 'type', ['raw']);
  }
  if (!src && (kind === 'unix' || kind === 'dev' || kind === 'pipe'))
    throw invalid(el, `a ${kind} <${el.qname}> needs <source path='/…'/>`);
  const log = child(el, 'log');
  if (log) {
    check(log, { attrs: ['file', 'append'] });
    origins.note(`${field}.log`, log, 'file');
    const file = log.attrs.get('file');
    if (file === undefined) throw invalid(log, '<log> needs a file', 'file');
    const l: Obj = { file };
    const append = log.attrs.get('append');
    if (append !== undefined) l.append = choice(log, append, 'append', ['on', 'off'], [], 'append') === 'on';
    source.log = l;
  }
  const target = child(el, 'target');
  if (target) check(target, targetShape);
  return target ? { source, target } : { source };
}

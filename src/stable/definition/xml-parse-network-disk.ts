import { networkDiskProtocols } from './schema-network-disk.js';
import {
  check,
  child,
  childrenOf,
  choice,
  intAttr,
  invalid,
  type Obj,
  type Origins,
  set,
  unsupported,
} from './xml-parse-rules.js';
import type { XmlElement } from './xml-tree.js';

/*
 * The `<source>` of a `<disk type='network'>`. libvirt's other protocols (gluster, rbd, nfs, ssh,
 * vxhs, sheepdog, tftp) are refused with their path, as are secrets: `<auth>` (virtkit has no
 * secret store) and `<cookies>` (libvirt passes them to QEMU as secrets), and TLS (`tls='yes'`
 * needs x509 credentials virtkit does not manage).
 */

const OTHER_PROTOCOLS = ['gluster', 'rbd', 'nfs', 'ssh', 'vxhs', 'sheepdog', 'tftp'];

/** Refuses an `<auth>` (under `<disk>` or `<source>`) with the reason. */
export function refuseAuth(auth: XmlElement): never {
  throw unsupported(
    auth,
    'authentication with a libvirt secret (<auth>; virtkit has no secret store and will not put a password on the command line)',
  );
}

/** A network disk's `<source>` into `out.network`. */
export function parseNetworkSource(origins: Origins, source: XmlElement, field: string, out: Obj): void {
  check(source, {
    attrs: ['protocol', 'name', 'query', 'tls', 'index'],
    children: ['host', 'auth', 'initiator', 'timeout', 'readahead', 'ssl', 'cookies'],
    repeat: ['host'],
  });
  origins.note(`${field}.network`, source);
  const protocolAttr = source.attrs.get('protocol');
  if (protocolAttr === undefined) throw invalid(source, 'a network disk source needs a protocol', 'protocol');
  origins.note(`${field}.network.protocol`, source, 'protocol');
  const protocol = choice(
    source,
    protocolAttr,
    'the network disk protocol',
    networkDiskProtocols,
    OTHER_PROTOCOLS,
    'protocol',
  );
  const tls = source.attrs.get('tls');
  if (tls === 'yes') throw unsupported(source, "TLS to the disk server (tls='yes')", 'tls');
  if (tls !== undefined && tls !== 'no')
    throw invalid(source, `tls must be 'yes' or 'no', not '${tls}'`, 'tls');
  const auth = child(source, 'auth');
  if (auth) refuseAuth(auth);
  const cookies = child(source, 'cookies');
  if (cookies)
    throw unsupported(
      cookies,
      'HTTP cookies (<cookies>; libvirt hands them to QEMU as secrets, which virtkit has not)',
    );
  const net: Obj = { protocol };
  origins.note(`${field}.network.name`, source, 'name');
  set(net, 'name', source.attrs.get('name'));
  origins.note(`${field}.network.query`, source, 'query');
  set(net, 'query', source.attrs.get('query'));
  const hosts = childrenOf(source, 'host');
  if (hosts.length === 0) throw invalid(source, 'a network disk source needs a <host>');
  origins.note(`${field}.network.hosts`, source);
  net.hosts = hosts.map((h, j) => {
    check(h, { attrs: ['name', 'port', 'transport', 'socket'] });
    origins.note(`${field}.network.hosts.${j}`, h);
    const transport = h.attrs.get('transport');
    const host: Obj = {};
    if (transport !== undefined) {
      origins.note(`${field}.network.hosts.${j}.transport`, h, 'transport');
      host.transport = choice(h, transport, 'the host transport', ['tcp', 'unix'], ['rdma'], 'transport');
    }
    origins.note(`${field}.network.hosts.${j}.name`, h, 'name');
    set(host, 'name', h.attrs.get('name'));
    origins.note(`${field}.network.hosts.${j}.port`, h, 'port');
    set(host, 'port', intAttr(h, 'port'));
    origins.note(`${field}.network.hosts.${j}.socket`, h, 'socket');
    set(host, 'socket', h.attrs.get('socket'));
    return host;
  });
  const initiator = child(source, 'initiator');
  if (initiator) {
    check(initiator, { children: ['iqn'] });
    const iqn = child(initiator, 'iqn');
    if (!iqn) throw invalid(initiator, '<initiator> needs <iqn name=…/>');
    check(iqn, { attrs: ['name'] });
    origins.note(`${field}.network.initiator`, iqn, 'name');
    set(net, 'initiator', iqn.attrs.get('name'));
  }
  const timeout = child(source, 'timeout');
  if (timeout) {
    check(timeout, { attrs: ['seconds'] });
    origins.note(`${field}.network.timeoutSeconds`, timeout, 'seconds');
    set(net, 'timeoutSeconds', intAttr(timeout, 'seconds'));
  }
  const readahead = child(source, 'readahead');
  if (readahead) {
    check(readahead, { attrs: ['size'] });
    origins.note(`${field}.network.readaheadBytes`, readahead, 'size');
    set(net, 'readaheadBytes', intAttr(readahead, 'size'));
  }
  const ssl = child(source, 'ssl');
  if (ssl) {
    check(ssl, { attrs: ['verify'] });
    origins.note(`${field}.network.sslVerify`, ssl, 'verify');
    const verify = ssl.attrs.get('verify');
    if (verify !== undefined)
      net.sslVerify = choice(ssl, verify, 'ssl verify', ['yes', 'no'], [], 'verify') === 'yes';
  }
  out.network = net;
}

import { ErrorCode, VirtError } from '../../../errors.js';
import type { DiskDefinition } from '../../../stable/definition/schema.js';
import type { QapiObject } from './qapi.js';

/*
 * The storage node of a network disk, as libvirt's qemuBlockStorageSourceGetBackendProps builds it:
 * QEMU connects to the server itself, so there is no descriptor and no fdset.
 */

type NetworkSource = NonNullable<DiskDefinition['network']>;

const DEFAULT_PORTS = { nbd: 10809, iscsi: 3260, http: 80, https: 443, ftp: 21, ftps: 990 } as const;

/** A host for a URL or an iSCSI portal: an IPv6 address in brackets. */
function hostPart(name: string): string {
  return name.includes(':') && !name.startsWith('[') ? `[${name}]` : name;
}

function tcpHost(net: NetworkSource): { name: string; port: number } {
  const host = net.hosts[0];
  if (host?.transport !== 'tcp' || host.name === undefined)
    throw new VirtError(ErrorCode.INTERNAL_ERROR, `a ${net.protocol} disk without a tcp host`);
  return { name: host.name, port: host.port ?? DEFAULT_PORTS[net.protocol] };
}

/** The `blockdev-add` arguments of a network disk's storage node (`node-name` and options excluded). */
export function networkStorageProps(net: NetworkSource): QapiObject {
  switch (net.protocol) {
    case 'nbd': {
      const host = net.hosts[0];
      let server: QapiObject;
      if (host?.transport === 'unix' && host.socket !== undefined)
        server = { type: 'unix', path: host.socket };
      else {
        const tcp = tcpHost(net);
        server = { type: 'inet', host: tcp.name, port: String(tcp.port) };
      }
      return { driver: 'nbd', server, ...(net.name !== undefined ? { export: net.name } : {}) };
    }
    case 'iscsi': {
      const { name, port } = tcpHost(net);
      // libvirt's split of "IQN/LUN": the LUN after the last slash, 0 without one.
      const [target, lun] = (net.name ?? '').split('/');
      return {
        driver: 'iscsi',
        portal: `${hostPart(name)}:${port}`,
        target: target ?? '',
        lun: lun === undefined ? 0 : Number(lun),
        transport: 'tcp',
        ...(net.initiator !== undefined ? { 'initiator-name': net.initiator } : {}),
      };
    }
    default: {
      const { name, port } = tcpHost(net);
      const path = (net.name ?? '').startsWith('/') ? net.name : `/${net.name ?? ''}`;
      const url = `${net.protocol}://${hostPart(name)}:${port}${encodeURI(path ?? '/')}${
        net.query !== undefined ? `?${net.query}` : ''
      }`;
      return {
        driver: net.protocol,
        url,
        ...(net.timeoutSeconds !== undefined ? { timeout: net.timeoutSeconds } : {}),
        ...(net.readaheadBytes !== undefined ? { readahead: net.readaheadBytes } : {}),
        ...(net.sslVerify !== undefined ? { sslverify: net.sslVerify } : {}),
      };
    }
  }
}

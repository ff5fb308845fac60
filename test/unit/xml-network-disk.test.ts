import { describe, expect, it } from 'vitest';
import { buildCommandLine } from '../../src/drivers/qemu/command-line.js';
import { formatDomainXml, resolveDomainXml } from '../../src/stable/definition/xml.js';

/*
 * `<disk type='network'>` in the shapes libvirt's tests write: the typed source, the XML written
 * back, and the storage node libvirt's qemuBlockStorageSourceGetBackendProps would build.
 */

const doc = (disks: string): string => `<domain type='kvm'>
  <name>net</name><uuid>1b4e28ba-2fa1-11d2-883f-0016d3cca427</uuid>
  <memory unit='MiB'>128</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>${disks}</devices>
</domain>`;

const ctx = { monitorFd: 4, consolePath: '/r/log/c', homeDir: '/r/lib', diskFds: [], tapFds: [] };

function storageNodes(xml: string): Array<Record<string, unknown>> {
  const def = resolveDomainXml(xml);
  expect(resolveDomainXml(formatDomainXml(def))).toEqual(def);
  const { argv } = buildCommandLine(def, ctx);
  expect(argv).not.toContain('-add-fd');
  return argv
    .filter((_, i) => argv[i - 1] === '-blockdev')
    .map((a) => JSON.parse(a) as Record<string, unknown>)
    .filter((n) => String(n['node-name']).endsWith('-storage'));
}

describe('network disks', () => {
  it('nbd over tcp (default port, IPv6) and unix, with and without an export', () => {
    const nodes = storageNodes(
      doc(`<disk type='network'><source protocol='nbd'><host name='example.org'/></source><target dev='vda'/></disk>
      <disk type='network'><source protocol='nbd' name='bar'><host name='::1' port='6000'/></source><target dev='vdb'/></disk>
      <disk type='network'><source protocol='nbd' name='bar'><host transport='unix' socket='/run/nbd.sock'/></source><target dev='vdc'/></disk>`),
    );
    expect(nodes.map(({ 'node-name': _, ...n }) => n)).toEqual([
      { driver: 'nbd', server: { type: 'inet', host: 'example.org', port: '10809' }, 'read-only': false },
      {
        driver: 'nbd',
        server: { type: 'inet', host: '::1', port: '6000' },
        export: 'bar',
        'read-only': false,
      },
      { driver: 'nbd', server: { type: 'unix', path: '/run/nbd.sock' }, export: 'bar', 'read-only': false },
    ]);
  });

  it('iscsi with a LUN and an initiator; http(s) and ftp with their URL and options', () => {
    const nodes = storageNodes(
      doc(`<disk type='network'><driver name='qemu' type='raw'/><source protocol='iscsi' name='iqn.1992-01.com.example:server/3'><host name='example.org'/><initiator><iqn name='iqn.1992-01.com.example:client'/></initiator></source><target dev='vda'/></disk>
      <disk type='network'><source protocol='iscsi' name='iqn.1992-01.com.example'><host name='::1' port='3261'/></source><target dev='vdb'/></disk>
      <disk type='network'><source protocol='http' name='test.img'><host name='example.org'/><timeout seconds='1234'/></source><target dev='vdc'/><readonly/></disk>
      <disk type='network' device='cdrom'><source protocol='https' name='/a b.iso' query='x=1&amp;y=2'><host name='example.org' port='8443'/><readahead size='1024'/><ssl verify='no'/></source><target dev='hdc'/><readonly/></disk>`),
    );
    expect(nodes.map(({ 'node-name': _, 'read-only': __, ...n }) => n)).toEqual([
      {
        driver: 'iscsi',
        portal: 'example.org:3260',
        target: 'iqn.1992-01.com.example:server',
        lun: 3,
        transport: 'tcp',
        'initiator-name': 'iqn.1992-01.com.example:client',
      },
      { driver: 'iscsi', portal: '[::1]:3261', target: 'iqn.1992-01.com.example', lun: 0, transport: 'tcp' },
      { driver: 'http', url: 'http://example.org:80/test.img', timeout: 1234 },
      {
        driver: 'https',
        url: 'https://example.org:8443/a%20b.iso?x=1&y=2',
        readahead: 1024,
        sslverify: false,
      },
    ]);
  });

  it('refuses what does not fit the protocol, naming the XML place', () => {
    const refused = (disk: string, path: string) =>
      expect(() => resolveDomainXml(doc(disk))).toThrow(
        expect.objectContaining({ details: expect.objectContaining({ path }) }),
      );
    refused(
      "<disk type='network'><source protocol='nbd'><host name='h'/><initiator><iqn name='i'/></initiator></source><target dev='vda'/></disk>",
      '/domain/devices/disk/source/initiator/iqn/@name',
    );
    refused(
      "<disk type='network'><source protocol='http' name='a'><host name='h'/><readahead size='1000'/></source><target dev='vda'/></disk>",
      '/domain/devices/disk/source/readahead/@size',
    );
    refused(
      "<disk type='network'><driver name='qemu' io='native' cache='none'/><source protocol='nbd'><host name='h'/></source><target dev='vda'/></disk>",
      '/domain/devices/disk/driver/@io',
    );
    refused("<disk type='network'><target dev='vda'/></disk>", '/domain/devices/disk');
    refused(
      "<disk type='network'><source protocol='nbd'><host name='a'/><host name='b'/></source><target dev='vda'/></disk>",
      '/domain/devices/disk/source',
    );
  });
});

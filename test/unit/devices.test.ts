import { describe, expect, it } from 'vitest';
import { assignDevices } from '../../src/drivers/qemu/devices/assign.js';
import { machineFamily } from '../../src/drivers/qemu/devices/machine.js';
import type { DomainDefinitionInput } from '../../src/stable/definition/schema.js';
import { resolveDefinition } from '../../src/stable/definition/validate.js';
import { xmlCanonical } from '../../src/stable/definition/xml.js';
import { formatDomainXml, parseDomainXml } from '../../src/stable/index.js';

const uuid = '1b4e28ba-2fa1-11d2-883f-0016d3cca427';
const def = (extra: Partial<DomainDefinitionInput> = {}) =>
  resolveDefinition({ name: 'vm', uuid, type: 'qemu', memoryKiB: 65536, ...extra });
const pci = (bus: number, slot: number, fn = 0) => ({ type: 'pci', domain: 0, bus, slot, function: fn });

const devices: Partial<DomainDefinitionInput> = {
  currentMemoryKiB: 32768,
  disks: [
    { type: 'file', source: '/a.img', target: { dev: 'vdb', bus: 'virtio' } },
    { type: 'file', source: '/b.iso', device: 'cdrom', readonly: true, target: { dev: 'sdc', bus: 'sata' } },
    { type: 'file', source: '/c.img', target: { dev: 'vda', bus: 'virtio' }, alias: 'ua-root' },
  ],
  interfaces: [
    { type: 'user', model: 'virtio' },
    { type: 'user', model: 'e1000', alias: 'net0' },
    { type: 'user', model: 'virtio' },
  ],
};

describe('device model: aliases, addresses, controllers', () => {
  it('names devices the way libvirt does, keeps user aliases, and is deterministic and idempotent', () => {
    const a = assignDevices(def({ os: { machine: 'pc-i440fx-7.2' }, ...devices }));
    expect(assignDevices(def({ os: { machine: 'pc-i440fx-7.2' }, ...devices }))).toEqual(a);
    expect(assignDevices(a)).toEqual(a);
    // virtio disks by target index, sata disks by drive address (sdc → unit 2), user aliases kept.
    expect(a.disks.map((d) => d.alias)).toEqual(['virtio-disk1', 'sata0-0-2', 'ua-root']);
    expect(a.disks[1]?.address).toEqual({ type: 'drive', controller: 0, bus: 0, target: 0, unit: 2 });
    // The lowest free netN: net0 was the user's.
    expect(a.interfaces.map((n) => n.alias)).toEqual(['net1', 'net0', 'net2']);
    expect(a.memballoon).toMatchObject({ model: 'virtio', alias: 'balloon0' });
    expect(a.controllers).toEqual([
      { type: 'usb', index: 0, model: 'none', alias: 'usb' },
      { type: 'sata', index: 0, alias: 'sata0', address: pci(0, 5) },
      { type: 'pci', index: 0, model: 'pci-root', alias: 'pci.0' },
    ]);
    // i440fx: slots 0 and 1 belong to the chipset; interfaces, controllers, disks, balloon in turn.
    expect(a.interfaces.map((n) => n.address)).toEqual([pci(0, 2), pci(0, 3), pci(0, 4)]);
    expect([a.disks[0]?.address, a.disks[2]?.address, a.memballoon?.address]).toEqual([
      pci(0, 6),
      pci(0, 7),
      pci(0, 8),
    ]);
  });

  it('puts PCIe devices behind root ports on q35, and conventional PCI behind a pcie-to-pci-bridge', () => {
    const a = assignDevices(def({ os: { machine: 'pc-q35-7.2' }, ...devices }));
    expect(assignDevices(a)).toEqual(a);
    const ports = a.controllers.filter((c) => c.type === 'pci' && c.model === 'pcie-root-port');
    // The bridge with its root port (1, added with it as libvirt does), then the virtio devices:
    // two NICs, two disks, the balloon → six ports, aggregated in slot 1 of bus 0.
    expect(ports.map((p) => [p.index, p.alias, p.address, p.type === 'pci' && p.target])).toEqual([
      [1, 'pci.1', { ...pci(0, 1, 0), multifunction: true }, { chassis: 1, port: 8 }],
      [3, 'pci.3', pci(0, 1, 1), { chassis: 3, port: 9 }],
      [4, 'pci.4', pci(0, 1, 2), { chassis: 4, port: 10 }],
      [5, 'pci.5', pci(0, 1, 3), { chassis: 5, port: 11 }],
      [6, 'pci.6', pci(0, 1, 4), { chassis: 6, port: 12 }],
      [7, 'pci.7', pci(0, 1, 5), { chassis: 7, port: 13 }],
    ]);
    // The bridge is addressed first (libvirt's PCI controllers before devices): the first port.
    expect(a.controllers).toContainEqual({
      type: 'pci',
      index: 2,
      model: 'pcie-to-pci-bridge',
      alias: 'pci.2',
      address: pci(1, 0),
    });
    expect(a.controllers).toContainEqual({ type: 'sata', index: 0, alias: 'ide', address: pci(0, 0x1f, 2) });
    expect(a.controllers).toContainEqual({ type: 'pci', index: 0, model: 'pcie-root', alias: 'pcie.0' });
    // The e1000 at slot 1 of the bridge (slot 0 is the bridge's own).
    expect(a.interfaces.map((n) => n.address)).toEqual([pci(3, 0), pci(2, 1), pci(4, 0)]);
    expect([a.disks[0]?.address, a.disks[2]?.address, a.memballoon?.address]).toEqual([
      pci(5, 0),
      pci(6, 0),
      pci(7, 0),
    ]);
    // A running q35 domain without a bridge cannot take a conventional PCI device.
    const plain = assignDevices(def({ os: { machine: 'q35' } }));
    expect(() =>
      assignDevices(
        { ...plain, interfaces: [{ type: 'user', model: 'e1000', mac: '52:54:00:00:00:01' }] } as never,
        {
          live: true,
        },
      ),
    ).toThrow(expect.objectContaining({ code: 'OPERATION_INVALID' }));
    // Nor does an i440fx machine take a bridge.
    expect(() => assignDevices(def({ controllers: [{ type: 'pci', model: 'pcie-to-pci-bridge' }] }))).toThrow(
      expect.objectContaining({ code: 'CONFIG_UNSUPPORTED', details: { path: 'controllers.0.model' } }),
    );
  });

  it('honours given addresses and spare root ports, and refuses clashes and impossible places', () => {
    const a = assignDevices(
      def({
        os: { machine: 'q35' },
        controllers: [
          { type: 'pci', model: 'pcie-root-port' },
          { type: 'pci', model: 'pcie-root-port' },
        ],
        interfaces: [{ type: 'user', model: 'virtio', address: { type: 'pci', bus: 2, slot: 0 } }],
      }),
    );
    expect(a.interfaces[0]?.address).toEqual(pci(2, 0));
    expect(a.controllers.filter((c) => c.type === 'pci').map((c) => c.index)).toEqual([0, 1, 2]);
    const i440 = assignDevices(
      def({
        interfaces: [
          { type: 'user', model: 'virtio', address: { type: 'pci', bus: 0, slot: 9 } },
          { type: 'user' },
        ],
      }),
    );
    expect(i440.interfaces.map((n) => n.address)).toEqual([pci(0, 9), pci(0, 2)]);

    const clash = { type: 'pci' as const, bus: 0, slot: 5 };
    expect(() =>
      assignDevices(
        def({
          interfaces: [{ type: 'user', address: clash }],
          disks: [{ type: 'file', source: '/a', target: { dev: 'vda', bus: 'virtio' }, address: clash }],
        }),
      ),
    ).toThrow(expect.objectContaining({ code: 'XML_ERROR', details: { path: 'disks.0.address' } }));
    expect(() =>
      assignDevices(def({ interfaces: [{ type: 'user', address: { type: 'pci', bus: 0, slot: 1 } }] })),
    ).toThrow(
      expect.objectContaining({ code: 'CONFIG_UNSUPPORTED', details: { path: 'interfaces.0.address.slot' } }),
    );
    expect(() =>
      assignDevices(def({ interfaces: [{ type: 'user', address: { type: 'pci', bus: 3, slot: 0 } }] })),
    ).toThrow(
      expect.objectContaining({ code: 'CONFIG_UNSUPPORTED', details: { path: 'interfaces.0.address.bus' } }),
    );
    expect(() =>
      assignDevices(
        def({
          interfaces: [
            { type: 'user', alias: 'ua-x' },
            { type: 'user', alias: 'ua-x' },
          ],
        }),
      ),
    ).toThrow(expect.objectContaining({ code: 'XML_ERROR', details: { path: 'interfaces.1.alias' } }));
    expect(() => assignDevices(def({ interfaces: [{ type: 'user', alias: 'bad alias' }] }))).toThrow(
      expect.objectContaining({ code: 'XML_ERROR' }),
    );
    expect(() => assignDevices(def({ controllers: [{ type: 'pci', model: 'pcie-root-port' }] }))).toThrow(
      expect.objectContaining({ code: 'CONFIG_UNSUPPORTED' }),
    );
  });

  it('tells the chipset from the machine type', () => {
    expect(['pc', 'pc-i440fx-7.2', undefined, 'q35', 'pc-q35-7.2'].map(machineFamily)).toEqual([
      'i440fx',
      'i440fx',
      'i440fx',
      'q35',
      'q35',
    ]);
  });

  it('formats aliases, addresses, controllers and the balloon back as libvirt XML, and reads them again', () => {
    const a = assignDevices(def({ os: { machine: 'pc-q35-7.2' }, ...devices }));
    const xml = formatDomainXml(a);
    expect(xml).toContain("<controller type='pci' index='1' model='pcie-root-port'>");
    expect(xml).toContain("<target chassis='1' port='0x8'/>");
    expect(xml).toContain(
      "<address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x0' multifunction='on'/>",
    );
    expect(xml).toContain("<alias name='virtio-disk1'/>");
    expect(xml).toContain("<address type='drive' controller='0' bus='0' target='0' unit='2'/>");
    expect(xml).toContain("<memballoon model='virtio'>");
    expect(resolveDefinition(parseDomainXml(xml))).toEqual(xmlCanonical(a));
  });
});

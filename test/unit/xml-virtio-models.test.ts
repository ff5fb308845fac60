import { describe, expect, it } from 'vitest';
import { buildCommandLine } from '../../src/drivers/qemu/command-line.js';
import { ErrorCode, VirtError } from '../../src/errors.js';
import { resolveDefinition } from '../../src/stable/definition/validate.js';
import { formatDomainXml, parseDomainXml } from '../../src/stable/index.js';

/*
 * Device models KubeVirt and virt-install write: virtio flavours (`virtio-non-transitional`) of
 * disks, NICs, balloon and RNG; e1000e and rtl8139 NICs (rtl8139 is libvirt's default); option
 * ROM settings; balloon statistics and free page reporting; the watchdog; what libvirt itself
 * ignores (a disk's tray state, a block source's name, an empty ethernet source).
 */

const uuid = '1b4e28ba-2fa1-11d2-883f-0016d3cca427';
const doc = (devices: string, machine = 'q35') =>
  `<domain type='qemu'><name>d</name><uuid>${uuid}</uuid><memory unit='MiB'>256</memory><os><type machine='${machine}'>hvm</type></os><devices>${devices}</devices></domain>`;
const resolve = (xml: string) => resolveDefinition(parseDomainXml(xml));
const argv = (xml: string) => {
  const def = resolve(xml);
  return buildCommandLine(def, {
    monitorFd: 3,
    consolePath: '/r/c.log',
    homeDir: '/r/lib',
    runDir: '/r/run',
    diskFds: def.disks.map((_, i) => 10 + i),
    tapFds: def.interfaces.map(() => [20]),
    nowMs: 0,
  }).argv;
};
const devicesOf = (args: readonly string[]) =>
  args
    .filter((_, i) => args[i - 1] === '-device')
    .map((a) => (a.startsWith('{') ? JSON.parse(a) : { raw: a })) as Array<Record<string, unknown>>;
const roundTrips = (xml: string) => {
  const def = resolve(xml);
  expect(resolve(formatDomainXml(def))).toStrictEqual(def);
  return def;
};
const failure = (fn: () => unknown): VirtError => {
  try {
    fn();
  } catch (err) {
    if (VirtError.is(err)) return err;
    throw err;
  }
  throw new Error('accepted');
};

describe('virtio flavours, NIC models, ROM, balloon', () => {
  const kubevirt = doc(`
    <disk device='disk' type='file' model='virtio-non-transitional'><source file='/i/a.img'/><target bus='virtio' dev='vda'/><driver name='qemu' type='raw'/></disk>
    <disk device='cdrom' type='file'><source file='/i/c.iso'/><target bus='sata' dev='sda' tray='closed'/><driver name='qemu' type='raw'/><readonly/></disk>
    <interface type='ethernet'><source></source><target dev='tap0' managed='no'/><model type='virtio-non-transitional'/><rom enabled='no'/></interface>
    <interface type='user'><model type='e1000e'/><rom bar='off'/></interface>
    <interface type='user'/>
    <memballoon model='virtio-non-transitional' freePageReporting='on'><stats period='10'/></memballoon>
    <rng model='virtio-non-transitional'><backend model='random'>/dev/urandom</backend></rng>`);

  it('parse and format back', () => {
    const def = roundTrips(kubevirt);
    expect(def.disks[0]?.model).toBe('virtio-non-transitional');
    expect(def.interfaces.map((n) => [n.model, n.rom])).toEqual([
      ['virtio-non-transitional', { enabled: false }],
      ['e1000e', { bar: false }],
      // No <model>: libvirt's default for x86.
      ['rtl8139', undefined],
    ]);
    expect(def.memballoon).toEqual({
      model: 'virtio-non-transitional',
      statsPeriod: 10,
      freePageReporting: true,
    });
    expect(def.rngs?.[0]?.model).toBe('virtio-non-transitional');
    expect(formatDomainXml(def)).toContain("<rom enabled='no'/>");
  });

  it("get QEMU's non-transitional devices, e1000e behind a root port, rtl8139 behind a bridge, ROM properties, balloon polling", () => {
    const devices = devicesOf(argv(kubevirt));
    const byId = (id: string) => devices.find((d) => d.id === id);
    expect(byId('virtio-disk0')).toMatchObject({ driver: 'virtio-blk-pci-non-transitional' });
    expect(byId('net0')).toMatchObject({ driver: 'virtio-net-pci-non-transitional', romfile: '' });
    expect(byId('net1')).toMatchObject({ driver: 'e1000e', rombar: 0 });
    expect(String(byId('net1')?.bus)).toMatch(/^pci\.\d+$/);
    // The rtl8139 is conventional PCI: behind the pcie-to-pci-bridge added for it, at slot 1.
    const bridge = devices.find((d) => d.driver === 'pcie-pci-bridge');
    expect(String(bridge?.id)).toMatch(/^pci\.\d+$/);
    expect(String(bridge?.bus)).toMatch(/^pci\.\d+$/);
    expect(byId('net2')).toMatchObject({ driver: 'rtl8139', bus: bridge?.id, addr: '0x1' });
    expect(byId('balloon0')).toMatchObject({
      driver: 'virtio-balloon-pci-non-transitional',
      'guest-stats-polling-interval': 10,
      'free-page-reporting': true,
    });
    expect(byId('rng0')).toMatchObject({ driver: 'virtio-rng-pci-non-transitional' });
  });

  it.each([
    [doc("<interface type='user'><model type='virtio-transitional'/></interface>"), 'interfaces.0.model'],
    [doc("<memballoon model='virtio-transitional'/>"), 'memballoon.model'],
  ])('a transitional device on q35 is refused (%#)', (xml, path) => {
    const err = failure(() => argv(xml));
    expect({ code: err.code, path: err.details.path }).toEqual({ code: ErrorCode.CONFIG_UNSUPPORTED, path });
  });

  it('a transitional device on pc is the transitional QEMU device', () => {
    const devices = devicesOf(
      argv(doc("<interface type='user'><model type='virtio-transitional'/></interface>", 'pc')),
    );
    expect(devices.find((d) => d.id === 'net0')).toMatchObject({
      driver: 'virtio-net-pci-transitional',
      bus: 'pci.0',
    });
  });

  it.each([
    [
      "<disk type='file' model='virtio' device='disk'><source file='/a'/><target dev='sda' bus='sata'/></disk>",
      '/domain/devices/disk/@model',
      ErrorCode.XML_ERROR,
    ],
    [
      "<disk type='file' device='cdrom'><source file='/a'/><target dev='sda' bus='sata' tray='ajar'/></disk>",
      '/domain/devices/disk/target/@tray',
      ErrorCode.XML_ERROR,
    ],
    [
      "<disk type='file'><source file='/a' name='x'/><target dev='vda'/></disk>",
      '/domain/devices/disk/source/@name',
      ErrorCode.CONFIG_UNSUPPORTED,
    ],
    [
      "<interface type='user'><model type='virtio'/><rom bar='maybe'/></interface>",
      '/domain/devices/interface/rom/@bar',
      ErrorCode.XML_ERROR,
    ],
    [
      "<memballoon model='none'><stats period='5'/></memballoon>",
      '/domain/devices/memballoon',
      ErrorCode.XML_ERROR,
    ],
  ])('%s is refused at its path', (devices, path, code) => {
    const err = failure(() => resolve(doc(devices)));
    expect({ code: err.code, path: err.details.path }).toEqual({ code, path });
  });
});

describe('watchdog', () => {
  it('i6300esb: parsed, formatted back, a PCI card with -action watchdog=', () => {
    const xml = doc("<watchdog model='i6300esb' action='poweroff'/>");
    expect(roundTrips(xml).watchdogs).toEqual([{ model: 'i6300esb', action: 'poweroff' }]);
    const args = argv(xml);
    // Conventional PCI on q35: behind the pcie-to-pci-bridge added for it, at slot 1.
    const bridge = devicesOf(args).find((d) => d.driver === 'pcie-pci-bridge');
    expect(devicesOf(args).find((d) => d.id === 'watchdog0')).toMatchObject({
      driver: 'i6300esb',
      bus: bridge?.id,
      addr: '0x1',
    });
    expect(args.join(' ')).toContain('-action watchdog=poweroff');
  });

  it("ib700 is an ISA card; the action defaults to libvirt's reset", () => {
    const args = argv(doc("<watchdog model='ib700'/>", 'pc'));
    expect(devicesOf(args).find((d) => d.id === 'watchdog0')).toEqual({ driver: 'ib700', id: 'watchdog0' });
    expect(args.join(' ')).toContain('-action watchdog=reset');
  });

  it.each([
    ["<watchdog model='itco'/>", '/domain/devices/watchdog/@model', ErrorCode.CONFIG_UNSUPPORTED],
    [
      "<watchdog model='i6300esb' action='dump'/>",
      '/domain/devices/watchdog/@action',
      ErrorCode.CONFIG_UNSUPPORTED,
    ],
    [
      "<watchdog model='i6300esb' action='explode'/>",
      '/domain/devices/watchdog/@action',
      ErrorCode.XML_ERROR,
    ],
    [
      "<watchdog model='ib700'><address type='isa' iobase='0x443'/></watchdog>",
      '/domain/devices/watchdog/address/@type',
      ErrorCode.CONFIG_UNSUPPORTED,
    ],
  ])('%s is refused at its path', (devices, path, code) => {
    const err = failure(() => resolve(doc(devices)));
    expect({ code: err.code, path: err.details.path }).toEqual({ code, path });
  });
});

describe('IDE disks on pc machines', () => {
  const ide = doc(
    `<disk type='file' device='disk'><source file='/i/a.raw'/><target dev='hda' bus='ide'/></disk>
     <disk type='file' device='cdrom'><source file='/i/c.iso'/><target dev='hdc'/><readonly/></disk>`,
    'pc',
  );

  it('parse, get drive addresses, aliases and the built-in controller as libvirt, format back', () => {
    const def = roundTrips(ide);
    // hd* without a bus is ide, as in libvirt.
    expect(def.disks.map((d) => d.target.bus)).toEqual(['ide', 'ide']);
    const devices = devicesOf(argv(ide));
    expect(devices.find((d) => d.id === 'ide0-0-0')).toMatchObject({
      driver: 'ide-hd',
      bus: 'ide.0',
      unit: 0,
    });
    expect(devices.find((d) => d.id === 'ide0-1-0')).toMatchObject({
      driver: 'ide-cd',
      bus: 'ide.1',
      unit: 0,
    });
  });

  it.each([
    [doc("<disk type='file'><source file='/a'/><target dev='hda' bus='ide'/></disk>"), 'disks.0.target.bus'],
    [doc("<controller type='ide' index='0'/>"), 'controllers.0.type'],
    [
      doc(
        "<disk type='file'><source file='/a'/><target dev='hda' bus='ide'/><address type='drive' controller='0' bus='2' target='0' unit='0'/></disk>",
        'pc',
      ),
      'disks.0.address',
    ],
  ])('what the machine has not is refused (%#)', (xml, path) => {
    const err = failure(() => argv(xml));
    expect({ code: err.code, path: err.details.path }).toEqual({ code: ErrorCode.CONFIG_UNSUPPORTED, path });
  });
});

import { describe, expect, it } from 'vitest';
import { buildCommandLine } from '../../src/drivers/qemu/command-line.js';
import { ErrorCode, VirtError } from '../../src/errors.js';
import { resolveDefinition } from '../../src/stable/definition/validate.js';
import { formatDomainXml, parseDomainXml } from '../../src/stable/index.js';

/*
 * What virt-install and KubeVirt write on disks and controllers: the disk driver's cache, io,
 * discard, error_policy and iothread, a qemu-xhci's port count, the virtio-serial controller. Each
 * is parsed, formatted back to the same definition, and given libvirt's QEMU properties.
 */

const uuid = '1b4e28ba-2fa1-11d2-883f-0016d3cca427';
const doc = (devices: string, extra = '') =>
  `<domain type='qemu'><name>d</name><uuid>${uuid}</uuid><memory unit='MiB'>256</memory>${extra}<os><type machine='q35'>hvm</type></os><devices>${devices}</devices></domain>`;
const disk = (driver: string, dev = 'vda', bus = 'virtio') =>
  `<disk type='file' device='disk'><driver name='qemu' type='qcow2' ${driver}/><source file='/i/${dev}.qcow2'/><target dev='${dev}' bus='${bus}'/></disk>`;
const resolve = (xml: string) => resolveDefinition(parseDomainXml(xml));
const ctx = {
  monitorFd: 3,
  consolePath: '/r/c.log',
  homeDir: '/r/lib',
  runDir: '/r/run',
  tapFds: [],
  nowMs: 0,
};
const argv = (xml: string) => {
  const def = resolve(xml);
  return buildCommandLine(def, { ...ctx, diskFds: def.disks.map((_, i) => 10 + i) }).argv;
};
const jsonOf = (args: readonly string[], flag: string) =>
  args.filter((_, i) => args[i - 1] === flag && args[i]?.startsWith('{')).map((a) => JSON.parse(a)) as Array<
    Record<string, unknown>
  >;
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

describe('disk driver attributes', () => {
  it('parse and format back', () => {
    const def = roundTrips(
      doc(
        disk(
          "cache='none' io='native' discard='unmap' error_policy='stop' rerror_policy='report' iothread='2'",
        ),
        '<iothreads>2</iothreads>',
      ),
    );
    expect(def.disks[0]?.driver).toEqual({
      type: 'qcow2',
      cache: 'none',
      io: 'native',
      discard: 'unmap',
      errorPolicy: 'stop',
      rerrorPolicy: 'report',
      iothread: 2,
    });
  });

  it.each([
    ['none', { direct: true, 'no-flush': false }, 'on'],
    ['writethrough', { direct: false, 'no-flush': false }, 'off'],
    ['writeback', { direct: false, 'no-flush': false }, 'on'],
    ['directsync', { direct: true, 'no-flush': false }, 'off'],
    ['unsafe', { direct: false, 'no-flush': true }, 'on'],
  ])("cache='%s' sets both nodes' cache and the device's write cache", (mode, cache, writeCache) => {
    const args = argv(doc(disk(`cache='${mode}' discard='unmap'`)));
    const [storage, format] = jsonOf(args, '-blockdev');
    expect(storage).toMatchObject({ driver: 'file', cache, discard: 'unmap' });
    expect(format).toMatchObject({ driver: 'qcow2', cache, discard: 'unmap' });
    expect(jsonOf(args, '-device').find((d) => d.driver === 'virtio-blk-pci')).toMatchObject({
      'write-cache': writeCache,
    });
  });

  it('io, error policies and the iothread reach QEMU as libvirt writes them', () => {
    const args = argv(
      doc(
        disk("cache='directsync' io='native' error_policy='enospace' iothread='1'"),
        '<iothreads>1</iothreads>',
      ),
    );
    const [storage, format] = jsonOf(args, '-blockdev');
    expect(storage).toMatchObject({ aio: 'native' });
    expect(format).not.toHaveProperty('aio');
    const device = jsonOf(args, '-device').find((d) => d.driver === 'virtio-blk-pci');
    // enospace is a write policy only: the read policy stays QEMU's default.
    expect(device).toMatchObject({ werror: 'enospc', iothread: 'iothread1' });
    expect(device).not.toHaveProperty('rerror');
    const sata = jsonOf(argv(doc(disk("error_policy='stop'", 'sda', 'sata'))), '-device').find(
      (d) => d.driver === 'ide-hd',
    );
    expect(sata).toMatchObject({ werror: 'stop', rerror: 'stop' });
  });

  it.each([
    [
      'an iothread the domain lacks',
      doc(disk("iothread='2'"), '<iothreads>1</iothreads>'),
      '/domain/devices/disk/driver/@iothread',
    ],
    [
      'an iothread on sata',
      doc(disk("iothread='1'", 'sda', 'sata'), '<iothreads>1</iothreads>'),
      '/domain/devices/disk/driver/@iothread',
    ],
    ['native io over the page cache', doc(disk("io='native'")), '/domain/devices/disk/driver/@io'],
  ])('%s is refused', (_what, xml, path) => {
    const err = failure(() => resolve(xml));
    expect(err.code).toBe(ErrorCode.XML_ERROR);
    expect(err.details.path).toBe(path);
  });

  it.each([
    ["cache='bogus'", '/domain/devices/disk/driver/@cache', ErrorCode.XML_ERROR],
    ["detect_zeroes='on'", '/domain/devices/disk/driver/@detect_zeroes', ErrorCode.CONFIG_UNSUPPORTED],
    ["io='default'", '/domain/devices/disk/driver/@io', ErrorCode.CONFIG_UNSUPPORTED],
  ])('%s is refused at its path', (attr, path, code) => {
    const err = failure(() => parseDomainXml(doc(disk(attr))));
    expect({ code: err.code, path: err.details.path }).toEqual({ code, path });
  });
});

describe('controllers', () => {
  it("a qemu-xhci's ports are both its USB 2 and USB 3 port counts", () => {
    const xml = doc("<controller type='usb' index='0' model='qemu-xhci' ports='15'/>");
    expect(roundTrips(xml).controllers).toEqual([{ type: 'usb', index: 0, model: 'qemu-xhci', ports: 15 }]);
    expect(formatDomainXml(resolve(xml))).toContain("model='qemu-xhci' ports='15'");
    expect(jsonOf(argv(xml), '-device').find((d) => d.driver === 'qemu-xhci')).toMatchObject({
      id: 'usb',
      p2: 15,
      p3: 15,
    });
  });

  it('ports on a USB controller other than qemu-xhci is refused', () => {
    const xml = `<domain type='qemu'><name>d</name><memory>262144</memory><os><type machine='pc'>hvm</type></os><devices><controller type='usb' model='piix3-uhci' ports='4'/></devices></domain>`;
    const err = failure(() => argv(xml));
    expect({ code: err.code, path: err.details.path }).toEqual({
      code: ErrorCode.CONFIG_UNSUPPORTED,
      path: 'controllers.0.ports',
    });
  });

  it('the virtio-serial controller: parsed, formatted back, carries the channels at its address', () => {
    const xml = doc(
      `<controller type='virtio-serial' index='0' model='virtio-non-transitional' ports='16' vectors='4'/>
       <channel type='unix'><source mode='bind'/><target type='virtio' name='org.qemu.guest_agent.0'/></channel>`,
    );
    const def = roundTrips(xml);
    expect(def.controllers).toEqual([
      { type: 'virtio-serial', index: 0, model: 'virtio-non-transitional', ports: 16, vectors: 4 },
    ]);
    const devices = jsonOf(argv(xml), '-device');
    const controller = devices.find((d) => d.id === 'virtio-serial0');
    // A virtio device of a q35 machine sits behind a PCIe root port, as libvirt places it.
    expect(controller).toMatchObject({
      driver: 'virtio-serial-pci-non-transitional',
      max_ports: 16,
      vectors: 4,
      addr: '0x0',
    });
    expect(String(controller?.bus)).toMatch(/^pci\.\d+$/);
    expect(devices.find((d) => d.driver === 'virtserialport')).toMatchObject({
      bus: 'virtio-serial0.0',
      nr: 1,
    });
  });

  it('a channel without a controller gets virtio-serial0, as libvirt adds it', () => {
    const xml = doc(
      "<channel type='unix'><source mode='bind'/><target type='virtio' name='org.qemu.guest_agent.0'/></channel>",
    );
    const devices = jsonOf(argv(xml), '-device');
    expect(devices.find((d) => d.id === 'virtio-serial0')).toMatchObject({ driver: 'virtio-serial-pci' });
  });

  it.each([
    ["<controller type='virtio-serial' index='1'/>", 'controllers.0.index'],
    ["<controller type='virtio-serial' model='virtio-transitional'/>", 'controllers.0.model'],
  ])('%s is refused', (xml, path) => {
    const err = failure(() => argv(doc(xml)));
    expect({ code: err.code, path: err.details.path }).toEqual({ code: ErrorCode.CONFIG_UNSUPPORTED, path });
  });
});

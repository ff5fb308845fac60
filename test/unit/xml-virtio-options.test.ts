import { describe, expect, it } from 'vitest';
import { buildCommandLine } from '../../src/drivers/qemu/command-line.js';
import { ErrorCode } from '../../src/errors.js';
import { resolveDefinition } from '../../src/stable/definition/validate.js';
import { formatDomainXml, parseDomainXml } from '../../src/stable/index.js';
import { thrownVirtError } from '../helpers/errors.js';

/*
 * Virtio options of every virtio device's <driver>, the virtio-scsi <driver> and qxl's memory
 * sizes: parsed, formatted back to the same definition, turned into QEMU properties, and refused
 * with their path where libvirt refuses them.
 */

const uuid = '1b4e28ba-2fa1-11d2-883f-0016d3cca427';
const doc = (devices: string) =>
  `<domain type='qemu'><name>d</name><uuid>${uuid}</uuid><memory unit='MiB'>64</memory><iothreads>1</iothreads><os><type machine='q35'>hvm</type></os><devices>${devices}</devices></domain>`;
const resolve = (xml: string) => resolveDefinition(parseDomainXml(xml));
const ctx = {
  monitorFd: 3,
  consolePath: '/r/c.log',
  homeDir: '/r/lib',
  runDir: '/r/run',
  diskFds: [],
  tapFds: [],
  nowMs: 0,
};

const all = `
<controller type='scsi' model='virtio-scsi'><driver queues='2' cmd_per_lun='8' max_sectors='64' ioeventfd='off' iothread='1' iommu='on'/></controller>
<controller type='virtio-serial'><driver packed='off'/></controller>
<interface type='user'><model type='virtio'/><driver ats='on' event_idx='off'/></interface>
<input type='mouse' bus='virtio'><driver page_per_vq='on'/></input>
<video><model type='virtio' heads='1' primary='yes'/><driver name='qemu' packed='on'/></video>
<rng model='virtio'><backend model='random'>/dev/urandom</backend><driver iommu='off'/></rng>
<memballoon model='virtio'><driver ats='on'/></memballoon>`;

describe('virtio options', () => {
  it('parse, format back and become QEMU properties', () => {
    const def = resolve(doc(all));
    expect(resolve(formatDomainXml(def))).toStrictEqual(def);
    expect(def.controllers[0]).toMatchObject({
      driver: { queues: 2, cmdPerLun: 8, maxSectors: 64, ioeventfd: false, iothread: 1 },
      virtio: { iommu: true },
    });
    const argv = buildCommandLine(def, ctx).argv;
    const devices = argv
      .filter((_, i) => argv[i - 1] === '-device')
      .map((d) => JSON.parse(d) as Record<string, unknown>);
    const by = (driver: string) => devices.find((d) => d.driver === driver);
    expect(by('virtio-scsi-pci')).toMatchObject({
      num_queues: 2,
      cmd_per_lun: 8,
      max_sectors: 64,
      ioeventfd: false,
      iothread: 'iothread1',
      iommu_platform: true,
    });
    expect(by('virtio-serial-pci')).toMatchObject({ packed: false });
    expect(by('virtio-net-pci')).toMatchObject({ ats: true, event_idx: false });
    expect(by('virtio-mouse-pci')).toMatchObject({ 'page-per-vq': true });
    expect(by('virtio-vga')).toMatchObject({ packed: true });
    expect(by('virtio-rng-pci')).toMatchObject({ iommu_platform: false });
    expect(by('virtio-balloon-pci')).toMatchObject({ ats: true });
  });

  it('qxl memory sizes', () => {
    const xml = doc(
      "<video><model type='qxl' ram='32768' vram='16384' vgamem='4096' vram64='65536'/></video>",
    );
    const def = resolve(xml);
    expect(resolve(formatDomainXml(def))).toStrictEqual(def);
    const argv = buildCommandLine(def, ctx).argv;
    const qxl = argv.find((a) => a.includes('"qxl-vga"'));
    expect(JSON.parse(qxl as string)).toMatchObject({
      ram_size: 32 * 1024 * 1024,
      vram_size: 16 * 1024 * 1024,
      vgamem_mb: 4,
      vram64_size_mb: 64,
    });
  });
});

describe('refusals name the place', () => {
  it.each([
    [
      "<interface type='user'><model type='e1000'/><driver iommu='on'/></interface>",
      ErrorCode.XML_ERROR,
      '/domain/devices/interface/driver/@iommu',
    ],
    [
      "<disk type='file'><driver type='raw' packed='on'/><source file='/x'/><target dev='sda' bus='sata'/></disk>",
      ErrorCode.XML_ERROR,
      '/domain/devices/disk/driver/@packed',
    ],
    [
      "<rng model='virtio'><backend model='random'/><driver event_idx='on'/></rng>",
      ErrorCode.CONFIG_UNSUPPORTED,
      '/domain/devices/rng/driver/@event_idx',
    ],
    [
      "<controller type='scsi' model='lsilogic'><driver queues='2'/></controller>",
      ErrorCode.XML_ERROR,
      '/domain/devices/controller/driver',
    ],
    [
      "<video><model type='vga' vgamem='8192'/></video>",
      ErrorCode.XML_ERROR,
      '/domain/devices/video/model/@vgamem',
    ],
    [
      "<video><model type='qxl' vgamem='3000'/></video>",
      ErrorCode.XML_ERROR,
      '/domain/devices/video/model/@vgamem',
    ],
    [
      "<video><model type='virtio'/><driver name='vhostuser'/></video>",
      ErrorCode.CONFIG_UNSUPPORTED,
      '/domain/devices/video/driver/@name',
    ],
    [
      "<video><model type='virtio'><acceleration accel3d='yes'/></model></video>",
      ErrorCode.CONFIG_UNSUPPORTED,
      '/domain/devices/video/model/acceleration/@accel3d',
    ],
  ])('%s', (body, code, path) => {
    expect(thrownVirtError(() => resolve(doc(body)))).toMatchObject({ code, details: { path } });
  });
});

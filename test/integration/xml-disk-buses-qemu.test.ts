import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors.js';
import { useProbeRoot } from '../helpers/probe-root.js';

/*
 * The SCSI and USB disk buses virt-install and libvirt's tests write, on real QEMU (TCG): disks on a
 * virtio-scsi controller and on the LSI controller libvirt adds by default, a USB disk on the
 * qemu-xhci. Each document is defined, started paused and inspected through a second QMP monitor
 * (query-block, query-pci, qom-get); toXML() of the live domain re-parses to the live definition.
 */

const rig = useProbeRoot();
let files: string;

beforeEach(() => {
  files = join(rig.root, 'files');
  mkdirSync(files);
});

function image(name: string, format: 'raw' | 'qcow2'): string {
  const path = join(files, name);
  execFileSync('qemu-img', ['create', '-q', '-f', format, path, '16M']);
  return path;
}

const domain = (machine: string, devices: string): string => `<domain type='qemu'>
  <name>disk-buses-${machine}</name>
  <memory unit='MiB'>128</memory>
  <os><type arch='x86_64' machine='${machine}'>hvm</type></os>
  <devices>
${devices}
  </devices>
</domain>`;

interface Block {
  qdev?: string;
  removable: boolean;
  inserted?: { file: string; ro: boolean };
}

describe('SCSI and USB disks of real-world documents on real QEMU', () => {
  it('q35: a disk and a CD-ROM on virtio-scsi, a USB disk on the qemu-xhci', async () => {
    const root0 = image('root.qcow2', 'qcow2');
    const iso = image('install.iso', 'raw');
    const stick = image('stick.raw', 'raw');
    const { qmp, live } = await rig.startWithProbe(
      domain(
        'q35',
        `    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='${root0}'/>
      <target dev='sda' bus='scsi'/>
      <boot order='1'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='${iso}'/>
      <target dev='sdb' bus='scsi'/>
      <readonly/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='${stick}'/>
      <target dev='sdc' bus='usb'/>
      <address type='usb' bus='0' port='1'/>
    </disk>
    <controller type='usb' index='0' model='qemu-xhci' ports='15'/>
    <controller type='scsi' index='0' model='virtio-scsi'/>`,
      ),
    );
    expect(live.disks.map((d) => [d.alias, d.address])).toEqual([
      ['scsi0-0-0-0', { type: 'drive', controller: 0, bus: 0, target: 0, unit: 0 }],
      ['scsi0-0-0-1', { type: 'drive', controller: 0, bus: 0, target: 0, unit: 1 }],
      ['usb-disk2', { type: 'usb', bus: 0, port: '1' }],
    ]);
    const get = (path: string, property: string) => qmp.execute('qom-get', { path, property });
    expect(await get('/machine/peripheral/scsi0', 'type')).toBe('virtio-scsi-pci');
    expect(await get('/machine/peripheral/scsi0-0-0-0', 'type')).toBe('scsi-hd');
    expect(await get('/machine/peripheral/scsi0-0-0-1', 'type')).toBe('scsi-cd');
    expect(await get('/machine/peripheral/scsi0-0-0-1', 'lun')).toBe(1);
    expect(await get('/machine/peripheral/scsi0-0-0-0', 'bootindex')).toBe(1);
    expect(await get('/machine/peripheral/scsi0-0-0-0', 'parent_bus')).toBe(
      '/machine/peripheral/scsi0/virtio-backend/scsi0.0',
    );
    expect(await get('/machine/peripheral/usb-disk2', 'type')).toBe('usb-storage');
    expect(await get('/machine/peripheral/usb-disk2', 'port')).toBe('1');
    expect(await get('/machine/peripheral/usb-disk2', 'parent_bus')).toBe('/machine/peripheral/usb/usb.0');

    const blocks = await qmp.execute<Block[]>('query-block');
    const of = (id: string) => blocks.find((b) => b.qdev === id || b.qdev === `/machine/peripheral/${id}`);
    expect(of('scsi0-0-0-0')?.inserted?.ro).toBe(false);
    expect(of('scsi0-0-0-1')).toMatchObject({ removable: true, inserted: { ro: true } });
    // usb-storage carries its own SCSI bus: the drive sits on the disk it made there.
    const usbDrive = blocks.find((b) => b.qdev?.startsWith('/machine/peripheral/usb-disk2/'));
    expect(usbDrive?.inserted).toMatchObject({ ro: false, file: expect.stringContaining('fdset') });
  }, 120_000);

  it("pc: an sd* disk without bus or controller is SCSI on libvirt's default LSI controller", async () => {
    const disk = image('data.raw', 'raw');
    const { qmp, live } = await rig.startWithProbe(
      domain('pc', `    <disk type='file' device='disk'><source file='${disk}'/><target dev='sdb'/></disk>`),
    );
    expect(live.disks[0]).toMatchObject({
      target: { dev: 'sdb', bus: 'scsi' },
      alias: 'scsi0-0-0-1',
      address: { type: 'drive', controller: 0, bus: 0, target: 0, unit: 1 },
    });
    const scsi = live.controllers.find((c) => c.type === 'scsi');
    expect(scsi).toMatchObject({ model: 'lsilogic', alias: 'scsi0', address: { type: 'pci', bus: 0 } });
    // The LSI 53C895A (0x1000:0x0012) at the slot the definition holds; the disk at SCSI id 1.
    const pci =
      await qmp.execute<Array<{ bus: number; devices: Array<Record<string, unknown>> }>>('query-pci');
    expect(pci.find((b) => b.bus === 0)?.devices).toContainEqual(
      expect.objectContaining({
        qdev_id: 'scsi0',
        slot: scsi?.address?.slot,
        id: expect.objectContaining({ vendor: 0x1000, device: 0x0012 }),
      }),
    );
    expect(
      await qmp.execute('qom-get', { path: '/machine/peripheral/scsi0-0-0-1', property: 'scsi-id' }),
    ).toBe(1);
  }, 120_000);

  it('refuses what it cannot build, with the path', async () => {
    const refused = async (xml: string, code: ErrorCode, path: string) => {
      await expect(rig.conn.defineDomain(xml)).rejects.toMatchObject({
        code,
        details: expect.objectContaining({ path }),
      });
    };
    const disk = (target: string, device = 'disk') =>
      `<disk type='file' device='${device}'><source file='/nonexistent.img'/>${target}</disk>`;
    // libvirt's default LSI controller is a PCI card q35 would need a bridge for.
    await refused(
      domain('q35', disk("<target dev='sda' bus='scsi'/>")),
      ErrorCode.CONFIG_UNSUPPORTED,
      'disks.0.target.bus',
    );
    await refused(
      domain('pc', disk("<target dev='sda' bus='usb'/>", 'cdrom')),
      ErrorCode.CONFIG_UNSUPPORTED,
      'disks.0.device',
    );
    await refused(
      domain(
        'pc',
        `${disk("<target dev='sda' bus='scsi'/>")}${disk("<target dev='sdb' bus='scsi'/><address type='drive' controller='0' bus='0' target='0' unit='0'/>")}`,
      ),
      ErrorCode.XML_ERROR,
      'disks.1.address',
    );
    expect(await rig.conn.listDomains()).toEqual([]);
  }, 60_000);
});

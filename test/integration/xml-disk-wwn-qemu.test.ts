import { closeSync, ftruncateSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { useProbeRoot } from '../helpers/probe-root.js';

/*
 * A disk's <wwn>, <vendor> and <product> on real QEMU (paused TCG): the IDE, SATA and SCSI disk
 * devices carry them (qom-get). The WWNs stay below 2^53 so JSON numbers hold them exactly.
 */

const rig = useProbeRoot();

function image(name: string): string {
  const path = join(rig.root, name);
  const fd = openSync(path, 'w');
  ftruncateSync(fd, 1024 * 1024);
  closeSync(fd);
  return path;
}

describe('disk identity on real QEMU', () => {
  it('IDE, SATA and SCSI disks carry their WWN; the SCSI disk its vendor and product', async () => {
    const disk = (file: string, dev: string, bus: string, extra: string) =>
      `<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='${image(file)}'/><target dev='${dev}' bus='${bus}'/>${extra}</disk>`;
    const { qmp, live } = await rig.startWithProbe(`<domain type='qemu'>
  <name>wwn</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    ${disk('a.raw', 'sda', 'sata', '<wwn>0012345678abcdef</wwn>')}
    ${disk('b.raw', 'sdb', 'scsi', '<wwn>0x0000000000000042</wwn><vendor>VIRTKIT</vendor><product>TEST DISK</product>')}
    <controller type='scsi' model='virtio-scsi'/>
  </devices>
</domain>`);
    const get = (i: number, property: string) =>
      qmp.execute('qom-get', { path: `/machine/peripheral/${live.disks[i]?.alias}`, property });
    expect(await get(0, 'wwn')).toBe(0x12345678abcdef);
    expect(await get(1, 'wwn')).toBe(0x42);
    expect(await get(1, 'vendor')).toBe('VIRTKIT');
    expect(await get(1, 'product')).toBe('TEST DISK');
  });

  it('IDE disks of a pc machine carry theirs too', async () => {
    const { qmp, live } = await rig.startWithProbe(`<domain type='qemu'>
  <name>ide</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='${image('c.raw')}'/><target dev='hda' bus='ide'/><wwn>00000000deadbeef</wwn></disk>
  </devices>
</domain>`);
    expect(
      await qmp.execute('qom-get', { path: `/machine/peripheral/${live.disks[0]?.alias}`, property: 'wwn' }),
    ).toBe(0xdeadbeef);
  });
});

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { useProbeRoot } from '../helpers/probe-root.js';

/*
 * <filesystem type='mount'> (virtio-9p) on real QEMU (TCG, paused): the fsdev and the
 * virtio-9p-pci device libvirt's qemuBuildFSStr / qemuBuildFSDevCmd write, read back through QMP
 * (the device's properties with qom-get, its slot with query-pci).
 */

const rig = useProbeRoot();

interface PciDevice {
  slot: number;
  qdev_id: string;
  id: { vendor: number; device: number };
}

describe('<filesystem> on real QEMU', () => {
  it('two 9p shares: mapped with modes at a given slot, read-only passthrough placed by QEMU', async () => {
    const dirs = ['one', 'two'].map((d) => {
      const path = join(rig.root, d);
      mkdirSync(path);
      return path;
    });
    const { qmp, live } = await rig.startWithProbe(`<domain type='qemu'>
  <name>fs</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <filesystem type='mount' accessmode='mapped' fmode='644' dmode='755' multidevs='remap'>
      <driver type='path' wrpolicy='immediate'/>
      <source dir='${dirs[0]}'/>
      <target dir='share,one'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/>
    </filesystem>
    <filesystem>
      <source dir='${dirs[1]}'/>
      <target dir='two'/>
      <readonly/>
    </filesystem>
  </devices>
</domain>`);
    expect(live.filesystems).toEqual([
      {
        source: dirs[0],
        target: 'share,one',
        accessmode: 'mapped',
        fmode: 0o644,
        dmode: 0o755,
        multidevs: 'remap',
        wrpolicy: 'immediate',
        address: { type: 'pci', domain: 0, bus: 0, slot: 7, function: 0 },
      },
      { source: dirs[1], target: 'two', accessmode: 'passthrough', readonly: true },
    ]);
    const get = (id: string, property: string) =>
      qmp.execute('qom-get', { path: `/machine/peripheral/${id}`, property });
    expect(await get('fs0', 'mount_tag')).toBe('share,one');
    expect(await get('fs0', 'fsdev')).toBe('fsdev-fs0');
    expect(await get('fs1', 'mount_tag')).toBe('two');
    const [bus] = await qmp.execute<Array<{ devices: PciDevice[] }>>('query-pci');
    const of = (id: string) => bus?.devices.find((d) => d.qdev_id === id);
    // Red Hat's virtio vendor id; 0x1009 is the transitional 9p device.
    expect(of('fs0')).toMatchObject({ slot: 7, id: { vendor: 0x1af4, device: 0x1009 } });
    expect(of('fs1')?.id.vendor).toBe(0x1af4);
  });

  it('refuses what QEMU 7.2 here cannot do, with the path', async () => {
    const doc = (fs: string) =>
      `<domain type='qemu'><name>bad</name><memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os><devices>${fs}</devices></domain>`;
    const refused = (fs: string, code: string, path: string) =>
      expect(rig.conn.defineDomain(doc(fs))).rejects.toMatchObject({
        code,
        details: expect.objectContaining({ path }),
      });
    await refused(
      "<filesystem><driver type='virtiofs'/><source dir='/x'/><target dir='t'/></filesystem>",
      'CONFIG_UNSUPPORTED',
      '/domain/devices/filesystem/driver/@type',
    );
    await refused(
      "<filesystem><driver type='handle'/><source dir='/x'/><target dir='t'/></filesystem>",
      'CONFIG_UNSUPPORTED',
      '/domain/devices/filesystem/driver/@type',
    );
    await refused(
      "<filesystem type='block'><source dev='/dev/x'/><target dir='t'/></filesystem>",
      'CONFIG_UNSUPPORTED',
      '/domain/devices/filesystem/@type',
    );
    await refused("<filesystem><source dir='/x'/></filesystem>", 'XML_ERROR', '/domain/devices/filesystem');
    await refused(
      "<filesystem accessmode='mapped' fmode='999'><source dir='/x'/><target dir='t'/></filesystem>",
      'XML_ERROR',
      '/domain/devices/filesystem/@fmode',
    );
  });
});

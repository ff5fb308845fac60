import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors.js';
import { useProbeRoot } from '../helpers/probe-root.js';

/*
 * Floppy disks (`<disk device='floppy'>`, bus fdc), as KubeVirt's older converters and libvirt's
 * tests write them, on real QEMU (TCG): libvirt 9's `floppy` drives on the pc machine's built-in
 * ISA floppy controller, the boot index on the controller. Inspected through a second QMP monitor.
 */

const rig = useProbeRoot();

const domain = (machine: string, disks: string): string => `<domain type='qemu'>
  <name>floppy-${machine}</name>
  <memory unit='MiB'>128</memory>
  <os><type arch='x86_64' machine='${machine}'>hvm</type></os>
  <devices>
${disks}
  </devices>
</domain>`;

interface Block {
  qdev?: string;
  removable: boolean;
  inserted?: { file: string; ro: boolean };
}

describe('floppy disks on real QEMU', () => {
  it('pc: fda and a read-only fdb on the built-in controller, fda first in the boot order', async () => {
    const images = ['a.img', 'b.img'].map((name) => {
      const path = join(rig.root, name);
      execFileSync('qemu-img', ['create', '-q', '-f', 'raw', path, '1440K']);
      return path;
    });
    const { qmp, live } = await rig.startWithProbe(
      domain(
        'pc',
        `    <disk type='file' device='floppy'>
      <driver name='qemu' type='raw'/>
      <source file='${images[0]}'/>
      <target dev='fda' bus='fdc'/>
      <boot order='1'/>
    </disk>
    <disk type='file' device='floppy'>
      <source file='${images[1]}'/>
      <target dev='fdb'/>
      <readonly/>
    </disk>`,
      ),
    );
    expect(live.disks.map((d) => [d.target, d.alias, d.address])).toEqual([
      [{ dev: 'fda', bus: 'fdc' }, 'fdc0-0-0', { type: 'drive', controller: 0, bus: 0, target: 0, unit: 0 }],
      [{ dev: 'fdb', bus: 'fdc' }, 'fdc0-0-1', { type: 'drive', controller: 0, bus: 0, target: 0, unit: 1 }],
    ]);
    const get = (path: string, property: string) => qmp.execute('qom-get', { path, property });
    expect(await get('/machine/peripheral/fdc0-0-0', 'type')).toBe('floppy');
    expect(await get('/machine/peripheral/fdc0-0-1', 'unit')).toBe(1);
    // The drives sit on the isa-fdc's bus; the controller holds fda's boot index.
    const bus = String(await get('/machine/peripheral/fdc0-0-0', 'parent_bus'));
    const fdc = bus.slice(0, bus.lastIndexOf('/'));
    expect(await get(fdc, 'type')).toBe('isa-fdc');
    expect(await get(fdc, 'bootindexA')).toBe(1);
    expect(await get('/machine/peripheral/fdc0-0-1', 'parent_bus')).toBe(bus);

    const blocks = await qmp.execute<Block[]>('query-block');
    const of = (id: string) => blocks.find((b) => b.qdev === id || b.qdev === `/machine/peripheral/${id}`);
    expect(of('fdc0-0-0')).toMatchObject({
      removable: true,
      inserted: { ro: false, file: expect.stringContaining('fdset') },
    });
    expect(of('fdc0-0-1')).toMatchObject({ inserted: { ro: true } });
  }, 120_000);

  it("<os><boot dev='fd'/> boots the first floppy, then the disk; the fdc controller is the built-in one", async () => {
    const images = ['a.img', 'disk.img'].map((name) => {
      const path = join(rig.root, name);
      execFileSync('qemu-img', ['create', '-q', '-f', 'raw', path, '1440K']);
      return path;
    });
    const { qmp, live } = await rig.startWithProbe(`<domain type='qemu'>
  <name>floppy-boot</name>
  <memory unit='MiB'>128</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='fd'/><boot dev='hd'/></os>
  <devices>
    <disk type='file' device='floppy'><source file='${images[0]}'/><target dev='fda' bus='fdc'/></disk>
    <disk type='file' device='disk'><source file='${images[1]}'/><target dev='vda' bus='virtio'/></disk>
    <controller type='fdc' index='0'/>
  </devices>
</domain>`);
    expect(live.os.boot).toEqual(['fd', 'hd']);
    expect(live.controllers).toContainEqual({ type: 'fdc', index: 0, alias: 'fdc0' });
    const get = (path: string, property: string) => qmp.execute('qom-get', { path, property });
    const bus = String(await get('/machine/peripheral/fdc0-0-0', 'parent_bus'));
    const fdc = bus.slice(0, bus.lastIndexOf('/'));
    expect(await get(fdc, 'type')).toBe('isa-fdc');
    expect(await get(fdc, 'bootindexA')).toBe(1);
    expect(await get('/machine/peripheral/virtio-disk0', 'bootindex')).toBe(2);
    // One floppy controller only, and only on pc.
    await expect(
      rig.conn.defineDomain(
        domain('q35', "<controller type='fdc' index='0'/>").replace('floppy-q35', 'fdc-q35'),
      ),
    ).rejects.toMatchObject({ code: 'CONFIG_UNSUPPORTED', details: { path: 'controllers.0.type' } });
  }, 120_000);

  it('refuses a floppy where libvirt 9 builds none or QEMU has no slot, with the path', async () => {
    const refused = async (machine: string, disks: string, code: ErrorCode, path: string) => {
      await expect(rig.conn.defineDomain(domain(machine, disks))).rejects.toMatchObject({
        code,
        details: expect.objectContaining({ path }),
      });
    };
    const fd = (target: string, extra = '') =>
      `<disk type='file' device='floppy'><source file='/nonexistent.img'/>${target}${extra}</disk>`;
    await refused(
      'q35',
      fd("<target dev='fda' bus='fdc'/>"),
      ErrorCode.CONFIG_UNSUPPORTED,
      'disks.0.target.bus',
    );
    await refused(
      'pc',
      fd(
        "<target dev='fda' bus='fdc'/>",
        "<address type='drive' controller='0' bus='0' target='0' unit='2'/>",
      ),
      ErrorCode.CONFIG_UNSUPPORTED,
      'disks.0.address',
    );
    await refused(
      'pc',
      "<disk type='file' device='disk'><source file='/nonexistent.img'/><target dev='fda' bus='fdc'/></disk>",
      ErrorCode.XML_ERROR,
      '/domain/devices/disk/target/@bus',
    );
    await expect(
      rig.conn.defineDomain(domain('pc', fd("<target dev='fda' bus='fdc'/>"))),
    ).resolves.toBeDefined();
  });
});

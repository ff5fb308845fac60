import { writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { QmpClient } from '../../src/drivers/qemu/qmp/client.js';
import { resolveDomainXml } from '../../src/stable/definition/xml.js';
import type { DomainDefinition } from '../../src/stable/index.js';
import { useProbeRoot } from '../helpers/probe-root.js';

/*
 * What virt-install writes besides a serial port and disks with media: a virtio console (a
 * virtconsole on the virtio-serial controller) and an empty CD-ROM. Each document is defined from
 * XML, started paused on real QEMU (TCG) and inspected through a second QMP monitor.
 */

const rig = useProbeRoot();

async function startWithProbe(xml: string): Promise<{ qmp: QmpClient; live: DomainDefinition; xml: string }> {
  const probe = `${rig.root}/probe.qmp`;
  const withProbe = xml.replace(
    '</domain>',
    `<qemu:commandline xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><qemu:arg value='-qmp'/><qemu:arg value='unix:${probe},server=on,wait=off'/></qemu:commandline></domain>`,
  );
  const dom = await rig.conn.defineDomain(withProbe);
  await dom.start({ paused: true });
  const qmp = await rig.probe(probe);
  const live = dom.getDefinition();
  const liveXml = dom.toXML();
  // A pty's path is output only: parsing the live XML gives the definition without it.
  const withoutPty = live.consoles
    ? { ...live, consoles: live.consoles.map(({ path: _, ...c }) => c) }
    : live;
  expect(resolveDomainXml(liveXml)).toEqual(withoutPty);
  return { qmp, live, xml: liveXml };
}

describe('virt-install devices on real QEMU', () => {
  it("<os><boot dev='cdrom|hd|network'/> gives the first CD-ROM, disk and interface their bootindex, in list order", async () => {
    for (const f of ['a.img', 'b.img']) writeFileSync(`${rig.root}/${f}`, Buffer.alloc(1024 * 1024));
    const { qmp, live } = await startWithProbe(`<domain type='qemu'>
  <name>legacy-boot</name>
  <memory unit='MiB'>128</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type><boot dev='cdrom'/><boot dev='hd'/><boot dev='network'/></os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='${rig.root}/a.img'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='${rig.root}/b.img'/><target dev='vdb' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><target dev='sda' bus='sata'/><readonly/></disk>
    <interface type='user'><model type='virtio'/></interface>
    <interface type='user'><model type='e1000e'/></interface>
  </devices>
</domain>`);
    // The list stays the definition's: the indexes are QEMU configuration only, as in libvirt.
    expect(live.os.boot).toEqual(['cdrom', 'hd', 'network']);
    expect(live.disks.map((d) => d.bootOrder)).toEqual([undefined, undefined, undefined]);
    const bootindex = async (alias: string | undefined) =>
      qmp.execute('qom-get', { path: `/machine/peripheral/${alias}`, property: 'bootindex' });
    const [vda, vdb, cdrom] = live.disks.map((d) => d.alias);
    expect(await bootindex(cdrom)).toBe(1);
    expect(await bootindex(vda)).toBe(2);
    expect(await bootindex(live.interfaces[0]?.alias)).toBe(3);
    // Every other device gets none (QEMU's -1).
    expect(await bootindex(vdb)).toBe(-1);
    expect(await bootindex(live.interfaces[1]?.alias)).toBe(-1);
  });

  it("a virtio <console type='pty'> is a virtconsole on an added virtio-serial controller, its pty reported", async () => {
    const { qmp, live, xml } = await startWithProbe(`<domain type='qemu'>
  <name>virtio-console</name>
  <memory unit='MiB'>128</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <console type='pty'><target type='virtio'/></console>
  </devices>
</domain>`);
    const path = live.consoles?.[0]?.path ?? '';
    expect(path).toMatch(/^\/dev\/pts\/[0-9]+$/);
    expect(live.serials).toEqual([]);
    const chardevs = (await qmp.execute('query-chardev')) as Array<{ label: string; filename: string }>;
    expect(chardevs.find((c) => c.label === 'charconsole0')?.filename).toBe(`pty:${path}`);
    // Paused before the firmware numbered the root ports' buses, query-pci lists only bus 0: the
    // controller is found through QOM, on the root port q35 gives it.
    const serial = await qmp.execute('qom-get', {
      path: '/machine/peripheral/virtio-serial0',
      property: 'type',
    });
    expect(serial).toMatch(/^virtio-serial-pci/);
    const port = await qmp.execute('qom-get', {
      path: '/machine/peripheral/virtio-serial0',
      property: 'parent_bus',
    });
    expect(String(port)).toMatch(/pci\.[0-9]+$/);
    const type = await qmp.execute('qom-get', { path: '/machine/peripheral/console0', property: 'type' });
    expect(type).toBe('virtconsole');
    const bus = await qmp.execute('qom-get', {
      path: '/machine/peripheral/console0',
      property: 'parent_bus',
    });
    expect(String(bus)).toContain('virtio-serial0');
    expect(xml.replace(/\s+/g, ' ')).toContain(
      `<console type='pty' tty='${path}'> <source path='${path}'/> <target type='virtio' port='0'/> </console>`,
    );
  });

  it('an empty CD-ROM (no <source>) is a drive with no medium on SATA and on SCSI', async () => {
    const cdrom = (dev: string, bus: string) =>
      `<disk type='file' device='cdrom'><driver name='qemu' type='raw'/><target dev='${dev}' bus='${bus}'/><readonly/></disk>`;
    const { qmp, live, xml } = await startWithProbe(`<domain type='qemu'>
  <name>empty-cdrom</name>
  <memory unit='MiB'>128</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <controller type='scsi' model='virtio-scsi'/>
    ${cdrom('sda', 'sata')}
    ${cdrom('sdb', 'scsi')}
  </devices>
</domain>`);
    expect(live.disks.map((d) => d.source)).toEqual([undefined, undefined]);
    expect(xml).not.toContain('<source');
    const blocks = (await qmp.execute('query-block')) as Array<{
      qdev?: string;
      removable: boolean;
      tray_open?: boolean;
      inserted?: unknown;
    }>;
    for (const disk of live.disks) {
      const alias = disk.alias as string;
      const block = blocks.find(
        (b) => b.qdev === alias || b.qdev?.startsWith(`/machine/peripheral/${alias}/`),
      );
      expect(block, alias).toBeDefined();
      expect(block?.removable).toBe(true);
      expect(block?.tray_open).toBe(false);
      expect(block?.inserted).toBeUndefined();
    }
    const types = await Promise.all(
      live.disks.map((d) =>
        qmp.execute('qom-get', { path: `/machine/peripheral/${d.alias}`, property: 'type' }),
      ),
    );
    expect(types).toEqual(['ide-cd', 'scsi-cd']);
  });
});

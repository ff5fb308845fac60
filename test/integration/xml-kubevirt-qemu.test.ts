import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { backingAlias, diskNodes } from '../../src/drivers/qemu/devices/disk.js';
import { resolveDomainXml } from '../../src/stable/definition/xml.js';
import { acceptsConnection } from '../helpers/env.js';
import { useProbeRoot } from '../helpers/probe-root.js';

/*
 * What KubeVirt's converter writes and virtkit now honours, on real QEMU (TCG), in a document of the
 * same shape written for this test: a qcow2 overlay over a raw image named by <backingStore> (not
 * by the overlay's header), a serial port on a UNIX socket with a log file next to a pty console
 * (libvirt's alias of serial 0), a virtio tablet with a model, no <uuid> but an SMBIOS one, an hpet
 * tick policy libvirt ignores, a vCPU without PMU, seven SATA disks. Inspected through a second
 * QMP monitor, the socket itself and the guest-visible data of the disk.
 */

const rig = useProbeRoot();

const UUID = '5d1a7c3e-0b9f-4e21-8c55-2f6a9d0e4b17';

/** Seven SATA disks, one more than an AHCI controller has ports: sdg goes to a second one. */
function sataDisks(files: string): string {
  return ['a', 'b', 'c', 'd', 'e', 'f', 'g']
    .map(
      (l) => `    <disk device="disk" type="file">
      <source file="${files}/sd${l}.img"></source>
      <target bus="sata" dev="sd${l}"></target>
      <driver error_policy="stop" name="qemu" type="raw"></driver>
      <alias name="ua-sata_volume_number_${l}"></alias>
    </disk>`,
    )
    .join('\n');
}

function kubevirtShaped(files: string, probe: string): string {
  return `<domain type="qemu" xmlns:qemu="http://libvirt.org/schemas/domain/qemu/1.0">
  <name>ns_vmi</name>
  <memory unit="b">134217728</memory>
  <os>
    <type arch="x86_64" machine="q35">hvm</type>
    <smbios mode="sysinfo"></smbios>
  </os>
  <sysinfo type="smbios">
    <system>
      <entry name="uuid">${UUID.toUpperCase()}</entry>
      <entry name="manufacturer"></entry>
    </system>
  </sysinfo>
  <devices>
    <controller type="usb" index="0" model="none"></controller>
    <disk device="disk" type="file">
      <source file="${files}/overlay.qcow2"></source>
      <target bus="virtio" dev="vda"></target>
      <driver cache="none" error_policy="stop" name="qemu" type="qcow2" discard="unmap"></driver>
      <alias name="ua-ephemeral_pvc_volume_disk"></alias>
      <backingStore type="file">
        <format type="raw"></format>
        <source file="${files}/base.img"></source>
      </backingStore>
    </disk>
${sataDisks(files)}
    <input type="tablet" bus="virtio" model="virtio">
      <alias name="ua-tablet0"></alias>
    </input>
    <serial type="unix">
      <target port="0"></target>
      <source mode="bind" path="${files}/serial0"></source>
      <log file="${files}/serial0.log" append="on"></log>
    </serial>
    <console type="pty">
      <target type="serial" port="0"></target>
    </console>
  </devices>
  <clock offset="utc">
    <timer name="rtc" tickpolicy="catchup" present="yes" track="guest"></timer>
    <timer name="hpet" tickpolicy="delay" present="no"></timer>
  </clock>
  <features><acpi></acpi><pmu state="off"></pmu></features>
  <qemu:commandline><qemu:arg value="-qmp"></qemu:arg><qemu:arg value="unix:${probe},server=on,wait=off"></qemu:arg></qemu:commandline>
</domain>`;
}

describe('KubeVirt-shaped documents on real QEMU', () => {
  it('backing store, unix serial with log, pty console alias, virtio tablet model, SMBIOS uuid', async () => {
    const files = join(rig.root, 'kv');
    mkdirSync(files);
    const base = join(files, 'base.img');
    const overlay = join(files, 'overlay.qcow2');
    // The base holds a known pattern; the overlay's header names a file that does not exist, so
    // the guest reads the pattern only through the chain the definition gives.
    writeFileSync(base, Buffer.alloc(1024 * 1024, 0xab));
    execFileSync('qemu-img', [
      'create',
      '-q',
      '-f',
      'qcow2',
      '-u',
      '-b',
      join(files, 'nowhere.img'),
      '-F',
      'raw',
      overlay,
      '1M',
    ]);
    writeFileSync(join(files, 'serial0.log'), 'before\n');
    for (const l of 'abcdefg') writeFileSync(join(files, `sd${l}.img`), Buffer.alloc(1024 * 1024));
    const probe = join(rig.root, 'probe.qmp');
    const dom = await rig.conn.defineDomain(kubevirtShaped(files, probe));
    expect(dom.uuid).toBe(UUID);
    const def = dom.getDefinition();
    expect(def.disks[0]?.backingStore).toEqual({ type: 'file', format: 'raw', source: base });
    expect(def.serials).toEqual([
      {
        type: 'unix',
        mode: 'bind',
        path: join(files, 'serial0'),
        log: { file: join(files, 'serial0.log'), append: true },
      },
    ]);
    expect(def.inputs).toEqual([{ type: 'tablet', bus: 'virtio', model: 'virtio', alias: 'ua-tablet0' }]);
    expect(resolveDomainXml(dom.toXML())).toEqual(def);

    await dom.start({ paused: true });
    const qmp = await rig.probe(probe);
    expect(resolveDomainXml(dom.toXML())).toEqual(dom.getDefinition());

    expect(await qmp.execute<{ UUID: string }>('query-uuid')).toEqual({ UUID });

    // The overlay's backing node is the raw image virtkit opened, read only.
    const nodes =
      await qmp.execute<Array<{ 'node-name': string; drv: string; ro: boolean; backing_file_depth: number }>>(
        'query-named-block-nodes',
      );
    const byName = (n: string) => nodes.find((x) => x['node-name'] === n);
    // KubeVirt's long alias: node names within QEMU's 31 characters, derived from it.
    const top = diskNodes('ua-ephemeral_pvc_volume_disk').format;
    const under = diskNodes(backingAlias('ua-ephemeral_pvc_volume_disk')).format;
    expect(byName(top)).toMatchObject({ drv: 'qcow2', ro: false, backing_file_depth: 1 });
    expect(byName(under)).toMatchObject({ drv: 'raw', ro: true });
    // What the guest's disk reads there: the base's pattern, through a read-only NBD export of the
    // overlay's node, read by qemu-io.
    const nbd = join(rig.root, 'nbd.sock');
    await qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: nbd } } });
    await qmp.execute('block-export-add', { type: 'nbd', id: 'x', 'node-name': top });
    const read = execFileSync('qemu-io', [
      '-r',
      '-f',
      'raw',
      `nbd+unix:///${top}?socket=${nbd}`,
      '-c',
      'read -P 0xab 4096 4096',
    ]).toString();
    expect(read).toContain('read 4096/4096 bytes');
    await qmp.execute('block-export-del', { id: 'x' });
    await qmp.execute('nbd-server-stop');

    // Serial 0 listens on the socket the definition names and logs, appending, to its file.
    const chardevs = await qmp.execute<Array<{ label: string; filename: string }>>('query-chardev');
    expect(chardevs.find((c) => c.label === 'charserial0')?.filename).toBe(
      `disconnected:unix:${join(files, 'serial0')},server=on`,
    );
    expect(await acceptsConnection(join(files, 'serial0'))).toBe(true);
    // QEMU holds the log open, and appending kept what was there.
    const pid = (await dom.getInfo()).pid as number;
    const held = readdirSync(`/proc/${pid}/fd`).map((fd) => {
      try {
        return readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        return '';
      }
    });
    expect(held).toContain(join(files, 'serial0.log'));
    expect(held).toContain(base);
    expect(readFileSync(join(files, 'serial0.log'), 'utf8')).toBe('before\n');
    const get = (id: string, property: string) =>
      qmp.execute('qom-get', { path: `/machine/peripheral/${id}`, property });
    expect(await get('serial0', 'type')).toBe('isa-serial');
    expect(await get('ua-tablet0', 'type')).toBe('virtio-tablet-pci');
    expect(await get('ua-tablet0', 'disable-legacy')).toBe('on');

    // <pmu state='off'>: the vCPU has no performance monitoring unit.
    const cpus = await qmp.execute<Array<{ 'qom-path': string }>>('query-cpus-fast');
    expect(await qmp.execute('qom-get', { path: cpus[0]?.['qom-path'] ?? '', property: 'pmu' })).toBe(false);

    // sdg is unit 0 of a second AHCI controller, an ich9-ahci on the root bus, as libvirt adds it.
    const live = dom.getDefinition();
    expect(live.disks.find((d) => d.target.dev === 'sdg')?.address).toEqual({
      type: 'drive',
      controller: 1,
      bus: 0,
      target: 0,
      unit: 0,
    });
    const sata1 = live.controllers.find((c) => c.type === 'sata' && c.index === 1);
    expect(sata1?.alias).toBe('sata1');
    const pci =
      await qmp.execute<Array<{ bus: number; devices: Array<{ qdev_id: string; slot: number }> }>>(
        'query-pci',
      );
    expect(pci.find((b) => b.bus === 0)?.devices).toContainEqual(
      expect.objectContaining({ qdev_id: 'sata1', slot: sata1?.address?.slot }),
    );
    expect(await get('sata1', 'type')).toBe('ich9-ahci');
    expect(await get('ua-sata_volume_number_g', 'parent_bus')).toMatch(/\/sata1\/ide\.0$|sata1\.0$/);
    expect(await get('ua-sata_volume_number_f', 'parent_bus')).toMatch(/\/ide\/ide\.5$|ide\.5$/);

    await dom.destroy({ graceMs: 1000 });
    // The socket QEMU listened on goes with it, as libvirt removes it.
    const deadline = Date.now() + 60_000;
    while (existsSync(join(files, 'serial0')) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 100));
    expect(existsSync(join(files, 'serial0'))).toBe(false);
  }, 120_000);

  it("a USB controller of model 'none' with a PCI address (KubeVirt's root golden): dropped as libvirt 9.0 does", async () => {
    const { qmp, live } = await rig.startWithProbe(`<domain type="qemu">
  <name>kv-usb-none</name>
  <memory unit="MiB">128</memory>
  <os><type arch="x86_64" machine="q35">hvm</type></os>
  <devices>
    <controller type="usb" index="0" model="none">
      <address type="pci" domain="0x0000" bus="0x00" slot="0x03" function="0x0"></address>
    </controller>
    <controller type="virtio-serial" index="0" model="virtio-non-transitional">
      <address type="pci" domain="0x0000" bus="0x00" slot="0x04" function="0x0"></address>
    </controller>
    <interface type="user">
      <model type="e1000"></model>
      <address type="pci" domain="0x0000" bus="0x00" slot="0x03" function="0x0"></address>
    </interface>
  </devices>
</domain>`);
    // libvirt's dumpxml after define: <controller type='usb' index='0' model='none'/>, slot 3 free.
    expect(live.controllers.find((c) => c.type === 'usb')).toEqual({
      type: 'usb',
      index: 0,
      model: 'none',
      alias: 'usb',
    });
    const bus0 = (
      await qmp.execute<
        Array<{
          bus: number;
          devices: Array<{ slot: number; qdev_id: string; class_info: { class: number } }>;
        }>
      >('query-pci')
    ).find((b) => b.bus === 0);
    // No USB controller at all (PCI class 0x0c03), the NIC in the slot the address named.
    expect(bus0?.devices.filter((d) => d.class_info.class === 0x0c03)).toEqual([]);
    expect(bus0?.devices.find((d) => d.slot === 3)?.qdev_id).toBe(live.interfaces[0]?.alias);
    expect(bus0?.devices.find((d) => d.slot === 4)?.qdev_id).toBe('virtio-serial0');
  }, 120_000);
});

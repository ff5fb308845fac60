import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { useProbeRoot } from '../helpers/probe-root.js';

/*
 * The disk, controller and device settings virt-install and KubeVirt write, on real QEMU (TCG):
 * a document using them is defined from XML, started paused and inspected through a second QMP
 * monitor (query-block, query-pci, qom-get) and /proc, then toXML() re-parses to the live definition.
 */

const rig = useProbeRoot();

/** The open-file flags of the descriptors QEMU holds on `path`. */
function openFlags(pid: number, path: string): number[] {
  return readdirSync(`/proc/${pid}/fd`)
    .filter((fd) => {
      try {
        return readlinkSync(`/proc/${pid}/fd/${fd}`) === path;
      } catch {
        return false;
      }
    })
    .map((fd) => {
      const flags = /flags:\s+([0-7]+)/.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))?.[1];
      return Number.parseInt(flags ?? '0', 8);
    });
}
const O_DIRECT = 0o40000;

describe('disk drivers and controllers of real-world documents on real QEMU', () => {
  it('cache, io, discard, error policies, iothread; qemu-xhci ports; the virtio-serial controller', async () => {
    const files = join(rig.root, 'files');
    execFileSync('mkdir', ['-p', files]);
    const qcow2 = join(files, 'root.qcow2');
    const raw = join(files, 'data.raw');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', qcow2, '64M']);
    execFileSync('qemu-img', ['create', '-q', '-f', 'raw', raw, '8M']);
    const xml = `<domain type='qemu'>
  <name>rw-disks</name>
  <memory unit='MiB'>128</memory>
  <iothreads>1</iothreads>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none' io='native' discard='unmap' error_policy='stop' iothread='1'/>
      <source file='${qcow2}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='writethrough' error_policy='report' rerror_policy='ignore'/>
      <source file='${raw}'/>
      <target dev='sda' bus='sata'/>
    </disk>
    <controller type='usb' index='0' model='qemu-xhci' ports='15'/>
    <controller type='virtio-serial' index='0' model='virtio-non-transitional' ports='16'/>
    <channel type='unix'><source mode='bind'/><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
  </devices>
</domain>`;
    const { qmp, live, pid } = await rig.startWithProbe(xml);
    const get = (path: string, property: string) => qmp.execute('qom-get', { path, property });

    const blocks =
      await qmp.execute<
        Array<{
          qdev?: string;
          inserted?: { cache: { writeback: boolean; direct: boolean; 'no-flush': boolean } };
        }>
      >('query-block');
    const cacheOf = (id: string) =>
      blocks.find((b) => b.qdev === `/machine/peripheral/${id}/virtio-backend` || b.qdev === id)?.inserted
        ?.cache;
    expect(cacheOf('virtio-disk0')).toEqual({ writeback: true, direct: true, 'no-flush': false });
    expect(cacheOf('sata0-0-0')).toEqual({ writeback: false, direct: false, 'no-flush': false });
    // cache='none': QEMU holds the image with O_DIRECT; writethrough goes through the page cache.
    expect(openFlags(pid, qcow2).some((f) => (f & O_DIRECT) !== 0)).toBe(true);
    expect(openFlags(pid, raw).every((f) => (f & O_DIRECT) === 0)).toBe(true);
    expect(await get('/machine/peripheral/virtio-disk0', 'werror')).toBe('stop');
    expect(await get('/machine/peripheral/virtio-disk0', 'rerror')).toBe('stop');
    expect(await get('/machine/peripheral/virtio-disk0', 'iothread')).toMatch(/iothread1$/);
    expect(await get('/machine/peripheral/sata0-0-0', 'werror')).toBe('report');
    expect(await get('/machine/peripheral/sata0-0-0', 'rerror')).toBe('ignore');
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    const storage = argv
      .filter((a) => a.startsWith('{') && a.includes('"virtio-disk0-storage"'))
      .map((a) => JSON.parse(a))[0];
    expect(storage).toMatchObject({ aio: 'native', discard: 'unmap' });

    expect(await get('/machine/peripheral/usb', 'p2')).toBe(15);
    expect(await get('/machine/peripheral/usb', 'p3')).toBe(15);

    // The virtio-serial controller sits at the address the definition gives it, with the channel.
    const serial = live.controllers.find((c) => c.type === 'virtio-serial');
    expect(serial).toMatchObject({ alias: 'virtio-serial0', model: 'virtio-non-transitional', ports: 16 });
    const address = serial?.address;
    if (address?.type !== 'pci') throw new Error('no PCI address for virtio-serial0');
    const port = live.controllers.find((c) => c.type === 'pci' && c.index === address.bus);
    expect(port?.type === 'pci' && port.model).toBe('pcie-root-port');
    expect(await get('/machine/peripheral/virtio-serial0', 'parent_bus')).toMatch(
      new RegExp(`/${port?.alias}$`),
    );
    expect(await get('/machine/peripheral/virtio-serial0', 'addr')).toBe(
      (address.slot << 3) | address.function,
    );
    expect(await get('/machine/peripheral/virtio-serial0', 'max_ports')).toBe(16);
    expect(await get('/machine/peripheral/channel0', 'name')).toBe('org.qemu.guest_agent.0');
    const chardevs = await qmp.execute<Array<{ label: string; filename: string }>>('query-chardev');
    expect(chardevs.find((c) => c.label === 'charchannel0')?.filename).toContain(
      `${live.uuid}.org.qemu.guest_agent.0.sock`,
    );
  }, 120_000);

  it('virtio-non-transitional devices, e1000e and rtl8139 NICs with ROM settings, balloon polling, the i6300esb watchdog behind a pcie-to-pci-bridge', async () => {
    const files = join(rig.root, 'files');
    execFileSync('mkdir', ['-p', files]);
    const image = join(files, 'a.raw');
    execFileSync('qemu-img', ['create', '-q', '-f', 'raw', image, '8M']);
    const xml = `<domain type='qemu'>
  <name>rw-models</name>
  <memory unit='MiB'>128</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <disk device='disk' type='file' model='virtio-non-transitional'>
      <source file='${image}'/><target bus='virtio' dev='vda'/><driver name='qemu' type='raw'/>
    </disk>
    <interface type='user'><model type='e1000e'/><rom bar='off'/></interface>
    <interface type='user'><rom enabled='no'/></interface>
    <interface type='user'><model type='virtio-non-transitional'/></interface>
    <watchdog model='i6300esb' action='poweroff'/>
    <memballoon model='virtio-non-transitional' freePageReporting='on'><stats period='10'/></memballoon>
    <rng model='virtio-non-transitional'><backend model='random'>/dev/urandom</backend></rng>
  </devices>
</domain>`;
    const { qmp, live, pid } = await rig.startWithProbe(xml);
    const get = (id: string, property: string) =>
      qmp.execute('qom-get', { path: `/machine/peripheral/${id}`, property });
    expect(await get('virtio-disk0', 'type')).toBe('virtio-blk-pci-non-transitional');
    expect(await get('net2', 'type')).toBe('virtio-net-pci-non-transitional');
    expect(await get('balloon0', 'type')).toBe('virtio-balloon-pci-non-transitional');
    expect(await get('net0', 'type')).toBe('e1000e');
    expect(await get('net0', 'rombar')).toBe(0);
    expect(await get('net1', 'type')).toBe('rtl8139');
    expect(await get('net1', 'romfile')).toBe('');
    expect(await get('balloon0', 'guest-stats-polling-interval')).toBe(10);
    expect(await get('balloon0', 'free-page-reporting')).toBe(true);
    expect(await get('watchdog0', 'type')).toBe('i6300esb');
    // e1000e is PCI Express: behind a root port; rtl8139 and the i6300esb are conventional PCI,
    // behind the pcie-to-pci-bridge added for them (itself behind a root port), as libvirt does.
    const busOf = (alias: string) => {
      const nic = [...live.interfaces, ...(live.watchdogs ?? [])].find((d) => d.alias === alias);
      return live.controllers.find((c) => c.type === 'pci' && c.index === nic?.address?.bus);
    };
    expect(busOf('net0')).toMatchObject({ model: 'pcie-root-port' });
    expect(await get('net0', 'parent_bus')).toMatch(new RegExp(`/${busOf('net0')?.alias}$`));
    const bridge = live.controllers.find((c) => c.type === 'pci' && c.model === 'pcie-to-pci-bridge');
    expect(bridge?.alias).toMatch(/^pci\.\d+$/);
    expect(await get(bridge?.alias as string, 'type')).toBe('pcie-pci-bridge');
    const port = live.controllers.find((c) => c.type === 'pci' && c.index === bridge?.address?.bus);
    expect(port).toMatchObject({ model: 'pcie-root-port' });
    expect(await get(bridge?.alias as string, 'parent_bus')).toMatch(new RegExp(`/${port?.alias}$`));
    for (const alias of ['net1', 'watchdog0']) {
      const address = [...live.interfaces, ...(live.watchdogs ?? [])].find((d) => d.alias === alias)?.address;
      expect(busOf(alias)).toBe(bridge);
      expect(address?.slot).toBeGreaterThan(0);
      expect(await get(alias, 'parent_bus')).toMatch(new RegExp(`/${bridge?.alias}$`));
      expect(await get(alias, 'addr')).toBe(((address?.slot ?? 0) << 3) | (address?.function ?? 0));
    }
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    expect(argv.join(' ')).toContain('-action watchdog=poweroff');
  }, 120_000);

  it('pc machine: IDE disk and CD-ROM on the PIIX3 channels, the IDE controller at 00:01.1', async () => {
    const files = join(rig.root, 'files');
    execFileSync('mkdir', ['-p', files]);
    const disk = join(files, 'hd.raw');
    const iso = join(files, 'cd.iso');
    execFileSync('qemu-img', ['create', '-q', '-f', 'raw', disk, '8M']);
    execFileSync('qemu-img', ['create', '-q', '-f', 'raw', iso, '1M']);
    const xml = `<domain type='qemu'>
  <name>rw-ide</name>
  <memory unit='MiB'>128</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='${disk}'/><target dev='hda' bus='ide'/></disk>
    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='${iso}'/><target dev='hdc' bus='ide'/><readonly/></disk>
  </devices>
</domain>`;
    const { qmp, live } = await rig.startWithProbe(xml);
    expect(live.controllers).toContainEqual(
      expect.objectContaining({
        type: 'ide',
        alias: 'ide',
        address: expect.objectContaining({ slot: 1, function: 1 }),
      }),
    );
    const get = (id: string, property: string) =>
      qmp.execute('qom-get', { path: `/machine/peripheral/${id}`, property });
    expect(await get('ide0-0-0', 'type')).toBe('ide-hd');
    expect(await get('ide0-1-0', 'type')).toBe('ide-cd');
    expect(await get('ide0-0-0', 'parent_bus')).toMatch(/ide\.0$/);
    expect(await get('ide0-1-0', 'parent_bus')).toMatch(/ide\.1$/);
    expect(await get('ide0-1-0', 'unit')).toBe(0);
    const blocks =
      await qmp.execute<
        Array<{ qdev?: string; removable: boolean; inserted?: { ro: boolean; file: string } }>
      >('query-block');
    const cd = blocks.find((b) => b.qdev === 'ide0-1-0');
    expect(cd).toMatchObject({ removable: true, inserted: { ro: true } });
    const pci =
      await qmp.execute<
        Array<{
          bus: number;
          devices: Array<{ slot: number; function: number; class_info: { class: number } }>;
        }>
      >('query-pci');
    // 0x0101: an IDE interface, at the PIIX3's function 1.
    expect(pci[0]?.devices).toContainEqual(
      expect.objectContaining({
        slot: 1,
        function: 1,
        class_info: expect.objectContaining({ class: 0x0101 }),
      }),
    );
  }, 120_000);
});

import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { fdsetIdOf } from '../../src/drivers/qemu/devices/fdset.js';
import type { QmpClient } from '../../src/drivers/qemu/qmp/client.js';
import { resolveDomainXml, xmlCanonical } from '../../src/stable/definition/xml.js';
import type { DomainDefinition, DomainDefinitionInput, PciAddress } from '../../src/stable/index.js';
import { useProbeRoot } from '../helpers/probe-root.js';

/*
 * The device model on a real QEMU: the machine type is stored versioned, every device's alias and
 * PCI address is in the stored definition and in toXML(), and the running QEMU has each device at
 * that address with that id (QMP query-pci and qom-get through a second monitor).
 */

const rig = useProbeRoot();

/** The versioned machine `qemu -machine help` lists as the alias's target (fails loudly without QEMU). */
function versioned(alias: string): string {
  const help = execFileSync('/usr/bin/qemu-system-x86_64', ['-machine', 'help'], { encoding: 'utf8' });
  const line = help.split('\n').find((l) => l.startsWith(`${alias} `));
  const name = line?.match(/\(alias of ([^)]+)\)/)?.[1];
  if (!name) throw new Error(`qemu -machine help lists no alias ${alias}`);
  return name;
}

function devicesOf(name: string, machine: string | undefined): DomainDefinitionInput {
  const disk = (file: string) => {
    const path = join(rig.root, 'lib', file);
    writeFileSync(path, Buffer.alloc(1024 * 1024));
    return path;
  };
  return {
    name,
    type: 'qemu',
    memoryKiB: 65536,
    currentMemoryKiB: 49152,
    ...(machine ? { os: { machine } } : {}),
    disks: [
      { type: 'file', source: disk('a.img'), target: { dev: 'vdb', bus: 'virtio' } },
      { type: 'file', source: disk('b.img'), target: { dev: 'sdb', bus: 'sata' } },
      { type: 'file', source: disk('c.img'), target: { dev: 'vda', bus: 'virtio' }, alias: 'ua-root' },
    ],
    interfaces: [
      { type: 'user', model: 'virtio', mac: '52:54:00:00:00:01' },
      { type: 'user', model: 'e1000' },
    ],
    controllers: [{ type: 'usb', model: 'qemu-xhci' }],
  };
}

interface PciDevice {
  bus: number;
  slot: number;
  function: number;
  qdev_id: string;
}

/** Every PCI device of the definition: its alias and address. */
function pciDevices(def: DomainDefinition): Array<{ alias: string; address: PciAddress }> {
  const out: Array<{ alias: string; address: PciAddress }> = [];
  const add = (d: { alias?: string; address?: { type: string } }) => {
    if (d.address?.type === 'pci' && d.alias) out.push({ alias: d.alias, address: d.address as PciAddress });
  };
  for (const c of def.controllers) if (c.alias !== 'ide') add(c);
  def.disks.forEach(add);
  def.interfaces.forEach(add);
  if (def.memballoon) add(def.memballoon);
  return out;
}

async function startWithMonitor(
  input: DomainDefinitionInput,
): Promise<{ qmp: QmpClient; def: DomainDefinition }> {
  const probe = join(rig.root, `${input.name}.qmp`);
  const dom = await rig.conn.defineDomain({
    ...input,
    qemuCommandline: { args: ['-qmp', `unix:${probe},server=on,wait=off`], env: [] },
  });
  const stored = dom.getDefinition();
  await dom.start({ paused: true });
  const qmp = await rig.probe(probe);
  // Start assigns nothing new: the running domain has the addresses defined.
  const live = dom.getDefinition();
  expect({ ...live, serials: stored.serials }).toEqual(stored);
  expect(resolveDomainXml(dom.toXML())).toEqual(xmlCanonical(live));
  return { qmp, def: live };
}

async function expectPlacement(qmp: QmpClient, def: DomainDefinition): Promise<void> {
  const buses = await qmp.execute<Array<{ bus: number; devices: PciDevice[] }>>('query-pci');
  const rootBus = buses.find((b) => b.bus === 0)?.devices ?? [];
  const devices = pciDevices(def);
  expect(devices.length).toBeGreaterThan(0);
  for (const { alias, address } of devices) {
    const path = `/machine/peripheral/${alias}`;
    const busAlias = def.controllers.find((c) => c.type === 'pci' && c.index === address.bus)?.alias;
    expect(await qmp.execute('qom-get', { path, property: 'parent_bus' })).toMatch(
      new RegExp(`/${busAlias}$`),
    );
    expect(await qmp.execute('qom-get', { path, property: 'addr' })).toBe(
      (address.slot << 3) | address.function,
    );
    if (address.bus === 0) {
      expect(rootBus).toContainEqual(
        expect.objectContaining({ qdev_id: alias, slot: address.slot, function: address.function }),
      );
    }
  }
  // Node names and fdsets derive from the disks' aliases.
  const nodes = await qmp.execute<Array<{ 'node-name': string }>>('query-named-block-nodes', { flat: true });
  const sets = await qmp.execute<Array<{ 'fdset-id': number }>>('query-fdsets');
  for (const disk of def.disks) {
    expect(nodes.map((n) => n['node-name'])).toContain(`${disk.alias}-format`);
    expect(sets.map((s) => s['fdset-id'])).toContain(fdsetIdOf(disk.alias as string));
    expect(
      await qmp.execute('qom-get', { path: `/machine/peripheral/${disk.alias}`, property: 'drive' }),
    ).toBe(`${disk.alias}-format`);
  }
}

describe('device model on a real QEMU', () => {
  it('pc: stored as the versioned i440fx type, devices on bus 0 at their defined slots', async () => {
    const dom = await rig.conn.defineDomain(devicesOf('dev-pc', 'pc'));
    const def = dom.getDefinition();
    expect(def.os.machine).toBe(versioned('pc'));
    expect(def.disks.map((d) => d.alias)).toEqual(['virtio-disk1', 'sata0-0-1', 'ua-root']);
    expect(def.interfaces.map((n) => n.alias)).toEqual(['net0', 'net1']);
    const xml = dom.toXML();
    expect(xml).toContain(`machine='${versioned('pc')}'`);
    expect(xml).toContain("<alias name='virtio-disk1'/>");
    expect(xml).toMatch(/<address type='pci' domain='0x0000' bus='0x00' slot='0x0[2-9]' function='0x0'\/>/);
    await dom.undefine();

    const { qmp, def: live } = await startWithMonitor(devicesOf('dev-pc2', 'pc'));
    await expectPlacement(qmp, live);
  });

  it('q35: stored versioned, PCIe devices behind root ports, the e1000 behind a pcie-to-pci-bridge, each at its defined place', async () => {
    const { qmp, def } = await startWithMonitor(devicesOf('dev-q35', 'q35'));
    expect(def.os.machine).toBe(versioned('q35'));
    // Five PCIe devices, and the root port of the bridge libvirt adds for the e1000.
    expect(def.controllers.filter((c) => c.type === 'pci' && c.model === 'pcie-root-port').length).toBe(6);
    const bridge = def.controllers.find((c) => c.type === 'pci' && c.model === 'pcie-to-pci-bridge');
    expect(def.interfaces.find((n) => n.model === 'e1000')?.address).toMatchObject({
      bus: bridge?.index,
      slot: 1,
    });
    await expectPlacement(qmp, def);
  });

  it('no machine type: the emulator default, versioned; given addresses are honoured', async () => {
    const input = devicesOf('dev-default', undefined);
    const { qmp, def } = await startWithMonitor({
      ...input,
      interfaces: [{ type: 'user', model: 'virtio', address: { type: 'pci', bus: 0, slot: 0x1d } }],
    });
    expect(def.os.machine).toBe(versioned('pc'));
    expect(def.interfaces[0]?.address).toEqual({ type: 'pci', domain: 0, bus: 0, slot: 0x1d, function: 0 });
    await expectPlacement(qmp, def);
  });
});

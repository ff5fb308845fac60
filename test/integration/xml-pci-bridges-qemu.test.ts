import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { QmpClient } from '../../src/drivers/qemu/qmp/client.js';
import { ErrorCode } from '../../src/errors.js';
import { useProbeRoot } from '../helpers/probe-root.js';

/*
 * libvirt's PCI controller models beyond the root ports, on real QEMU (TCG): a DMI-to-PCI bridge
 * with a pci-bridge behind it, a PCIe-to-PCI bridge, a PCIe switch, a PCIe expander bus with a root
 * port of its own (q35), a pci-bridge and a PCI expander bus (pc). Each domain starts paused;
 * query-pci's tree shows every bridge and every device behind the bus the definition names, and
 * qom-get the bridges' own numbers.
 */

const rig = useProbeRoot();

interface PciDevice {
  bus: number;
  slot: number;
  function: number;
  qdev_id: string;
  pci_bridge?: { devices?: PciDevice[] };
}

type Tree = Map<string, { parent: string; slot: number; fn: number; root: number }>;

/** Every device of query-pci's tree with the qdev id of the bridge it sits behind ('' for a root bus). */
async function pciTree(qmp: QmpClient): Promise<Tree> {
  const out: Tree = new Map();
  const walk = (devices: PciDevice[], parent: string, root: number) => {
    for (const d of devices) {
      out.set(d.qdev_id, { parent, slot: d.slot, fn: d.function, root });
      if (d.pci_bridge?.devices) walk(d.pci_bridge.devices, d.qdev_id, root);
    }
  };
  for (const bus of await qmp.execute<Array<{ bus: number; devices: PciDevice[] }>>('query-pci'))
    walk(bus.devices, '', bus.bus);
  return out;
}

/**
 * Lets the guest's firmware run and waits until query-pci shows every device of `ids`: QEMU lists
 * what is behind a bridge only once the firmware has numbered the bridge's bus.
 */
async function enumerated(name: string, qmp: QmpClient, ids: string[]): Promise<Tree> {
  await (await rig.conn.lookupDomain(name)).resume();
  const deadline = Date.now() + 60_000;
  for (;;) {
    const tree = await pciTree(qmp);
    if (ids.every((id) => tree.has(id))) return tree;
    if (Date.now() > deadline)
      throw new Error(`query-pci still lacks ${ids.filter((id) => !tree.has(id)).join(', ')} after 60 s`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Where QEMU put a device: the QOM path of its bus and its slot.function (`addr` is devfn). */
async function placed(qmp: QmpClient, id: string): Promise<{ bus: string; slot: number; fn: number }> {
  const get = (property: string) => qmp.execute('qom-get', { path: `/machine/peripheral/${id}`, property });
  const devfn = Number(await get('addr'));
  return { bus: String(await get('parent_bus')), slot: devfn >> 3, fn: devfn & 7 };
}

const domain = (name: string, machine: string, devices: string): string => `<domain type='qemu'>
  <name>${name}</name>
  <memory unit='MiB'>128</memory>
  <os><type arch='x86_64' machine='${machine}'>hvm</type></os>
  <devices>
${devices}
  </devices>
</domain>`;

describe('PCI bridges, switches and expander buses on real QEMU', () => {
  it('q35: DMI-to-PCI and pci-bridge, PCIe-to-PCI bridge, a switch, pxb-pcie, with devices behind each', async () => {
    const image = join(rig.root, 'disk.raw');
    execFileSync('qemu-img', ['create', '-q', '-f', 'raw', image, '1M']);
    const { qmp, live } = await rig.startWithProbe(
      domain(
        'bridges-q35',
        'q35',
        `    <controller type='pci' index='0' model='pcie-root'/>
    <controller type='pci' index='1' model='dmi-to-pci-bridge'><model name='i82801b11-bridge'/></controller>
    <controller type='pci' index='2' model='pci-bridge'><model name='pci-bridge'/><target chassisNr='56'/></controller>
    <controller type='pci' index='3' model='pcie-root-port'/>
    <controller type='pci' index='4' model='pcie-to-pci-bridge'/>
    <controller type='pci' index='5' model='pcie-root-port'/>
    <controller type='pci' index='6' model='pcie-switch-upstream-port'/>
    <controller type='pci' index='7' model='pcie-switch-downstream-port'/>
    <controller type='pci' index='8' model='pcie-switch-downstream-port'><target chassis='30' port='0x27'/></controller>
    <controller type='pci' index='9' model='pcie-expander-bus'><target busNr='200'/></controller>
    <controller type='pci' index='10' model='pcie-root-port'><address type='pci' bus='9' slot='0'/></controller>
    <interface type='user'><model type='e1000'/><address type='pci' bus='2' slot='3'/></interface>
    <interface type='user'><model type='rtl8139'/><address type='pci' bus='4' slot='1'/></interface>
    <interface type='user'><model type='virtio'/><address type='pci' bus='10' slot='0'/></interface>
    <disk type='file' device='disk'><source file='${image}'/><target dev='vda' bus='virtio'/>
      <address type='pci' bus='8' slot='0'/></disk>`,
      ),
    );
    const pci = live.controllers.filter((c) => c.type === 'pci');
    expect(pci.map((c) => [c.index, c.model, c.alias, c.address && [c.address.bus, c.address.slot]])).toEqual(
      [
        [0, 'pcie-root', 'pcie.0', undefined],
        [1, 'dmi-to-pci-bridge', 'pci.1', [0, 0x1e]],
        [2, 'pci-bridge', 'pci.2', [1, 0]],
        [3, 'pcie-root-port', 'pci.3', [0, expect.any(Number)]],
        [4, 'pcie-to-pci-bridge', 'pci.4', [3, 0]],
        [5, 'pcie-root-port', 'pci.5', [0, expect.any(Number)]],
        [6, 'pcie-switch-upstream-port', 'pci.6', [5, 0]],
        [7, 'pcie-switch-downstream-port', 'pci.7', [6, 0]],
        [8, 'pcie-switch-downstream-port', 'pci.8', [6, 1]],
        [9, 'pcie-expander-bus', 'pci.9', [0, expect.any(Number)]],
        [10, 'pcie-root-port', 'pci.10', [9, 0]],
      ],
    );

    const nic = (i: number) => live.interfaces[i]?.alias as string;
    const disk = live.disks[0]?.alias as string;
    // Where QEMU plugged each device in, before any guest code ran.
    expect(await placed(qmp, nic(0))).toEqual({ bus: '/machine/peripheral/pci.2/pci.2', slot: 3, fn: 0 });
    expect(await placed(qmp, disk)).toEqual({ bus: '/machine/peripheral/pci.8/pci.8', slot: 0, fn: 0 });
    const tree = await enumerated('bridges-q35', qmp, [nic(0), nic(1), nic(2), disk]);
    // What QEMU built: each bridge where the definition put it, each device behind its bridge.
    expect(tree.get('pci.1')).toMatchObject({ parent: '', slot: 0x1e, fn: 0, root: 0 });
    expect(tree.get('pci.2')).toMatchObject({ parent: 'pci.1', slot: 0 });
    expect(tree.get(nic(0))).toMatchObject({ parent: 'pci.2', slot: 3 });
    expect(tree.get('pci.4')).toMatchObject({ parent: 'pci.3', slot: 0 });
    expect(tree.get(nic(1))).toMatchObject({ parent: 'pci.4', slot: 1 });
    expect(tree.get('pci.6')).toMatchObject({ parent: 'pci.5', slot: 0 });
    expect(tree.get('pci.7')).toMatchObject({ parent: 'pci.6', slot: 0 });
    expect(tree.get('pci.8')).toMatchObject({ parent: 'pci.6', slot: 1 });
    expect(tree.get(disk)).toMatchObject({ parent: 'pci.8', slot: 0 });
    // The expander's bus is a root bus of its own, numbered as the definition says.
    expect(tree.get('pci.9')).toMatchObject({ parent: '', root: 0 });
    expect(tree.get('pci.10')).toMatchObject({ parent: '', slot: 0, root: 200 });
    expect(tree.get(nic(2))).toMatchObject({ parent: 'pci.10', slot: 0, root: 200 });

    const get = (path: string, property: string) => qmp.execute('qom-get', { path, property });
    expect(await get('/machine/peripheral/pci.1', 'type')).toBe('i82801b11-bridge');
    expect(await get('/machine/peripheral/pci.2', 'chassis_nr')).toBe(56);
    expect(await get('/machine/peripheral/pci.4', 'type')).toBe('pcie-pci-bridge');
    expect(await get('/machine/peripheral/pci.6', 'type')).toBe('x3130-upstream');
    expect(await get('/machine/peripheral/pci.8', 'type')).toBe('xio3130-downstream');
    expect(await get('/machine/peripheral/pci.8', 'chassis')).toBe(30);
    expect(await get('/machine/peripheral/pci.8', 'port')).toBe(0x27);
    expect(await get('/machine/peripheral/pci.9', 'type')).toBe('pxb-pcie');
    expect(await get('/machine/peripheral/pci.9', 'bus_nr')).toBe(200);
  }, 120_000);

  it('pc: a pci-bridge and a PCI expander bus with default numbers, devices behind both', async () => {
    const { qmp, live } = await rig.startWithProbe(
      domain(
        'bridges-pc',
        'pc',
        `    <controller type='pci' index='0' model='pci-root'/>
    <controller type='pci' index='1' model='pci-bridge'><address type='pci' bus='0' slot='5'/></controller>
    <controller type='pci' index='2' model='pci-expander-bus'/>
    <interface type='user'><model type='e1000'/><address type='pci' bus='1' slot='1'/></interface>
    <interface type='user'><model type='rtl8139'/><address type='pci' bus='2' slot='0'/></interface>`,
      ),
    );
    const bridge = live.controllers.find((c) => c.type === 'pci' && c.index === 1);
    const pxb = live.controllers.find((c) => c.type === 'pci' && c.index === 2);
    // libvirt's defaults: chassisNr is the index, the first expander bus is numbered 254.
    expect(bridge).toMatchObject({ model: 'pci-bridge', target: { chassisNr: 1 } });
    expect(pxb).toMatchObject({ model: 'pci-expander-bus', target: { busNr: 254 }, address: { bus: 0 } });

    const tree = await enumerated(
      'bridges-pc',
      qmp,
      live.interfaces.map((n) => n.alias as string),
    );
    expect(tree.get('pci.1')).toMatchObject({ parent: '', slot: 5, root: 0 });
    expect(tree.get(live.interfaces[0]?.alias as string)).toMatchObject({ parent: 'pci.1', slot: 1 });
    expect(tree.get('pci.2')).toMatchObject({ parent: '', slot: pxb?.address?.slot, root: 0 });
    // QEMU's pxb puts a PCI bridge of the same id on its bus: devices sit behind that, on bus 254.
    expect(tree.get(live.interfaces[1]?.alias as string)).toMatchObject({
      parent: 'pci.2',
      slot: 0,
      root: 254,
    });
    expect(await qmp.execute('qom-get', { path: '/machine/peripheral/pci.1', property: 'chassis_nr' })).toBe(
      1,
    );
    expect(await qmp.execute('qom-get', { path: '/machine/peripheral/pci.2', property: 'bus_nr' })).toBe(254);
  }, 120_000);

  it('refuses a topology QEMU or libvirt would not build, with the path', async () => {
    const refused = async (machine: string, devices: string, code: ErrorCode, path: string) => {
      await expect(rig.conn.defineDomain(domain('bridges-refused', machine, devices))).rejects.toMatchObject({
        code,
        details: expect.objectContaining({ path }),
      });
    };
    await refused(
      'pc',
      "<controller type='pci' index='1' model='pcie-switch-upstream-port'/>",
      ErrorCode.CONFIG_UNSUPPORTED,
      'controllers.0.model',
    );
    // A pci-bridge sits on a PCI bus on q35, never on the PCIe root.
    await refused(
      'q35',
      "<controller type='pci' index='1' model='pci-bridge'><address type='pci' bus='0' slot='4'/></controller>",
      ErrorCode.CONFIG_UNSUPPORTED,
      'controllers.0.address.bus',
    );
    // An upstream port's bus takes downstream ports only.
    await refused(
      'q35',
      `<controller type='pci' index='1' model='pcie-root-port'/>
       <controller type='pci' index='2' model='pcie-switch-upstream-port'/>
       <interface type='user'><model type='e1000e'/><address type='pci' bus='2' slot='0'/></interface>`,
      ErrorCode.CONFIG_UNSUPPORTED,
      'interfaces.0.address.bus',
    );
    // A bridge sits on a bus of lower index.
    await refused(
      'pc',
      `<controller type='pci' index='1' model='pci-bridge'><address type='pci' bus='2' slot='1'/></controller>
       <controller type='pci' index='2' model='pci-bridge'/>`,
      ErrorCode.XML_ERROR,
      'controllers.0.address.bus',
    );
    expect(await rig.conn.listDomains({ state: 'all' })).toEqual([]);
  });
});

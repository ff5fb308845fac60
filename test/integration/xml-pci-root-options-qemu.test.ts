import { describe, expect, it } from 'vitest';
import type { QmpClient } from '../../src/drivers/qemu/qmp/client.js';
import { useProbeRoot } from '../helpers/probe-root.js';

/*
 * PCI controller options on real QEMU (TCG, paused): the root's 64-bit PCI hole (`<pcihole64>`),
 * hot-plug off on a root port and on a pc machine's root bus (`<target hotplug>`), and a root port
 * of Intel's ioh3420 model (`<model name>`), as libvirt writes them; read back through QMP.
 */

const rig = useProbeRoot();

const doc = (name: string, machine: string, controllers: string): string => `<domain type='qemu'>
  <name>${name}</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='${machine}'>hvm</type></os>
  <features><acpi/></features>
  <devices>
${controllers}
  </devices>
</domain>`;

interface QomProperty {
  name: string;
  type: string;
}

/** The QOM path of the built-in device of `type` on the pc machine's PCI bus. */
async function builtIn(qmp: QmpClient, type: string): Promise<string> {
  const bus = '/machine/i440fx/pci.0';
  const children = await qmp.execute<QomProperty[]>('qom-list', { path: bus });
  const found = children.find((c) => c.type === `link<${type}>`);
  if (!found) throw new Error(`QEMU has no ${type}`);
  return `${bus}/${found.name}`;
}

describe('PCI root and root port options on real QEMU', () => {
  it('q35: a 1 GiB 64-bit hole, an ioh3420 root port without hot-plug next to a generic one', async () => {
    const { qmp, live } = await rig.startWithProbe(
      doc(
        'q35-opts',
        'q35',
        `    <controller type='pci' index='0' model='pcie-root'><pcihole64 unit='GiB'>1</pcihole64></controller>
    <controller type='pci' index='1' model='pcie-root-port'><model name='ioh3420'/><target chassis='1' port='0x10' hotplug='off'/></controller>
    <controller type='pci' index='2' model='pcie-root-port'/>`,
      ),
    );
    expect(live.controllers.find((c) => c.type === 'pci' && c.index === 1)).toMatchObject({
      modelName: 'ioh3420',
      target: { hotplug: false },
    });
    expect(await qmp.execute('qom-get', { path: '/machine/q35', property: 'pci-hole64-size' })).toBe(2 ** 30);
    const get = (id: string, property: string) =>
      qmp.execute('qom-get', { path: `/machine/peripheral/${id}`, property });
    expect(await get('pci.1', 'type')).toBe('ioh3420');
    expect(await get('pci.1', 'hotplug')).toBe(false);
    expect(await get('pci.2', 'type')).toBe('pcie-root-port');
    expect(await get('pci.2', 'hotplug')).toBe(true);
  });

  it('pc: the 64-bit hole and ACPI hot-plug into the root bus turned off', async () => {
    const { qmp } = await rig.startWithProbe(
      doc(
        'pc-opts',
        'pc',
        `    <controller type='pci' index='0' model='pci-root'><pcihole64 unit='KiB'>1048576</pcihole64><target hotplug='off'/></controller>`,
      ),
    );
    expect(await qmp.execute('qom-get', { path: '/machine/i440fx', property: 'pci-hole64-size' })).toBe(
      2 ** 30,
    );
    const pm = await builtIn(qmp, 'PIIX4_PM');
    expect(await qmp.execute('qom-get', { path: pm, property: 'acpi-root-pci-hotplug' })).toBe(false);
  });

  it('refuses the options where libvirt does, with the path', async () => {
    await expect(
      rig.conn.defineDomain(
        doc(
          'bad-hole',
          'q35',
          "<controller type='pci' index='1' model='pcie-root-port'><pcihole64>1024</pcihole64></controller>",
        ),
      ),
    ).rejects.toMatchObject({
      code: 'XML_ERROR',
      details: expect.objectContaining({ path: 'controllers.0.pcihole64KiB' }),
    });
    await expect(
      rig.conn.defineDomain(
        doc(
          'bad-hp',
          'q35',
          "<controller type='pci' index='1' model='pcie-to-pci-bridge'><target hotplug='off'/></controller>",
        ),
      ),
    ).rejects.toMatchObject({ code: 'XML_ERROR' });
    await expect(
      rig.conn.defineDomain(
        doc(
          'bad-name',
          'q35',
          "<controller type='pci' index='1' model='pci-bridge'><model name='ioh3420'/></controller>",
        ),
      ),
    ).rejects.toMatchObject({ code: 'CONFIG_UNSUPPORTED' });
  });
});

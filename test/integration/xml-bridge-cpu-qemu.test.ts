import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { QmpClient } from '../../src/drivers/qemu/qmp/client.js';
import { resolveDomainXml } from '../../src/stable/definition/xml.js';
import type { DomainDefinition } from '../../src/stable/index.js';
import { forThisHost } from '../helpers/env.js';
import { useProbeRoot } from '../helpers/probe-root.js';

/*
 * Two things virt-install documents need: the pcie-to-pci-bridge libvirt adds on q35 for a
 * conventional PCI device (an e1000 NIC, the i6300esb watchdog), and every `<feature policy>` of
 * `<cpu>`. Each document is defined, started paused on real QEMU (TCG) and looked at through a
 * second QMP monitor.
 */

const FIXTURES = join(import.meta.dirname, '..', 'fixtures', 'xml', 'virt-install');

const rig = useProbeRoot();

/** A virt-install fixture with its disk image made under the root, for this host. */
function fixture(file: string): string {
  const image = join(rig.root, 'existing.qcow2');
  if (!existsSync(image)) execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', image, '64M']);
  return forThisHost(readFileSync(join(FIXTURES, file), 'utf8')).replaceAll(
    '/var/lib/virtkit-test/existing.qcow2',
    image,
  );
}

async function startWithProbe(xml: string): Promise<{ qmp: QmpClient; live: DomainDefinition }> {
  const probe = join(rig.root, 'probe.qmp');
  const withProbe = xml
    .replace(/<domain ([^>]*)>/, `<domain $1 xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>`)
    .replace(
      '</domain>',
      `<qemu:commandline><qemu:arg value='-qmp'/><qemu:arg value='unix:${probe},server=on,wait=off'/></qemu:commandline></domain>`,
    );
  const dom = await rig.conn.defineDomain(withProbe);
  await dom.start({ paused: true });
  const qmp = await rig.probe(probe);
  const live = dom.getDefinition();
  // The persistent definition round-trips (the live one adds output-only pty paths).
  expect(resolveDomainXml(dom.toXML({ inactive: true }))).toEqual(dom.getDefinition({ inactive: true }));
  return { qmp, live };
}

describe('pcie-to-pci-bridge on real QEMU', () => {
  it("virt-install's e1000 on q35: libvirt's bridge and root port are added, the NIC sits at the bridge's slot 1", async () => {
    const { qmp, live } = await startWithProbe(fixture('linux-e1000.xml'));
    // What libvirt's define gave the same document (virsh dumpxml), address for address.
    const libvirt = resolveDomainXml(fixture('linux-e1000.dumpxml.xml'));
    const pciOf = (d: DomainDefinition) =>
      d.controllers
        .filter((c) => c.type === 'pci')
        .map((c) => [c.index, c.type === 'pci' && c.model, c.address])
        .sort((a, b) => Number(a[0]) - Number(b[0]));
    expect(pciOf(live)).toEqual(pciOf(libvirt));
    expect(live.interfaces[0]?.address).toEqual(libvirt.interfaces[0]?.address);
    expect(live.interfaces[0]?.address).toMatchObject({ bus: 16, slot: 1 });

    const get = (id: string, property: string) =>
      qmp.execute('qom-get', { path: `/machine/peripheral/${id}`, property });
    expect(await get('pci.16', 'type')).toBe('pcie-pci-bridge');
    expect(await get('pci.16', 'parent_bus')).toMatch(/\/pci\.1$/);
    expect(await get('pci.1', 'type')).toBe('pcie-root-port');
    const nic = live.interfaces[0]?.alias as string;
    expect(await get(nic, 'type')).toBe('e1000');
    expect(await get(nic, 'parent_bus')).toMatch(/\/pci\.16$/);
    expect(await get(nic, 'addr')).toBe(1 << 3);
  });

  it("libvirt's dumpxml of it (the bridge given) starts as it is", async () => {
    const given = resolveDomainXml(fixture('linux-watchdog.dumpxml.xml'));
    const { qmp, live } = await startWithProbe(fixture('linux-watchdog.dumpxml.xml'));
    expect(live.watchdogs?.[0]?.address).toEqual(given.watchdogs?.[0]?.address);
    const get = (id: string, property: string) =>
      qmp.execute('qom-get', { path: `/machine/peripheral/${id}`, property });
    expect(await get('watchdog0', 'type')).toBe('i6300esb');
    expect(await get('watchdog0', 'parent_bus')).toMatch(/\/pci\.16$/);
  });

  it('refuses a bridge on i440fx and a device at its slot 0, with typed errors', async () => {
    const doc = (machine: string, devices: string) =>
      `<domain type='qemu'><name>bad</name><memory unit='MiB'>64</memory><os><type machine='${machine}'>hvm</type></os><devices>${devices}</devices></domain>`;
    await expect(
      rig.conn.defineDomain(doc('pc', "<controller type='pci' model='pcie-to-pci-bridge'/>")),
    ).rejects.toMatchObject({ code: 'CONFIG_UNSUPPORTED' });
    await expect(
      rig.conn.defineDomain(
        doc(
          'q35',
          "<controller type='pci' index='1' model='pcie-root-port'/><controller type='pci' index='2' model='pcie-to-pci-bridge'/><interface type='user'><model type='e1000'/><address type='pci' bus='2' slot='0'/></interface>",
        ),
      ),
    ).rejects.toMatchObject({ code: 'CONFIG_UNSUPPORTED', details: { path: 'interfaces.0.address.slot' } });
    expect(await rig.conn.listDomains({ state: 'all' })).toHaveLength(0);
  });
});

describe('<cpu><feature policy> on real QEMU', () => {
  it('force and require turn a feature on, disable and forbid off, optional leaves the model’s', async () => {
    const { qmp, live } = await startWithProbe(`<domain type='qemu'>
  <name>cpu-policies</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <cpu mode='custom' match='exact'>
    <model fallback='forbid'>qemu64</model>
    <feature policy='force' name='ssse3'/>
    <feature policy='require' name='popcnt'/>
    <feature policy='optional' name='sse4a'/>
    <feature policy='disable' name='lahf_lm'/>
    <feature policy='forbid' name='svm'/>
  </cpu>
</domain>`);
    expect(live.cpu?.features?.map((f) => f.policy)).toEqual([
      'force',
      'require',
      'optional',
      'disable',
      'forbid',
    ]);
    const cpus = await qmp.execute<Array<{ 'qom-path': string }>>('query-cpus-fast');
    const path = cpus[0]?.['qom-path'] as string;
    const feature = (property: string) => qmp.execute('qom-get', { path, property });
    // qemu64 has lahf-lm and svm and lacks ssse3, popcnt and sse4a.
    expect(await feature('ssse3')).toBe(true);
    expect(await feature('popcnt')).toBe(true);
    expect(await feature('sse4a')).toBe(false);
    expect(await feature('lahf-lm')).toBe(false);
    expect(await feature('svm')).toBe(false);
  });
});

import { describe, expect, it } from 'vitest';
import { useProbeRoot } from '../helpers/probe-root.js';

/*
 * <iommu model='intel'> on real QEMU (paused TCG, q35 with the split I/O APIC): QEMU's intel-iommu
 * device carries libvirt's driver options (qom-get), and a virtio NIC behind it uses the IOMMU
 * platform feature and ATS with the device IOTLB.
 */

const rig = useProbeRoot();

describe('intel IOMMU on real QEMU', () => {
  it('intremap, caching mode, device IOTLB and address width reach intel-iommu', async () => {
    const { qmp, live } = await rig.startWithProbe(`<domain type='qemu'>
  <name>iommu</name>
  <memory unit='MiB'>128</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <features><acpi/><apic/><ioapic driver='qemu'/></features>
  <devices>
    <interface type='user'><model type='virtio'/><driver iommu='on' ats='on'/></interface>
    <iommu model='intel'><driver intremap='on' caching_mode='on' eim='off' iotlb='on' aw_bits='48'/></iommu>
  </devices>
</domain>`);
    expect(live.iommu).toEqual({
      model: 'intel',
      driver: { intremap: true, cachingMode: true, eim: false, iotlb: true, awBits: 48 },
    });
    const get = (id: string, property: string) =>
      qmp.execute('qom-get', { path: `/machine/peripheral/${id}`, property });
    expect(await get('iommu0', 'type')).toBe('intel-iommu');
    expect(await get('iommu0', 'intremap')).toBe('on');
    expect(await get('iommu0', 'caching-mode')).toBe(true);
    expect(await get('iommu0', 'eim')).toBe('off');
    expect(await get('iommu0', 'device-iotlb')).toBe(true);
    expect(await get('iommu0', 'aw-bits')).toBe(48);
    const nic = live.interfaces[0]?.alias as string;
    expect(await get(nic, 'iommu_platform')).toBe(true);
    expect(await get(nic, 'ats')).toBe(true);
  });

  it('is refused on a pc machine, interrupt remapping without the split I/O APIC, eim under TCG', async () => {
    const doc = (machine: string, driver: string) =>
      `<domain type='qemu'><name>x</name><memory unit='MiB'>64</memory><os><type machine='${machine}'>hvm</type></os><devices><iommu model='intel'>${driver}</iommu></devices></domain>`;
    await expect(rig.conn.defineDomain(doc('pc', ''))).rejects.toMatchObject({
      code: 'CONFIG_UNSUPPORTED',
      details: { path: '/domain/devices/iommu/@model' },
    });
    await expect(rig.conn.defineDomain(doc('q35', "<driver intremap='on'/>"))).rejects.toMatchObject({
      code: 'XML_ERROR',
      details: { path: '/domain/devices/iommu/driver/@intremap' },
    });
    expect(await rig.conn.listDomains({ state: 'all' })).toEqual([]);
    // eim (x2APIC remapping) needs KVM's split irqchip: refused at start under TCG, before QEMU runs.
    const dom = await rig.conn.defineDomain(
      doc('q35', "<driver intremap='on' eim='on'/>").replace(
        '<os>',
        "<features><ioapic driver='qemu'/></features><os>",
      ),
    );
    await expect(dom.start({ paused: true })).rejects.toMatchObject({
      code: 'CONFIG_UNSUPPORTED',
      details: { path: 'iommu.driver.eim' },
    });
    expect((await dom.getInfo()).state).toBe('shutoff');
  });
});

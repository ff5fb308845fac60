import { describe, expect, it } from 'vitest';
import type { QmpClient } from '../../src/drivers/qemu/qmp/client.js';
import { ErrorCode } from '../../src/errors.js';
import { useProbeRoot } from '../helpers/probe-root.js';

/*
 * The USB controllers virt-install and libvirt's tests write, on real QEMU (TCG): an ICH9 USB 2
 * set (ich9-ehci1 with its three UHCI companions, virt-install's choice for older guests) and a
 * `<controller type='usb'>` without a model (libvirt's default per machine). Each document is
 * defined, started paused and inspected through a second QMP monitor (query-pci, qom-get); toXML()
 * of the live domain re-parses to the live definition.
 */

const rig = useProbeRoot();

interface PciDevice {
  slot: number;
  function: number;
  qdev_id: string;
  id: { vendor: number; device: number };
  class_info: { class: number };
}

const rootBus = async (qmp: QmpClient): Promise<PciDevice[]> =>
  (await qmp.execute<Array<{ bus: number; devices: PciDevice[] }>>('query-pci')).find((b) => b.bus === 0)
    ?.devices ?? [];

const domain = (machine: string, devices: string): string => `<domain type='qemu'>
  <name>usb-${machine}</name>
  <memory unit='MiB'>128</memory>
  <os><type arch='x86_64' machine='${machine}'>hvm</type></os>
  <devices>
${devices}
  </devices>
</domain>`;

// virt-install's ICH9 set, as it writes it: no index, no addresses.
const ich9Set = `    <controller type='usb' model='ich9-ehci1'/>
    <controller type='usb' model='ich9-uhci1'><master startport='0'/></controller>
    <controller type='usb' model='ich9-uhci2'><master startport='2'/></controller>
    <controller type='usb' model='ich9-uhci3'><master startport='4'/></controller>
    <input type='tablet' bus='usb'/>`;

/** Intel's ICH9 USB functions: EHCI 0x293a, UHCI 0x2934-0x2936. */
const ICH9 = { ehci: 0x293a, uhci1: 0x2934, uhci2: 0x2935, uhci3: 0x2936 };

describe('USB controllers of real-world documents on real QEMU', () => {
  it('pc machine: an ICH9 EHCI with its UHCI companions in one slot, a USB tablet on it', async () => {
    const { qmp, live } = await rig.startWithProbe(domain('pc', ich9Set));
    const usb = live.controllers.filter((c) => c.type === 'usb');
    expect(usb.map((c) => c.type === 'usb' && c.model)).toEqual([
      'ich9-ehci1',
      'ich9-uhci1',
      'ich9-uhci2',
      'ich9-uhci3',
    ]);
    // libvirt's layout: one slot, the EHCI at function 7, the companions at 0-2, 0 multifunction.
    const slot = usb[0]?.address?.slot as number;
    expect(usb.map((c) => c.address)).toEqual([
      { type: 'pci', domain: 0, bus: 0, slot, function: 7 },
      { type: 'pci', domain: 0, bus: 0, slot, function: 0, multifunction: true },
      { type: 'pci', domain: 0, bus: 0, slot, function: 1 },
      { type: 'pci', domain: 0, bus: 0, slot, function: 2 },
    ]);
    expect(usb.every((c) => c.alias === 'usb')).toBe(true);

    const devices = await rootBus(qmp);
    const at = (fn: number) => devices.find((d) => d.slot === slot && d.function === fn);
    expect(at(7)).toMatchObject({ qdev_id: 'usb', id: { vendor: 0x8086, device: ICH9.ehci } });
    expect(at(0)?.id.device).toBe(ICH9.uhci1);
    expect(at(1)?.id.device).toBe(ICH9.uhci2);
    expect(at(2)?.id.device).toBe(ICH9.uhci3);
    // The tablet sits on the EHCI's bus, which the companions' ports belong to.
    expect(
      await qmp.execute('qom-get', { path: '/machine/peripheral/input0', property: 'parent_bus' }),
    ).toMatch(/^\/machine\/peripheral\/usb\/usb\.0$/);
  }, 120_000);

  it('q35 machine: the ICH9 set at 00:1d, where the ICH9 has it', async () => {
    const { qmp, live } = await rig.startWithProbe(domain('q35', ich9Set));
    const ehci = live.controllers.find((c) => c.type === 'usb' && c.model === 'ich9-ehci1');
    expect(ehci?.address).toEqual({ type: 'pci', domain: 0, bus: 0, slot: 0x1d, function: 7 });
    const devices = await rootBus(qmp);
    expect(devices.find((d) => d.slot === 0x1d && d.function === 7)?.id.device).toBe(ICH9.ehci);
    expect(devices.find((d) => d.slot === 0x1d && d.function === 2)?.id.device).toBe(ICH9.uhci3);
  }, 120_000);

  it("a USB controller without a model: the PIIX3's UHCI on pc, a qemu-xhci on q35", async () => {
    const bare = "    <controller type='usb' index='0'/>";
    const pc = await rig.startWithProbe(domain('pc', bare));
    expect(pc.live.controllers.find((c) => c.type === 'usb')).toMatchObject({
      model: 'piix3-uhci',
      alias: 'usb',
      address: { bus: 0, slot: 1, function: 2 },
    });
    // 0x0c03: a USB controller, the PIIX3's function 2 (Intel 0x7020).
    expect((await rootBus(pc.qmp)).find((d) => d.slot === 1 && d.function === 2)).toMatchObject({
      qdev_id: 'usb',
      id: { vendor: 0x8086, device: 0x7020 },
      class_info: { class: 0x0c03 },
    });
    for (const dom of await rig.conn.listDomains({ state: 'active' })) await dom.destroy({ graceMs: 1000 });
    rig.closeProbes();

    const q35 = await rig.startWithProbe(domain('q35', bare));
    expect(q35.live.controllers.find((c) => c.type === 'usb')).toMatchObject({
      model: 'qemu-xhci',
      alias: 'usb',
    });
    const type = await q35.qmp.execute('qom-get', { path: '/machine/peripheral/usb', property: 'type' });
    expect(type).toBe('qemu-xhci');
  }, 120_000);

  it('refuses a companion without its master or its start port, and a second set, with their paths', async () => {
    const refused = async (devices: string, code: ErrorCode, path: string) => {
      await expect(rig.conn.defineDomain(domain('pc', devices))).rejects.toMatchObject({
        code,
        details: expect.objectContaining({ path }),
      });
    };
    await refused(
      "<controller type='usb' model='ich9-uhci1'><master startport='0'/></controller>",
      ErrorCode.CONFIG_UNSUPPORTED,
      'controllers.0.model',
    );
    await refused(
      "<controller type='usb' model='ich9-ehci1'/><controller type='usb' model='ich9-uhci2'/>",
      ErrorCode.CONFIG_UNSUPPORTED,
      'controllers.1.master',
    );
    await refused(
      "<controller type='usb' model='ich9-ehci1'/><controller type='usb' model='ich9-uhci2'><master startport='5'/></controller>",
      ErrorCode.XML_ERROR,
      'controllers.1.master.startport',
    );
    await refused(
      "<controller type='usb' model='ich9-ehci1'/><controller type='usb' model='qemu-xhci'/>",
      ErrorCode.CONFIG_UNSUPPORTED,
      'controllers.1',
    );
    expect(await rig.conn.listDomains()).toEqual([]);
  }, 60_000);
});

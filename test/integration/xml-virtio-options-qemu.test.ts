import { closeSync, ftruncateSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { useProbeRoot } from '../helpers/probe-root.js';

/*
 * Virtio device options (`<driver iommu ats packed page_per_vq event_idx>`), a virtio-scsi
 * controller's `<driver queues cmd_per_lun max_sectors ioeventfd iothread>` and qxl's memory sizes,
 * on real QEMU (paused TCG, q35: the virtio devices sit behind PCIe root ports, modern only, which
 * the IOMMU platform feature needs). QEMU's own properties (qom-get) show each option.
 */

const rig = useProbeRoot();

describe('virtio options on real QEMU', () => {
  it('disk, NIC, SCSI and serial controllers, balloon, input, RNG and qxl carry their options', async () => {
    const disk = join(rig.root, 'disk.raw');
    const fd = openSync(disk, 'w');
    ftruncateSync(fd, 1024 * 1024);
    closeSync(fd);
    const { qmp, live } = await rig.startWithProbe(`<domain type='qemu'>
  <name>virtio-options</name>
  <memory unit='MiB'>128</memory>
  <iothreads>1</iothreads>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' iommu='on' ats='on' packed='on' page_per_vq='on' event_idx='off'/>
      <source file='${disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <controller type='scsi' model='virtio-scsi'>
      <driver queues='4' cmd_per_lun='50' max_sectors='512' ioeventfd='on' iothread='1' packed='on'/>
    </controller>
    <controller type='virtio-serial'><driver ats='on'/></controller>
    <interface type='user'><model type='virtio'/><driver iommu='on' packed='on' event_idx='on'/></interface>
    <input type='keyboard' bus='virtio'><driver packed='on'/></input>
    <video><model type='qxl' ram='65536' vram='32768' vgamem='8192' vram64='131072' heads='1' primary='yes'/></video>
    <rng model='virtio-non-transitional'><backend model='random'>/dev/urandom</backend><driver iommu='on' page_per_vq='on'/></rng>
    <memballoon model='virtio'><driver packed='on' ats='off'/></memballoon>
  </devices>
</domain>`);
    expect(live.disks[0]?.virtio).toEqual({
      iommu: true,
      ats: true,
      packed: true,
      pagePerVq: true,
      eventIdx: false,
    });
    const get = (id: string, property: string) =>
      qmp.execute('qom-get', { path: `/machine/peripheral/${id}`, property });
    const alias = (c: { alias?: string | undefined } | undefined) => c?.alias as string;
    const vda = alias(live.disks[0]);
    expect(await get(vda, 'iommu_platform')).toBe(true);
    expect(await get(vda, 'ats')).toBe(true);
    expect(await get(vda, 'packed')).toBe(true);
    expect(await get(vda, 'page-per-vq')).toBe(true);
    expect(await get(vda, 'event_idx')).toBe(false);
    const scsi = alias(live.controllers.find((c) => c.type === 'scsi'));
    expect(await get(scsi, 'num_queues')).toBe(4);
    expect(await get(scsi, 'cmd_per_lun')).toBe(50);
    expect(await get(scsi, 'max_sectors')).toBe(512);
    expect(await get(scsi, 'ioeventfd')).toBe(true);
    expect(await get(scsi, 'iothread')).toBe('/objects/iothread1');
    expect(await get(scsi, 'packed')).toBe(true);
    expect(await get(alias(live.controllers.find((c) => c.type === 'virtio-serial')), 'ats')).toBe(true);
    const net = alias(live.interfaces[0]);
    expect(await get(net, 'iommu_platform')).toBe(true);
    expect(await get(net, 'packed')).toBe(true);
    expect(await get(net, 'event_idx')).toBe(true);
    expect(await get('input0', 'packed')).toBe(true);
    expect(await get('rng0', 'iommu_platform')).toBe(true);
    expect(await get('rng0', 'page-per-vq')).toBe(true);
    const balloon = alias(live.memballoon);
    expect(await get(balloon, 'packed')).toBe(true);
    expect(await get(balloon, 'ats')).toBe(false);
    // qxl: the RAM and VRAM bars in bytes, the framebuffer and the 64-bit bar in MiB.
    expect(await get('video0', 'ram_size')).toBe(64 * 1024 * 1024);
    expect(await get('video0', 'vram_size')).toBe(32 * 1024 * 1024);
    expect(await get('video0', 'vgamem_mb')).toBe(8);
    expect(await get('video0', 'vram64_size_mb')).toBe(128);
  });
});

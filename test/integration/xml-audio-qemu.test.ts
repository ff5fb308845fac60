import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { useProbeRoot } from '../helpers/probe-root.js';

/*
 * <audio> backends and <sound> cards on real QEMU (paused TCG): each card is on the PCI bus (at its
 * address when it has one) or the USB/ISA bus, wired to its backend (qom-get audiodev), and the
 * WAV backend really opened its file (QEMU writes the RIFF header when a card's voice opens).
 */

const rig = useProbeRoot();

const doc = (name: string, machine: string, devices: string) => `<domain type='qemu'>
  <name>${name}</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='${machine}'>hvm</type></os>
  <devices>${devices}</devices>
</domain>`;

type PciDevice = { slot: number; function: number; qdev_id: string; class_info: { class: number } };

describe('sound on real QEMU', () => {
  it('HD Audio, AC97, ES1370 and SB16 cards on none, alsa and WAV backends', async () => {
    const wav = join(rig.root, 'out.wav');
    const { qmp, live } = await rig.startWithProbe(
      doc(
        'sound',
        'pc',
        `<sound model='ich6'><codec type='micro'/><audio id='3'/><address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/></sound>
         <sound model='ac97'><audio id='2'/></sound>
         <sound model='es1370'/>
         <sound model='sb16'><audio id='3'/></sound>
         <graphics type='vnc'><audio id='1'/></graphics>
         <audio id='1' type='none'/>
         <audio id='2' type='alsa' timerPeriod='20000'><output voices='1' dev='default'/></audio>
         <audio id='3' type='file' path='${wav}'><output fixedSettings='yes'><settings frequency='22050' channels='1' format='s16'/></output></audio>`,
      ),
    );
    expect(live.sounds?.map((s) => s.model)).toEqual(['ich6', 'ac97', 'es1370', 'sb16']);
    const audiodev = (id: string) =>
      qmp.execute('qom-get', { path: `/machine/peripheral/${id}`, property: 'audiodev' });
    expect(await audiodev('sound0-codec0')).toBe('audio3');
    expect(await audiodev('sound1')).toBe('audio2');
    // Without <audio id>, the first backend.
    expect(await audiodev('sound2')).toBe('audio1');
    expect(await audiodev('sound3')).toBe('audio3');
    const codec = await qmp.execute('qom-list', { path: '/machine/peripheral/sound0-codec0' });
    expect(JSON.stringify(codec)).toContain('"cad"');
    const [bus0] = await qmp.execute<Array<{ devices: PciDevice[] }>>('query-pci');
    const byId = new Map((bus0?.devices ?? []).map((d) => [d.qdev_id, d]));
    expect(byId.get('sound0')).toMatchObject({ slot: 7, function: 0, class_info: { class: 0x0403 } });
    // AC97 and ES1370 are multimedia audio controllers (class 0x0401) QEMU placed.
    expect(byId.get('sound1')?.class_info.class).toBe(0x0401);
    expect(byId.get('sound2')?.class_info.class).toBe(0x0401);
    // The WAV backend opened its file; QEMU completes its RIFF/WAVE header (of the fixed format,
    // 22050 Hz mono) when it closes the backend, at exit after SIGTERM (graceful destroy).
    expect(existsSync(wav)).toBe(true);
    await (await rig.conn.lookupDomain('sound')).destroy({ graceful: true, graceMs: 60_000 });
    const header = readFileSync(wav);
    expect(header.subarray(0, 4).toString()).toBe('RIFF');
    expect(header.subarray(8, 12).toString()).toBe('WAVE');
    expect(header.readUInt16LE(22)).toBe(1);
    expect(header.readUInt32LE(24)).toBe(22050);
  });

  it('an ICH9 HD Audio card on q35 and a USB audio device, on the none backend libvirt adds', async () => {
    const { qmp, live } = await rig.startWithProbe(
      doc(
        'usbsound',
        'q35',
        "<controller type='usb' model='qemu-xhci'/><sound model='ich9'/><sound model='usb'/>",
      ),
    );
    // The define step added libvirt's default backend.
    expect(live.audios).toEqual([{ id: 1, type: 'none' }]);
    const get = (id: string, property: string) =>
      qmp.execute('qom-get', { path: `/machine/peripheral/${id}`, property });
    expect(await get('sound0-codec0', 'audiodev')).toBe('audio1');
    expect(await get('sound1', 'audiodev')).toBe('audio1');
    const type = await qmp.execute('qom-get', { path: '/machine/peripheral/sound0', property: 'type' });
    expect(type).toBe('ich9-intel-hda');
    expect(await get('sound1', 'type')).toBe('usb-audio');
  });
});

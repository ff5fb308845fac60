import { describe, expect, it } from 'vitest';
import { buildCommandLine } from '../../src/drivers/qemu/command-line.js';
import { assignDevices } from '../../src/drivers/qemu/devices/assign.js';
import { ErrorCode } from '../../src/errors.js';
import { resolveDefinition } from '../../src/stable/definition/validate.js';
import { formatDomainXml, parseDomainXml } from '../../src/stable/index.js';
import { thrownVirtError } from '../helpers/errors.js';

/*
 * <audio> backends and <sound> cards: parsed, formatted back to the same definition, and given the
 * -audiodev and -device arguments libvirt's qemuBuildAudioCommandLine and qemuBuildSoundCommandLine
 * write.
 */

const uuid = '1b4e28ba-2fa1-11d2-883f-0016d3cca427';
const doc = (devices: string, machine = 'pc') =>
  `<domain type='qemu'><name>d</name><uuid>${uuid}</uuid><memory unit='MiB'>64</memory><os><type machine='${machine}'>hvm</type></os><devices>${devices}</devices></domain>`;
const resolve = (xml: string) => resolveDefinition(parseDomainXml(xml));
const ctx = {
  monitorFd: 3,
  consolePath: '/r/c.log',
  homeDir: '/r/lib',
  runDir: '/r/run',
  diskFds: [],
  tapFds: [],
  nowMs: 0,
};
const args = (xml: string) => buildCommandLine(resolve(xml), ctx).argv;
const values = (argv: readonly string[], flag: string) =>
  argv.filter((_, i) => argv[i - 1] === flag).map((v) => (v.startsWith('{') ? JSON.parse(v) : v));
const roundTrips = (xml: string) => {
  const def = resolve(xml);
  expect(resolve(formatDomainXml(def))).toStrictEqual(def);
  return def;
};

const full = `<audio id='1' type='alsa' timerPeriod='50'>
  <input mixingEngine='yes' fixedSettings='yes' voices='1' bufferLength='100' dev='hw:0'>
    <settings frequency='44100' channels='2' format='s16'/>
  </input>
  <output mixingEngine='no' voices='2' dev='hw:1'/>
</audio>
<audio id='2' type='oss' tryMMap='yes' exclusive='no' dspPolicy='3'><output dev='/dev/dsp1' bufferCount='30' tryPoll='no'/></audio>
<audio id='3' type='file' path='/tmp/out.wav'/>`;

describe('audio backends', () => {
  it('parse, format back and become -audiodev with QEMU option names', () => {
    const def = roundTrips(doc(full));
    expect(def.audios?.[0]).toEqual({
      id: 1,
      type: 'alsa',
      timerPeriod: 50,
      input: {
        mixingEngine: true,
        fixedSettings: true,
        voices: 1,
        bufferLength: 100,
        dev: 'hw:0',
        settings: { frequency: 44100, channels: 2, format: 's16' },
      },
      output: { mixingEngine: false, voices: 2, dev: 'hw:1' },
    });
    expect(values(args(doc(full)), '-audiodev')).toEqual([
      {
        id: 'audio1',
        driver: 'alsa',
        'timer-period': 50,
        in: {
          'mixing-engine': true,
          'fixed-settings': true,
          voices: 1,
          'buffer-length': 100,
          frequency: 44100,
          channels: 2,
          format: 's16',
          dev: 'hw:0',
        },
        out: { 'mixing-engine': false, voices: 2, dev: 'hw:1' },
      },
      {
        id: 'audio2',
        driver: 'oss',
        'try-mmap': true,
        exclusive: false,
        'dsp-policy': 3,
        out: { dev: '/dev/dsp1', 'buffer-count': 30, 'try-poll': false },
      },
      { id: 'audio3', driver: 'wav', path: '/tmp/out.wav' },
    ]);
  });

  it('VNC names its backend', () => {
    const xml = doc(
      "<graphics type='vnc' port='-1' autoport='yes'><audio id='1'/></graphics><audio id='1' type='none'/>",
    );
    expect(roundTrips(xml).graphics?.[0]?.audio).toBe(1);
    expect(values(args(xml), '-vnc')[0]).toMatch(/^unix:.*\.vnc,audiodev=audio1$/);
  });
});

describe('sound cards', () => {
  it('HD Audio controllers with their codecs, AC97, ES1370, SB16 and USB audio', () => {
    const xml = doc(
      `<controller type='usb' model='qemu-xhci'/>
       <sound model='ich9'><codec type='micro'/><codec type='output'/><audio id='2'/></sound>
       <sound model='ich6'><address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/></sound>
       <sound model='ac97'/><sound model='es1370'><audio id='2'/></sound><sound model='sb16'/><sound model='usb'/>
       <audio id='1' type='none'/><audio id='2' type='file' path='/tmp/a.wav'/>`,
    );
    const def = roundTrips(xml);
    expect(def.sounds?.[0]).toEqual({ model: 'ich9', codecs: ['micro', 'output'], audio: 2 });
    const devices = values(args(xml), '-device').filter(
      (d) => typeof d === 'object' && String(d.id).startsWith('sound'),
    );
    expect(devices).toEqual([
      // The addressed card first, before anything QEMU places.
      { driver: 'intel-hda', id: 'sound1', bus: 'pci.0', addr: '0x4' },
      { driver: 'hda-duplex', id: 'sound1-codec0', bus: 'sound1.0', cad: 0, audiodev: 'audio1' },
      { driver: 'ich9-intel-hda', id: 'sound0' },
      { driver: 'hda-micro', id: 'sound0-codec0', bus: 'sound0.0', cad: 0, audiodev: 'audio2' },
      { driver: 'hda-output', id: 'sound0-codec1', bus: 'sound0.0', cad: 1, audiodev: 'audio2' },
      { driver: 'AC97', id: 'sound2', audiodev: 'audio1' },
      { driver: 'ES1370', id: 'sound3', audiodev: 'audio2' },
      { driver: 'sb16', id: 'sound4', audiodev: 'audio1' },
      { driver: 'usb-audio', id: 'sound5', bus: 'usb.0', audiodev: 'audio1' },
    ]);
  });

  it('a card without any backend gets libvirt default, no host audio, at define', () => {
    const def = assignDevices(resolve(doc("<sound model='ac97'/>")));
    expect(def.audios).toEqual([{ id: 1, type: 'none' }]);
    expect(values(buildCommandLine(def, ctx).argv, '-audiodev')).toEqual(['none,id=audio1']);
  });
});

describe('refusals name the place', () => {
  it.each([
    ["<audio id='1' type='pulseaudio'/>", ErrorCode.CONFIG_UNSUPPORTED, '/domain/devices/audio/@type'],
    ["<audio id='1' type='none' path='/x'/>", ErrorCode.CONFIG_UNSUPPORTED, '/domain/devices/audio/@path'],
    [
      "<audio id='1' type='alsa'><input bufferCount='2'/></audio>",
      ErrorCode.CONFIG_UNSUPPORTED,
      '/domain/devices/audio/input/@bufferCount',
    ],
    [
      "<audio id='1' type='none'><output><settings format='s24'/></output></audio>",
      ErrorCode.XML_ERROR,
      '/domain/devices/audio/output/settings/@format',
    ],
    [
      "<audio id='1' type='none'/><audio id='1' type='none'/>",
      ErrorCode.XML_ERROR,
      '/domain/devices/audio[2]/@id',
    ],
    [
      "<sound model='ac97'><audio id='4'/></sound><audio id='1' type='none'/>",
      ErrorCode.XML_ERROR,
      '/domain/devices/sound/audio/@id',
    ],
    [
      "<sound model='ac97'><codec type='duplex'/></sound>",
      ErrorCode.XML_ERROR,
      '/domain/devices/sound/codec',
    ],
    ["<sound model='pcspk'/>", ErrorCode.CONFIG_UNSUPPORTED, '/domain/devices/sound/@model'],
    [
      "<sound model='sb16'><address type='pci' bus='0' slot='5'/></sound>",
      ErrorCode.CONFIG_UNSUPPORTED,
      '/domain/devices/sound/address/@type',
    ],
  ])('%s', (body, code, path) => {
    expect(thrownVirtError(() => resolve(doc(body)))).toMatchObject({ code, details: { path } });
  });
});

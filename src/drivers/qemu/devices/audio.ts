import { ErrorCode, VirtError } from '../../../errors.js';
import type { DomainDefinition } from '../../../stable/definition/schema.js';
import type { QapiObject, QapiValue } from './qapi.js';

/*
 * `-audiodev` backends and sound card devices, as libvirt's qemuBuildAudioCommandLine and
 * qemuBuildSoundCommandLine write them (QEMU's Audiodev QAPI type, in JSON).
 */

type Audio = NonNullable<DomainDefinition['audios']>[number];
type Direction = NonNullable<Audio['input']>;
type Sound = NonNullable<DomainDefinition['sounds']>[number];

const DRIVER: Record<Audio['type'], string> = { none: 'none', alsa: 'alsa', oss: 'oss', file: 'wav' };

/** The id QEMU knows backend `id` by. */
export const audiodevId = (id: number): string => `audio${id}`;

function direction(d: Direction): Record<string, QapiValue> {
  const out: Record<string, QapiValue> = {};
  const put = (k: string, v: QapiValue | undefined) => {
    if (v !== undefined) out[k] = v;
  };
  put('mixing-engine', d.mixingEngine);
  put('fixed-settings', d.fixedSettings);
  put('voices', d.voices);
  put('buffer-length', d.bufferLength);
  put('frequency', d.settings?.frequency);
  put('channels', d.settings?.channels);
  put('format', d.settings?.format);
  put('dev', d.dev);
  put('buffer-count', d.bufferCount);
  put('try-poll', d.tryPoll);
  return out;
}

/** The `-audiodev` value of backend `a`. */
export function audiodevOf(a: Audio): QapiObject {
  const out: Record<string, QapiValue> = { id: audiodevId(a.id), driver: DRIVER[a.type] };
  if (a.timerPeriod !== undefined) out['timer-period'] = a.timerPeriod;
  if (a.path !== undefined) out.path = a.path;
  if (a.tryMMap !== undefined) out['try-mmap'] = a.tryMMap;
  if (a.exclusive !== undefined) out.exclusive = a.exclusive;
  if (a.dspPolicy !== undefined) out['dsp-policy'] = a.dspPolicy;
  if (a.input) out.in = direction(a.input);
  if (a.output) out.out = direction(a.output);
  return out;
}

const CARD: Record<Sound['model'], string> = {
  ich6: 'intel-hda',
  ich9: 'ich9-intel-hda',
  ac97: 'AC97',
  es1370: 'ES1370',
  sb16: 'sb16',
  usb: 'usb-audio',
};

/**
 * The `-device` values of sound card `i`: the card, then its HD Audio codecs. `place` gives a PCI
 * card its bus and address; `usbBus` is the USB controller's alias for a USB one.
 */
export function soundDevices(
  def: DomainDefinition,
  s: Sound,
  i: number,
  place: (address: Sound['address'], what: string) => Record<string, QapiValue>,
): QapiObject[] {
  const id = s.alias ?? `sound${i}`;
  // libvirt's default backend: the first one (the define step adds one when there is none).
  const backend = s.audio ?? def.audios?.[0]?.id;
  if (backend === undefined)
    throw new VirtError(ErrorCode.CONFIG_UNSUPPORTED, `sound card ${id} needs an <audio> backend`, {
      path: `sounds.${i}.audio`,
    });
  const audiodev = audiodevId(backend);
  if (s.model === 'ich6' || s.model === 'ich9') {
    const codecs = s.codecs ?? ['duplex'];
    return [
      { driver: CARD[s.model], id, ...place(s.address, `sound ${id}`) },
      ...codecs.map((c, cad) => ({
        driver: `hda-${c}`,
        id: `${id}-codec${cad}`,
        bus: `${id}.0`,
        cad,
        audiodev,
      })),
    ];
  }
  if (s.model === 'usb') {
    const usb = def.controllers.find((c) => c.type === 'usb' && c.model !== 'none');
    if (!usb?.alias)
      throw new VirtError(
        ErrorCode.CONFIG_UNSUPPORTED,
        'a USB sound device without a USB controller is not supported by virtkit (add a qemu-xhci controller)',
        { path: `sounds.${i}.model` },
      );
    return [{ driver: CARD.usb, id, bus: `${usb.alias}.0`, audiodev }];
  }
  if (s.model === 'sb16') return [{ driver: CARD.sb16, id, audiodev }];
  return [{ driver: CARD[s.model], id, audiodev, ...place(s.address, `sound ${id}`) }];
}

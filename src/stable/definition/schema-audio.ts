import { z } from 'zod';

/*
 * `<audio>` backends (QEMU's `-audiodev`) and `<sound>` cards. Field names follow libvirt's XML.
 * The backends are those QEMU 7.2 has without its GUI modules: no host audio (`none`), ALSA, OSS,
 * and a WAV file (`file`); a backend whose QEMU module is absent (pulseaudio, sdl, jack) or whose
 * display virtkit lacks (spice, dbus) is refused.
 */

const yes = z.boolean().optional();

/** One direction of a backend (libvirt's `<input>` or `<output>`; QEMU's `in`/`out`). */
const direction = z
  .strictObject({
    mixingEngine: yes,
    fixedSettings: yes,
    voices: z.number().int().min(1).max(64).optional(),
    /** Microseconds of buffered audio. */
    bufferLength: z.number().int().min(1).optional(),
    /** The host device (alsa: a PCM name; oss: a DSP device such as `/dev/dsp`). */
    dev: z.string().min(1).max(4096).optional(),
    /** oss only: the number of buffers. */
    bufferCount: z.number().int().min(1).optional(),
    /** oss only: poll the device instead of a timer. */
    tryPoll: yes,
    /** The fixed format the mixing engine uses (with `fixedSettings`). */
    settings: z
      .strictObject({
        frequency: z.number().int().min(1).optional(),
        channels: z.number().int().min(1).max(16).optional(),
        format: z.enum(['u8', 's8', 'u16', 's16', 'u32', 's32', 'f32']).optional(),
      })
      .optional(),
  })
  .optional();

/** An `<audio id type>` backend; a sound card or VNC refers to it by `id`. */
export const audioSchema = z.strictObject({
  id: z.number().int().min(1),
  type: z.enum(['none', 'alsa', 'oss', 'file']),
  /** Microseconds between the backend's timer ticks. */
  timerPeriod: z.number().int().min(1).optional(),
  /** file: the WAV file written (relative: to QEMU's working directory, as libvirt passes it). */
  path: z.string().min(1).max(4096).optional(),
  /** oss only. */
  tryMMap: yes,
  /** oss only: open the device exclusively. */
  exclusive: yes,
  /** oss only: the DSP policy, 0 to 10 (-1: QEMU's fragment default). */
  dspPolicy: z.number().int().min(-1).max(10).optional(),
  input: direction,
  output: direction,
});

/**
 * `<sound model>`: an emulated sound card (`ich6` and `ich9` are Intel HD Audio controllers with
 * codecs, `usb` a USB audio device on the USB controller) playing through backend `audio`
 * (libvirt's `<audio id>`; without it the first backend).
 */
export const soundSchema = z.strictObject({
  model: z.enum(['ich6', 'ich9', 'ac97', 'es1370', 'sb16', 'usb']),
  /** The HD Audio codecs (ich6, ich9); none given: one duplex codec, as libvirt. */
  codecs: z
    .array(z.enum(['duplex', 'micro', 'output']))
    .max(15)
    .optional(),
  audio: z.number().int().min(1).optional(),
  alias: z.string().optional(),
});

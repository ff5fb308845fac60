import { join } from 'node:path';
import { ErrorCode, VirtError } from '../../errors.js';
import type { DomainDefinition, PciAddress } from '../../stable/definition/schema.js';
import { audiodevId, audiodevOf, soundDevices } from './devices/audio.js';
import { channelSocketPath } from './devices/channel.js';
import { filesystemDevice, fsdevOption } from './devices/filesystem.js';
import { pciPlacement } from './devices/pci-bus.js';
import { type QapiObject, type QapiValue, qapiJson } from './devices/qapi.js';
import { virtioDevice } from './devices/virtio.js';
import { virtioProps } from './devices/virtio-options.js';

/*
 * QEMU arguments of the devices of schema-devices.ts, as libvirt's qemu_command.c builds them:
 * input devices, VNC, video, the virtio RNG, virtio-serial channels (the guest agent) and audio
 * backends. A device with a PCI address in the definition is placed there; one without is left to
 * QEMU, after every addressed device, so it never takes a slot the device model assigned.
 */

const esc = (value: string): string => value.replaceAll(',', ',,');
const unsupported = (path: string, what: string): VirtError =>
  new VirtError(ErrorCode.CONFIG_UNSUPPORTED, `${what} is not supported by virtkit`, { path });

/** Arguments for the extra devices of `def` (whose controllers are complete); `runDir` holds sockets. */
export function extraDeviceArgs(def: DomainDefinition, runDir: string): string[] {
  const args: string[] = [];
  const json = (flag: string, value: QapiObject) => args.push(flag, qapiJson(value));
  const place = (address: PciAddress | undefined, what: string) =>
    address ? pciPlacement(def, address, what) : {};

  for (const a of def.audios ?? []) {
    const dev = audiodevOf(a);
    // A plain backend in QEMU's short form, as before options existed.
    if (Object.keys(dev).length === 2 && a.type === 'none') args.push('-audiodev', `none,id=${dev.id}`);
    else json('-audiodev', dev);
  }

  // Filesystems with an address first, the others after every addressed device (below).
  const filesystems = (def.filesystems ?? []).map((fs, i) => ({ fs, i }));
  for (const { fs, i } of filesystems) args.push('-fsdev', fsdevOption(fs, i));
  for (const { fs, i } of filesystems.filter(({ fs }) => fs.address))
    json('-device', filesystemDevice(fs, i, place));

  // The device model addressed the watchdog: it goes before the devices QEMU places itself.
  for (const w of def.watchdogs ?? []) {
    const id = w.alias ?? 'watchdog0';
    json(
      '-device',
      w.model === 'i6300esb'
        ? { driver: 'i6300esb', id, ...place(w.address, `watchdog ${id}`) }
        : { driver: 'ib700', id },
    );
    // QEMU 7.2's -action, as libvirt writes it for a QEMU that has it.
    args.push('-action', `watchdog=${w.action}`);
  }

  // Sound cards with an address go before the devices QEMU places itself, the others after them.
  const sounds = (def.sounds ?? []).map((s, i) => ({ s, i }));
  for (const { s, i } of sounds.filter(({ s }) => s.address))
    for (const dev of soundDevices(def, s, i, place)) json('-device', dev);

  // libvirt's qemuBuildPanicCommandLine: the ISA pvpanic device (a hyperv one is hv-crash on -cpu).
  for (const p of def.panics ?? []) {
    if (p.model === 'isa') json('-device', { driver: 'pvpanic', ...(p.iobase ? { ioport: p.iobase } : {}) });
  }
  // QEMU then pauses a panicked guest instead of powering it off, and the driver applies on_crash.
  if (def.onCrash !== 'destroy' && (def.panics ?? []).length > 0) args.push('-action', 'panic=pause');

  (def.inputs ?? []).forEach((input, i) => {
    if (input.bus === 'ps2') {
      // The i8042 controller of pc and q35 machines provides them.
      if (input.type === 'tablet') throw unsupported(`inputs.${i}.bus`, 'a PS/2 tablet');
      return;
    }
    const id = input.alias ?? `input${i}`;
    if (input.bus === 'usb') {
      const usb = def.controllers.find((c) => c.type === 'usb' && c.model !== 'none');
      if (!usb?.alias) {
        throw unsupported(
          `inputs.${i}.bus`,
          'a USB input without a USB controller (add a qemu-xhci controller)',
        );
      }
      json('-device', {
        driver: `usb-${input.type === 'keyboard' ? 'kbd' : input.type}`,
        id,
        bus: `${usb.alias}.0`,
      });
      return;
    }
    json('-device', {
      driver: `virtio-${input.type}-pci`,
      id,
      ...place(input.address, `input ${id}`),
      ...virtioProps(input.virtio),
    });
  });

  for (const g of def.graphics ?? []) {
    const audio = g.audio === undefined ? '' : `,audiodev=${audiodevId(g.audio)}`;
    if (g.listen === undefined) {
      args.push('-vnc', `unix:${esc(g.socket ?? join(runDir, `${def.uuid}.vnc`))}${audio}`);
      continue;
    }
    const host = g.listen.includes(':') ? `[${g.listen}]` : g.listen;
    const port = g.port ?? -1;
    if (port !== -1 && port < 5900) throw unsupported('graphics.0.port', `VNC port ${port} (below 5900)`);
    // QEMU counts VNC displays from port 5900; `to=` lets it take the first free one.
    args.push('-vnc', `${port === -1 ? `${host}:0,to=99` : `${host}:${port - 5900}`}${audio}`);
  }

  (def.videos ?? []).forEach((v, i) => {
    if (v.model === 'none') return;
    const id = v.alias ?? `video${i}`;
    const primary = i === 0;
    const driver = {
      vga: 'VGA',
      cirrus: 'cirrus-vga',
      virtio: primary ? 'virtio-vga' : 'virtio-gpu-pci',
      bochs: 'bochs-display',
      qxl: primary ? 'qxl-vga' : 'qxl',
      ramfb: 'ramfb',
    }[v.model];
    const dev: Record<string, QapiValue> = { driver, id };
    if (v.vram !== undefined && (v.model === 'vga' || v.model === 'cirrus'))
      dev.vgamem_mb = Math.max(1, v.vram >> 10);
    if (v.heads !== undefined && (v.model === 'virtio' || v.model === 'qxl')) dev.max_outputs = v.heads;
    // libvirt's qemuBuildDeviceVideoStr: qxl's bars in bytes, its framebuffer and 64-bit bar in MiB.
    if (v.model === 'qxl') {
      if (v.ram !== undefined) dev.ram_size = v.ram * 1024;
      if (v.vram !== undefined) dev.vram_size = v.vram * 1024;
      if (v.vram64 !== undefined) dev.vram64_size_mb = v.vram64 >> 10;
      if (v.vgamem !== undefined) dev.vgamem_mb = v.vgamem >> 10;
    }
    if (v.model === 'virtio') Object.assign(dev, virtioProps(v.virtio));
    if (v.model === 'ramfb') json('-device', dev);
    else json('-device', { ...dev, ...place(v.address, `video ${id}`) });
  });

  (def.rngs ?? []).forEach((r, i) => {
    const id = r.alias ?? `rng${i}`;
    json('-object', { 'qom-type': 'rng-random', id: `obj${id}`, filename: r.backend });
    const dev: Record<string, QapiValue> = {
      driver: virtioDevice('virtio-rng-pci', r.model),
      rng: `obj${id}`,
      id,
      ...place(r.address, `rng ${id}`),
      ...virtioProps(r.virtio),
    };
    if (r.rate) {
      dev['max-bytes'] = r.rate.bytes;
      dev.period = r.rate.periodMs ?? 1000;
    }
    json('-device', dev);
  });

  for (const { fs, i } of filesystems.filter(({ fs }) => !fs.address))
    json('-device', filesystemDevice(fs, i, place));
  for (const { s, i } of sounds.filter(({ s }) => !s.address))
    for (const dev of soundDevices(def, s, i, place)) json('-device', dev);

  const channels = def.channels ?? [];
  const serialBus = def.controllers.find((c) => c.type === 'virtio-serial')?.alias;
  const consoles = def.consoles ?? [];
  if (channels.length + consoles.length > 0 && serialBus === undefined)
    throw new VirtError(ErrorCode.INTERNAL_ERROR, 'channels without a virtio-serial controller');
  // libvirt's qemuBuildConsoleCommandLine: a virtconsole on port 0 (hvc0), channels from port 1.
  consoles.forEach((_, i) => {
    args.push('-chardev', `pty,id=charconsole${i}`);
    json('-device', {
      driver: 'virtconsole',
      bus: `${serialBus}.0`,
      nr: i,
      chardev: `charconsole${i}`,
      id: `console${i}`,
    });
  });
  const names = new Set<string>();
  channels.forEach((c, i) => {
    if (names.has(c.name)) throw unsupported(`channels.${i}.name`, `a second channel named ${c.name}`);
    names.add(c.name);
    const id = c.alias ?? `channel${i}`;
    const path = channelSocketPath(def, c, runDir);
    args.push('-chardev', `socket,id=char${id},path=${esc(path)},server=on,wait=off`);
    json('-device', {
      driver: 'virtserialport',
      bus: `${serialBus}.0`,
      nr: i + 1,
      chardev: `char${id}`,
      id,
      name: c.name,
    });
  });
  return args;
}

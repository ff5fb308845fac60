import { describe, expect, it } from 'vitest';
import { buildCommandLine } from '../../src/drivers/qemu/command-line.js';
import { ErrorCode } from '../../src/errors.js';
import { resolveDefinition } from '../../src/stable/definition/validate.js';
import { formatDomainXml, parseDomainXml } from '../../src/stable/index.js';

/*
 * The devices virt-install adds besides disks and NICs: inputs, VNC, video, virtio RNG, the guest
 * agent channel and audio backends; parsed, formatted back to the same definition, and given the
 * QEMU arguments libvirt gives them.
 */

const uuid = '1b4e28ba-2fa1-11d2-883f-0016d3cca427';
const doc = (devices: string) =>
  `<domain type='qemu'><name>d</name><uuid>${uuid}</uuid><memory unit='MiB'>256</memory><os><type machine='q35'>hvm</type></os><devices>${devices}</devices></domain>`;
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
const argv = (xml: string) => buildCommandLine(resolve(xml), ctx).argv;
const argOf = (args: readonly string[], flag: string) => args.filter((_, i) => args[i - 1] === flag);
const devicesOf = (args: readonly string[]) =>
  argOf(args, '-device').map((d) => (d.startsWith('{') ? JSON.parse(d) : d)) as Array<
    Record<string, unknown>
  >;
const roundTrips = (xml: string) => {
  const def = resolve(xml);
  const out = formatDomainXml(def);
  expect(resolve(out)).toStrictEqual(def);
  return def;
};

const virtInstall = `
  <controller type='usb' model='qemu-xhci' ports='15'/>
  <channel type='unix'><source mode='bind'/><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
  <input type='tablet' bus='usb'/><input type='mouse' bus='ps2'/><input type='keyboard' bus='ps2'/>
  <input type='keyboard' bus='virtio'/>
  <graphics type='vnc' port='-1'/>
  <audio id='1' type='none'/>
  <video><model type='virtio' heads='1' primary='yes'/></video>
  <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>`;

describe('devices of virt-install documents', () => {
  it('parse and format back', () => {
    const def = roundTrips(doc(virtInstall.replace(" ports='15'", '')));
    expect(def.inputs).toEqual([
      { type: 'tablet', bus: 'usb' },
      { type: 'mouse', bus: 'ps2' },
      { type: 'keyboard', bus: 'ps2' },
      { type: 'keyboard', bus: 'virtio' },
    ]);
    expect(def.graphics).toEqual([{ type: 'vnc', port: -1 }]);
    expect(def.videos).toEqual([{ model: 'virtio', heads: 1, primary: true }]);
    expect(def.rngs).toEqual([{ model: 'virtio', backend: '/dev/urandom' }]);
    expect(def.channels).toEqual([{ type: 'unix', name: 'org.qemu.guest_agent.0' }]);
    expect(def.audios).toEqual([{ id: 1, type: 'none' }]);
  });

  it('get the QEMU devices libvirt gives them; VNC and the agent on sockets under run/', () => {
    const args = argv(doc(virtInstall.replace(" ports='15'", '')));
    const devices = devicesOf(args);
    expect(devices).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ driver: 'usb-tablet', id: 'input0', bus: 'usb.0' }),
        expect.objectContaining({ driver: 'virtio-keyboard-pci', id: 'input3' }),
        expect.objectContaining({ driver: 'virtio-vga', id: 'video0', max_outputs: 1 }),
        expect.objectContaining({ driver: 'virtio-rng-pci', id: 'rng0', rng: 'objrng0' }),
        expect.objectContaining({ driver: 'virtio-serial-pci', id: 'virtio-serial0' }),
        expect.objectContaining({
          driver: 'virtserialport',
          bus: 'virtio-serial0.0',
          nr: 1,
          chardev: 'charchannel0',
          name: 'org.qemu.guest_agent.0',
        }),
      ]),
    );
    // PS/2 devices are the machine's own.
    expect(devices.filter((d) => String(d.id ?? '').startsWith('input'))).toHaveLength(2);
    expect(argOf(args, '-vnc')).toEqual([`unix:/r/run/${uuid}.vnc`]);
    expect(argOf(args, '-audiodev')).toEqual(['none,id=audio1']);
    expect(argOf(args, '-chardev')).toContain(
      `socket,id=charchannel0,path=/r/run/${uuid}.org.qemu.guest_agent.0.sock,server=on,wait=off`,
    );
    expect(argOf(args, '-object').map((o) => JSON.parse(o))).toContainEqual({
      'qom-type': 'rng-random',
      id: 'objrng0',
      filename: '/dev/urandom',
    });
  });

  it('a virtio console is a virtconsole on port 0 of a virtio-serial controller added for it', () => {
    const xml = doc("<console type='pty'><target type='virtio'/></console>");
    const def = roundTrips(xml);
    expect(def.consoles).toEqual([{ type: 'pty', target: 'virtio' }]);
    expect(def.serials).toEqual([]);
    const args = argv(xml);
    expect(argOf(args, '-chardev')).toContain('pty,id=charconsole0');
    expect(devicesOf(args)).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ driver: 'virtio-serial-pci', id: 'virtio-serial0' }),
        { driver: 'virtconsole', bus: 'virtio-serial0.0', nr: 0, chardev: 'charconsole0', id: 'console0' },
      ]),
    );
    // Next to a serial port, the serial console stays its alias and the virtio one is added.
    const both = roundTrips(doc("<serial type='pty'/><console type='pty'><target type='virtio'/></console>"));
    expect(both.serials).toEqual([{ type: 'pty' }]);
    expect(both.consoles).toEqual([{ type: 'pty', target: 'virtio' }]);
  });

  it('an empty CD-ROM is a drive without a medium; only a CD-ROM may lack a source', () => {
    const xml = doc(
      "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/><target dev='sda' bus='sata'/><readonly/></disk>",
    );
    const def = roundTrips(xml);
    expect(def.disks[0]?.source).toBeUndefined();
    expect(formatDomainXml(def)).not.toContain('<source');
    const args = argv(xml);
    expect(argOf(args, '-add-fd')).toEqual([]);
    expect(argOf(args, '-blockdev')).toEqual([]);
    const cd = devicesOf(args).find((d) => d.driver === 'ide-cd');
    expect(cd).toBeDefined();
    expect(cd).not.toHaveProperty('drive');
    for (const device of ['disk', undefined]) {
      const attr = device === undefined ? '' : ` device='${device}'`;
      expect(() => resolve(doc(`<disk type='file'${attr}><target dev='vda' bus='virtio'/></disk>`))).toThrow(
        expect.objectContaining({
          code: ErrorCode.XML_ERROR,
          details: expect.objectContaining({ path: '/domain/devices/disk/source' }),
        }),
      );
    }
    expect(() =>
      argv(doc("<disk type='file' device='cdrom'><target dev='vda' bus='virtio'/><readonly/></disk>")),
    ).toThrow(expect.objectContaining({ code: ErrorCode.CONFIG_UNSUPPORTED }));
  });

  it('VNC on a listen address, video models, RNG rate', () => {
    const args = argv(
      doc(
        "<graphics type='vnc' port='5901' listen='127.0.0.1'/><video><model type='vga' vram='16384'/></video><video><model type='qxl'/></video><rng model='virtio'><rate bytes='1024' period='2000'/><backend model='random'>/dev/random</backend></rng>",
      ),
    );
    expect(argOf(args, '-vnc')).toEqual(['127.0.0.1:1']);
    const devices = devicesOf(args);
    expect(devices).toContainEqual({ driver: 'VGA', id: 'video0', vgamem_mb: 16 });
    expect(devices).toContainEqual({ driver: 'qxl', id: 'video1' });
    expect(devices).toContainEqual(
      expect.objectContaining({ driver: 'virtio-rng-pci', 'max-bytes': 1024, period: 2000 }),
    );
    expect(argOf(argv(doc("<graphics type='vnc' autoport='yes' listen='::1'/>")), '-vnc')).toEqual([
      '[::1]:0,to=99',
    ]);
  });

  it('a USB input without a USB controller is refused with its path', () => {
    const def = resolve(doc("<controller type='usb' model='none'/><input type='tablet' bus='usb'/>"));
    expect(() => buildCommandLine(def, ctx)).toThrow(
      expect.objectContaining({ code: ErrorCode.CONFIG_UNSUPPORTED, details: { path: 'inputs.0.bus' } }),
    );
  });
});

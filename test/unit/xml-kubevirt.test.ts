import { describe, expect, it } from 'vitest';
import { buildCommandLine } from '../../src/drivers/qemu/command-line.js';
import { assignDevices } from '../../src/drivers/qemu/devices/assign.js';
import { backingAlias, diskNodes } from '../../src/drivers/qemu/devices/disk.js';
import { ErrorCode } from '../../src/errors.js';
import { resolveDefinition } from '../../src/stable/definition/validate.js';
import { formatDomainXml, parseDomainXml } from '../../src/stable/index.js';

/*
 * The parts of KubeVirt's converter output virtkit reads (documents written for this test in its
 * shapes): what each becomes, what goes back into XML, and the neighbouring cases it refuses.
 */

const doc = (devices: string, head = '<uuid>0f9e2d3c-4b5a-6978-8796-a5b4c3d2e1f0</uuid>') =>
  `<domain type='qemu'><name>kv</name>${head}<memory unit='MiB'>64</memory><os><type machine='q35'>hvm</type></os><features><acpi/></features><devices>${devices}</devices></domain>`;
const resolve = (xml: string) => resolveDefinition(parseDomainXml(xml));
const roundTrips = (xml: string) => {
  const def = resolve(xml);
  expect(resolve(formatDomainXml(def))).toStrictEqual(def);
  return def;
};
const ctx = { monitorFd: 3, consolePath: '/r/c.log', homeDir: '/r/lib', tapFds: [], nowMs: 0 };
const refused = (xml: string, code: string, path: string) =>
  expect(() => resolve(xml)).toThrow(
    expect.objectContaining({ code, details: expect.objectContaining({ path }) }),
  );

const overlay = (backing: string, format = 'qcow2') =>
  `<disk type='file' device='disk'><driver name='qemu' type='${format}'/><source file='/i/o.qcow2'/>${backing}<target dev='vda' bus='virtio'/></disk>`;
const rawBacking =
  "<backingStore type='file'><format type='raw'/><source file='/i/base.img'/></backingStore>";

describe('<backingStore>', () => {
  it('a raw image under a qcow2 overlay: read-only nodes on their own fdset, the overlay backed by them', () => {
    const def = roundTrips(doc(overlay(rawBacking)));
    expect(def.disks[0]?.backingStore).toEqual({ type: 'file', format: 'raw', source: '/i/base.img' });
    // libvirt's end-of-chain marker inside it changes nothing.
    expect(
      resolve(doc(overlay(rawBacking.replace('</backingStore>', '<backingStore/></backingStore>')))),
    ).toEqual(def);
    const { argv } = buildCommandLine(def, { ...ctx, diskFds: [10], backingFds: [11] });
    const fds = argv.filter((_, i) => argv[i - 1] === '-add-fd');
    expect(fds).toEqual([
      expect.stringMatching(/^fd=10,/),
      expect.stringMatching(/^fd=11,set=\d+,opaque=\/i\/base\.img$/),
    ]);
    const blockdevs = argv.filter((_, i) => argv[i - 1] === '-blockdev').map((b) => JSON.parse(b));
    expect(blockdevs).toEqual([
      expect.objectContaining({
        'node-name': 'virtio-disk0-backing-storage',
        'read-only': true,
        driver: 'file',
      }),
      expect.objectContaining({
        'node-name': 'virtio-disk0-backing-format',
        'read-only': true,
        driver: 'raw',
      }),
      expect.objectContaining({ 'node-name': 'virtio-disk0-storage' }),
      expect.objectContaining({ 'node-name': 'virtio-disk0-format', backing: 'virtio-disk0-backing-format' }),
    ]);
    expect(() => buildCommandLine(def, { ...ctx, diskFds: [10] })).toThrow(
      expect.objectContaining({ code: ErrorCode.INTERNAL_ERROR }),
    );
  });

  it("block node names fit QEMU's 31 characters for KubeVirt's long aliases, and stay put for short ones", () => {
    expect(diskNodes('virtio-disk0')).toEqual({
      storage: 'virtio-disk0-storage',
      format: 'virtio-disk0-format',
    });
    const names = [
      'ua-cdrom_tray_unspecified',
      'ua-should_default_to_disk',
      'ua-cdrom_tray_unspecifiex',
    ].flatMap((alias) =>
      [diskNodes(alias), diskNodes(backingAlias(alias))].flatMap((n) => [n.storage, n.format]),
    );
    for (const name of names) expect(name).toMatch(/^[A-Za-z][A-Za-z0-9._-]{0,30}$/);
    expect(new Set(names).size).toBe(names.length);
    const long = doc(
      overlay(rawBacking).replace('<target', "<alias name='ua-cdrom_tray_unspecified'/><target"),
    );
    const argv = buildCommandLine(assignDevices(resolve(long)), {
      ...ctx,
      diskFds: [10],
      backingFds: [11],
    }).argv;
    const nodes = argv.filter((_, i) => argv[i - 1] === '-blockdev').map((b) => JSON.parse(b)['node-name']);
    expect(nodes.every((n: string) => n.length <= 31)).toBe(true);
  });

  it('refuses a raw overlay, a qcow2 backing image, a longer chain and a bare marker', () => {
    refused(doc(overlay(rawBacking, 'raw')), ErrorCode.XML_ERROR, '/domain/devices/disk/backingStore');
    refused(
      doc(overlay(rawBacking.replace("type='raw'", "type='qcow2'"))),
      ErrorCode.CONFIG_UNSUPPORTED,
      '/domain/devices/disk/backingStore/format/@type',
    );
    refused(
      doc(overlay(rawBacking.replace('</backingStore>', `${rawBacking}</backingStore>`))),
      ErrorCode.CONFIG_UNSUPPORTED,
      '/domain/devices/disk/backingStore/backingStore',
    );
    refused(
      doc(overlay('<backingStore/>')),
      ErrorCode.CONFIG_UNSUPPORTED,
      '/domain/devices/disk/backingStore',
    );
  });
});

describe('serial ports on UNIX sockets', () => {
  const unix = (mode: string, log = '') =>
    `<serial type='unix'><target port='0'/><source mode='${mode}' path='/run/kv/serial0'/>${log}</serial>`;

  it('bind with a log file, as KubeVirt writes it, next to a pty console that aliases it', () => {
    const def = roundTrips(
      doc(
        `${unix('bind', "<log file='/run/kv/serial0.log' append='on'/>")}<console type='pty'><target type='serial' port='0'/></console>`,
      ),
    );
    expect(def.serials).toEqual([
      {
        type: 'unix',
        mode: 'bind',
        path: '/run/kv/serial0',
        log: { file: '/run/kv/serial0.log', append: true },
      },
    ]);
    const { argv, live } = buildCommandLine(def, { ...ctx, diskFds: [] });
    expect(argv).toContain(
      'socket,id=charserial0,path=/run/kv/serial0,server=on,wait=off,logfile=/run/kv/serial0.log,logappend=on',
    );
    expect(live.serials).toEqual(def.serials);
    expect(formatDomainXml(def)).toContain("<console type='unix'>");
  });

  it('connect, without a log', () => {
    const def = roundTrips(doc(unix('connect')));
    expect(buildCommandLine(def, { ...ctx, diskFds: [] }).argv).toContain(
      'socket,id=charserial0,path=/run/kv/serial0',
    );
  });

  it('refuses one without a source or with a relative path', () => {
    refused(
      doc("<serial type='unix'><target port='0'/></serial>"),
      ErrorCode.XML_ERROR,
      '/domain/devices/serial',
    );
    refused(
      doc("<serial type='unix'><source mode='bind' path='run/s'/></serial>"),
      ErrorCode.XML_ERROR,
      '/domain/devices/serial/source/@path',
    );
  });
});

describe('virtio input models, the SMBIOS uuid, an hpet tick policy', () => {
  it('a virtio tablet with model virtio; refused on another bus or (non-)transitional, as libvirt', () => {
    const def = roundTrips(doc("<input type='tablet' bus='virtio' model='virtio'/>"));
    expect(def.inputs).toEqual([{ type: 'tablet', bus: 'virtio', model: 'virtio' }]);
    const { argv } = buildCommandLine(def, { ...ctx, diskFds: [] });
    expect(argv.some((a) => a.includes('"driver":"virtio-tablet-pci"'))).toBe(true);
    refused(
      doc("<input type='tablet' bus='usb' model='virtio'/>"),
      ErrorCode.XML_ERROR,
      '/domain/devices/input/@model',
    );
    for (const model of ['virtio-transitional', 'virtio-non-transitional']) {
      refused(
        doc(`<input type='keyboard' bus='virtio' model='${model}'/>`),
        ErrorCode.CONFIG_UNSUPPORTED,
        '/domain/devices/input/@model',
      );
    }
  });

  it('a document without <uuid> takes the SMBIOS system uuid; with one, the two must agree at start', () => {
    const sysinfo =
      "<sysinfo type='smbios'><system><entry name='uuid'>0F9E2D3C-4B5A-6978-8796-A5B4C3D2E1F0</entry></system></sysinfo>";
    const head = `<os><type machine='q35'>hvm</type><smbios mode='sysinfo'/></os>${sysinfo}`;
    const xml = (uuid: string) =>
      `<domain type='qemu'><name>kv</name>${uuid}<memory unit='MiB'>64</memory>${head}<features><acpi/></features></domain>`;
    expect(resolve(xml('')).uuid).toBe('0f9e2d3c-4b5a-6978-8796-a5b4c3d2e1f0');
    const other = resolve(xml('<uuid>11111111-2222-3333-4444-555555555555</uuid>'));
    expect(other.uuid).toBe('11111111-2222-3333-4444-555555555555');
    expect(() => buildCommandLine(assignDevices(other), { ...ctx, diskFds: [] })).toThrow(
      expect.objectContaining({ code: ErrorCode.XML_ERROR, details: { path: 'sysinfo.system.uuid' } }),
    );
  });

  it('<pmu state> becomes the vCPU pmu property', () => {
    const def = roundTrips(doc('').replace('<acpi/>', "<acpi/><pmu state='off'/>"));
    expect(def.features?.pmu).toBe(false);
    const { argv } = buildCommandLine(def, { ...ctx, diskFds: [] });
    expect(argv[argv.indexOf('-cpu') + 1]).toBe('qemu64,pmu=off');
  });

  it('an hpet tick policy is kept and has no effect (libvirt ignores it); a kvmclock one is refused', () => {
    const clock = (timer: string) =>
      doc('').replace('<devices>', `<clock offset='utc'>${timer}</clock><devices>`);
    const def = roundTrips(clock("<timer name='hpet' tickpolicy='delay' present='no'/>"));
    expect(def.clock?.timers).toEqual([{ name: 'hpet', tickpolicy: 'delay', present: false }]);
    const { argv } = buildCommandLine(def, { ...ctx, diskFds: [] });
    expect(argv[argv.indexOf('-machine') + 1]).toContain('hpet=off');
    const kvmclock = resolve(clock("<timer name='kvmclock' tickpolicy='delay'/>"));
    expect(() => buildCommandLine(kvmclock, { ...ctx, diskFds: [] })).toThrow(
      expect.objectContaining({ code: ErrorCode.CONFIG_UNSUPPORTED }),
    );
  });
});

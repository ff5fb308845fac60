import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { DomainDefinitionInput } from '../../src/stable/definition/schema.js';
import { resolveDefinition } from '../../src/stable/definition/validate.js';
import { QEMU_NS } from '../../src/stable/definition/xml.js';
import { ErrorCode, formatDomainXml, parseDomainXml, VirtError } from '../../src/stable/index.js';
import { openRoot, removeRoot, tempRoot } from '../helpers/env.js';

/** A minimal valid document with `inner` added inside <domain>. */
const doc = (inner = '', domainAttrs = "type='qemu'") =>
  `<domain ${domainAttrs}>\n  <name>t</name>\n  <memory unit='MiB'>64</memory>\n${inner}\n</domain>\n`;
const devices = (inner: string) => doc(`<devices>${inner}</devices>`);
const disk = (extra = '', target = "<target dev='vda' bus='virtio'/>") =>
  `<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/d.img'/>${target}${extra}</disk>`;

const parse = (xml: string) => parseDomainXml(xml);
const resolve = (xml: string) => resolveDefinition(parseDomainXml(xml));

function failure(xml: string): VirtError {
  try {
    parseDomainXml(xml);
  } catch (err) {
    if (!VirtError.is(err)) throw err;
    return err;
  }
  throw new Error(`the document was accepted:\n${xml}`);
}

function expectRejected(xml: string, code: string, path: string): VirtError {
  const err = failure(xml);
  expect({ code: err.code, path: err.details.path }).toEqual({ code, path });
  return err;
}

describe('memory units', () => {
  it.each([
    ['b', '1048576', 1024],
    ['bytes', '2048', 2],
    ['KB', '1024', 1000],
    ['k', '4', 4],
    ['KiB', '4', 4],
    ['MB', '1024', 1_000_000],
    ['M', '2', 2048],
    ['MiB', '2', 2048],
    ['GB', '2', 1_953_125],
    ['G', '1', 1_048_576],
    ['GiB', '1', 1_048_576],
    ['TB', '1', 976_562_500],
    ['T', '1', 1_073_741_824],
    ['TiB', '1', 1_073_741_824],
    ['mib', '3', 3072],
    ['kb', '2048', 2000],
  ])('%s: %s → %d KiB', (unit, value, kib) => {
    const xml = `<domain type='qemu'><name>t</name><memory unit='${unit}'>${value}</memory></domain>`;
    expect(parse(xml).memoryKiB).toBe(kib);
  });

  it('defaults to KiB', () => {
    expect(parse(`<domain type='qemu'><name>t</name><memory>65536</memory></domain>`).memoryKiB).toBe(65536);
  });

  it('converts currentMemory, maxMemory and hard_limit the same way', () => {
    const def = parse(
      doc(`<currentMemory unit='KB'>32768</currentMemory>
      <maxMemory slots='4' unit='G'>1</maxMemory>
      <memtune><hard_limit unit='MB'>128</hard_limit></memtune>`),
    );
    expect(def.currentMemoryKiB).toBe(32000);
    expect(def.maxMemory).toEqual({ kib: 1_048_576, slots: 4 });
    expect(def.memtune).toEqual({ hardLimitKiB: 125_000 });
  });

  it.each([
    ['MB', '1', 977],
    ['b', '1000', 1],
    ['GB', '1', 976_563],
    ['b', '1025', 2],
  ])('rounds %s %s up to whole KiB as libvirt does (%d)', (unit, value, kib) => {
    expect(
      parse(doc('').replace(/<memory[^<]*<\/memory>/, `<memory unit='${unit}'>${value}</memory>`)).memoryKiB,
    ).toBe(kib);
  });

  it.each([
    ['XB', '1', '/domain/memory/@unit'],
    ['', '1', '/domain/memory/@unit'],
    ['KiB', 'abc', '/domain/memory'],
    ['KiB', '-1', '/domain/memory'],
    ['KiB', '1.5', '/domain/memory'],
    ['KiB', '', '/domain/memory'],
    ['KiB', '0', '/domain/memory'],
    ['EiB', '99999', '/domain/memory'],
    ['KiB', '99999999999999999999999', '/domain/memory'],
  ])('rejects %s %s with XML_ERROR at %s', (unit, value, path) => {
    expectRejected(
      `<domain type='qemu'><name>t</name><memory unit='${unit}'>${value}</memory></domain>`,
      ErrorCode.XML_ERROR,
      path,
    );
  });
});

describe('supported elements', () => {
  it('name, uuid, title, description and type', () => {
    const def = parse(`<domain type='kvm'>
      <name>vm-1</name>
      <uuid>6a3c8a1e5d3b4a7b9a372b8b1f0c4d21</uuid>
      <title>A &amp; B</title>
      <description>  line one
line two &lt;x&gt; <![CDATA[<raw & kept>]]>  </description>
      <memory>1024</memory>
    </domain>`);
    expect(def).toEqual({
      type: 'kvm',
      name: 'vm-1',
      uuid: '6a3c8a1e-5d3b-4a7b-9a37-2b8b1f0c4d21',
      title: 'A & B',
      description: '  line one\nline two <x> <raw & kept>  ',
      memoryKiB: 1024,
      features: { acpi: false, apic: false },
    });
  });

  it('the domain id of virsh dumpxml output is ignored', () => {
    expect(parse(doc('', "type='qemu' id='7'")).name).toBe('t');
  });

  it('vcpu with current and placement=static', () => {
    expect(parse(doc("<vcpu placement='static' current='2'>4</vcpu>")).vcpu).toEqual({
      count: 4,
      current: 2,
    });
    expect(resolve(doc('')).vcpu).toEqual({ count: 1 });
  });

  it('cpu mode, model and topology; check/match/migratable defaults accepted', () => {
    const def = parse(
      doc(`<vcpu>8</vcpu><cpu mode='custom' match='exact' check='partial'>
        <model fallback='allow'>Skylake-Server</model>
        <topology sockets='2' dies='1' cores='2' threads='2'/></cpu>`),
    );
    expect(def.cpu).toEqual({
      mode: 'custom',
      model: 'Skylake-Server',
      topology: { sockets: 2, dies: 1, cores: 2, threads: 2 },
    });
    expect(parse(doc("<cpu mode='host-passthrough' check='none' migratable='on'/>")).cpu).toEqual({
      mode: 'host-passthrough',
    });
    expect(
      resolve(doc("<vcpu>2</vcpu><cpu><topology sockets='1' cores='2' threads='1'/></cpu>")).cpu,
    ).toEqual({
      topology: { sockets: 1, dies: 1, cores: 2, threads: 1 },
    });
  });

  it('os: type, machine, kernel, initrd, cmdline, boot order', () => {
    const def = parse(
      doc(`<os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
        <kernel>/boot/vmlinuz</kernel><initrd>/boot/initrd</initrd><cmdline>console=ttyS0 a=b</cmdline>
        <boot dev='cdrom'/><boot dev='hd'/><boot dev='network'/></os>`),
    );
    expect(def.os).toEqual({
      arch: 'x86_64',
      machine: 'pc-q35-7.2',
      kernel: '/boot/vmlinuz',
      initrd: '/boot/initrd',
      cmdline: 'console=ttyS0 a=b',
      boot: ['cdrom', 'hd', 'network'],
    });
    expect(parse(doc('<os><type>hvm</type><kernel>/k</kernel><cmdline/></os>')).os).toEqual({
      kernel: '/k',
      cmdline: '',
    });
  });

  it('features: absence means off, as in libvirt', () => {
    expect(parse(doc('')).features).toEqual({ acpi: false, apic: false });
    expect(parse(doc('<features/>')).features).toEqual({ acpi: false, apic: false });
    expect(parse(doc('<features><acpi/></features>')).features).toEqual({ acpi: true, apic: false });
    expect(parse(doc('<features><apic/><acpi/><pae/></features>')).features).toEqual({
      acpi: true,
      apic: true,
      pae: true,
    });
  });

  it('clock offset', () => {
    expect(parse(doc("<clock offset='localtime'/>")).clock).toEqual({ offset: 'localtime' });
    expect(resolve(doc('<clock/>')).clock).toEqual({ offset: 'utc' });
  });

  it('iothreads and the whole of cputune', () => {
    const def = resolve(
      doc(`<vcpu>4</vcpu><iothreads>2</iothreads>
      <cputune>
        <vcpupin vcpu='0' cpuset='1'/><vcpupin vcpu='3' cpuset='0-3,^2'/>
        <emulatorpin cpuset='0'/>
        <iothreadpin iothread='2' cpuset='1'/>
        <vcpusched vcpus='0-1' scheduler='fifo' priority='10'/>
        <vcpusched vcpus='2' scheduler='batch'/>
        <iothreadsched iothreads='1' scheduler='rr' priority='1'/>
      </cputune>`),
    );
    expect(def.iothreads).toBe(2);
    expect(def.cputune).toEqual({
      vcpupin: [
        { vcpu: 0, cpuset: '1' },
        { vcpu: 3, cpuset: '0-3,^2' },
      ],
      emulatorpin: { cpuset: '0' },
      iothreadpin: [{ iothread: 2, cpuset: '1' }],
      vcpusched: [
        { ids: '0-1', scheduler: 'fifo', priority: 10 },
        { ids: '2', scheduler: 'batch' },
      ],
      iothreadsched: [{ ids: '1', scheduler: 'rr', priority: 1 }],
    });
  });

  it('memoryBacking and memtune', () => {
    expect(parse(doc('<memoryBacking><hugepages/><locked/></memoryBacking>')).memoryBacking).toEqual({
      hugepages: true,
      locked: true,
    });
    expect(resolve(doc('<memoryBacking/>')).memoryBacking).toEqual({ locked: false, hugepages: false });
    expect(parse(doc('<memtune/>')).memtune).toEqual({});
  });

  it('on_poweroff, on_reboot, on_crash', () => {
    const def = parse(
      doc('<on_poweroff>restart</on_poweroff><on_reboot>destroy</on_reboot><on_crash> destroy </on_crash>'),
    );
    expect(def).toMatchObject({ onPoweroff: 'restart', onReboot: 'destroy', onCrash: 'destroy' });
  });

  it('disks: file and block, raw and qcow2, virtio and sata, cdrom, readonly, serial, boot, alias', () => {
    const def = resolve(
      devices(`<emulator>/usr/bin/qemu-system-x86_64</emulator>
      <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/a.qcow2'/>
        <target dev='vda' bus='virtio'/><serial>S-1</serial><boot order='1'/><alias name='ua-root'/></disk>
      <disk type='block' device='disk'><source dev='/dev/sdz'/><target dev='sda' bus='sata'/></disk>
      <disk type='file' device='cdrom'><driver name='qemu'/><source file='/x.iso'/><target dev='sdb' bus='sata'/><readonly/></disk>
      <disk type='file'><source file='/b.img'/><target dev='vdb'/></disk>`),
    );
    expect(def.emulator).toBe('/usr/bin/qemu-system-x86_64');
    expect(def.disks).toEqual([
      {
        type: 'file',
        device: 'disk',
        driver: { type: 'qcow2' },
        source: '/a.qcow2',
        target: { dev: 'vda', bus: 'virtio' },
        readonly: false,
        serial: 'S-1',
        bootOrder: 1,
        alias: 'ua-root',
      },
      {
        type: 'block',
        device: 'disk',
        driver: { type: 'raw' },
        source: '/dev/sdz',
        target: { dev: 'sda', bus: 'sata' },
        readonly: false,
      },
      {
        type: 'file',
        device: 'cdrom',
        driver: { type: 'raw' },
        source: '/x.iso',
        target: { dev: 'sdb', bus: 'sata' },
        readonly: true,
      },
      {
        type: 'file',
        device: 'disk',
        driver: { type: 'raw' },
        source: '/b.img',
        target: { dev: 'vdb', bus: 'virtio' },
        readonly: false,
      },
    ]);
  });

  it('interfaces: ethernet with a TAP (managed or not) and user', () => {
    const def = resolve(
      devices(`<interface type='ethernet'><mac address='52:54:00:aa:bb:cc'/><target dev='tap0' managed='no'/>
        <model type='virtio'/><driver queues='2'/><alias name='ua-net0'/></interface>
      <interface type='ethernet'><target dev='tap1'/><model type='e1000'/></interface>
      <interface type='ethernet'><model type='virtio'/></interface>
      <interface type='user'><mac address='52:54:00:aa:bb:cd'/><model type='virtio'/><alias name='net9'/></interface>`),
    );
    expect(def.interfaces).toEqual([
      {
        type: 'ethernet',
        mac: '52:54:00:aa:bb:cc',
        target: { dev: 'tap0', managed: false },
        model: 'virtio',
        queues: 2,
        alias: 'ua-net0',
      },
      { type: 'ethernet', target: { dev: 'tap1', managed: true }, model: 'e1000' },
      { type: 'ethernet', model: 'virtio' },
      { type: 'user', mac: '52:54:00:aa:bb:cd', model: 'virtio', alias: 'net9' },
    ]);
  });

  it('serials to file and pty, with the virsh dumpxml decorations', () => {
    const def = parse(
      devices(`<serial type='file'><source path='/var/log/s0.log'/><target type='isa-serial' port='0'><model name='isa-serial'/></target></serial>
      <serial type='pty' tty='/dev/pts/4'><source path='/dev/pts/4'/><target port='1'/></serial>
      <serial type='file'/>`),
    );
    expect(def.serials).toEqual([
      { type: 'file', path: '/var/log/s0.log' },
      { type: 'pty' },
      { type: 'file' },
    ]);
  });
});

describe('console folding', () => {
  it('a console aliasing serial 0 is folded into it', () => {
    const def = parse(
      devices(`<serial type='pty'><target port='0'/></serial>
      <console type='pty' tty='/dev/pts/3'><source path='/dev/pts/3'/><target type='serial' port='0'/></console>`),
    );
    expect(def.serials).toEqual([{ type: 'pty' }]);
  });

  it('a console before its serial, and a file console with the same path', () => {
    const def = parse(
      devices(`<console type='file'><source path='/l'/><target type='serial'/></console>
      <serial type='file'><source path='/l'/></serial>`),
    );
    expect(def.serials).toEqual([{ type: 'file', path: '/l' }]);
  });

  it('a console without a serial becomes serial 0', () => {
    expect(parse(devices("<console type='pty'><target type='serial' port='0'/></console>")).serials).toEqual([
      { type: 'pty' },
    ]);
    expect(parse(devices("<console type='file'><source path='/c.log'/></console>")).serials).toEqual([
      { type: 'file', path: '/c.log' },
    ]);
  });

  it("a console that differs from serial 0 is libvirt's alias of it: its own source is discarded", () => {
    // libvirt's virDomainDefAddConsoleCompat does the same (KubeVirt relies on it).
    expect(
      parse(devices("<serial type='file'><source path='/l'/></serial><console type='pty'/>")).serials,
    ).toEqual([{ type: 'file', path: '/l' }]);
    expect(
      parse(
        devices(
          "<serial type='file'><source path='/a'/></serial><console type='file'><source path='/b'/></console>",
        ),
      ).serials,
    ).toEqual([{ type: 'file', path: '/a' }]);
  });

  it('virtio consoles other than one pty on port 0, consoles on other ports and a second console are rejected', () => {
    expectRejected(
      devices("<console type='file'><source path='/c.log'/><target type='virtio'/></console>"),
      ErrorCode.CONFIG_UNSUPPORTED,
      '/domain/devices/console/@type',
    );
    expectRejected(
      devices("<console type='pty'><target type='virtio' port='1'/></console>"),
      ErrorCode.CONFIG_UNSUPPORTED,
      '/domain/devices/console/target/@port',
    );
    expectRejected(
      devices(
        "<console type='pty'><target type='virtio'/></console><console type='pty'><target type='virtio'/></console>",
      ),
      ErrorCode.CONFIG_UNSUPPORTED,
      '/domain/devices/console[2]',
    );
    expectRejected(
      devices("<console type='pty'><target type='xen'/></console>"),
      ErrorCode.CONFIG_UNSUPPORTED,
      '/domain/devices/console/target/@type',
    );
    expectRejected(
      devices(
        "<serial type='pty'/><serial type='pty'/><console type='pty'><target type='serial' port='1'/></console>",
      ),
      ErrorCode.CONFIG_UNSUPPORTED,
      '/domain/devices/console/target/@port',
    );
    expectRejected(
      devices("<serial type='pty'/><console type='pty'/><console type='pty'/>"),
      ErrorCode.CONFIG_UNSUPPORTED,
      '/domain/devices/console[2]',
    );
  });

  it('a serial port number that is not its index is rejected', () => {
    expectRejected(
      devices("<serial type='pty'><target port='1'/></serial>"),
      ErrorCode.CONFIG_UNSUPPORTED,
      '/domain/devices/serial/target/@port',
    );
  });
});

describe('QEMU command-line namespace', () => {
  it('maps qemu:arg and qemu:env', () => {
    const def = parse(
      doc(
        `<qemu:commandline><qemu:arg value='-set'/><qemu:arg value='device.x.y=1,2'/>
        <qemu:env name='FOO' value='a b'/><qemu:env name='EMPTY'/></qemu:commandline>`,
        `type='qemu' xmlns:qemu='${QEMU_NS}'`,
      ),
    );
    expect(def.qemuCommandline).toEqual({
      args: ['-set', 'device.x.y=1,2'],
      env: [
        { name: 'FOO', value: 'a b' },
        { name: 'EMPTY', value: '' },
      ],
    });
  });

  it('goes by the namespace URI, not by the prefix', () => {
    const def = parse(
      doc(
        `<q:commandline xmlns:q='${QEMU_NS}'><q:arg value='-no-hpet'/></q:commandline>`,
        "type='qemu' xmlns:qemu='urn:not-qemu'",
      ),
    );
    expect(def.qemuCommandline).toEqual({ args: ['-no-hpet'] });
    expectRejected(
      doc(
        "<qemu:commandline><qemu:arg value='-x'/></qemu:commandline>",
        "type='qemu' xmlns:qemu='urn:not-qemu'",
      ),
      ErrorCode.CONFIG_UNSUPPORTED,
      '/domain/qemu:commandline',
    );
  });

  it('an undeclared prefix is malformed XML', () => {
    const err = expectRejected(
      doc("<qemu:commandline><qemu:arg value='-x'/></qemu:commandline>"),
      ErrorCode.XML_ERROR,
      '/domain/qemu:commandline',
    );
    expect(err.details.line).toBe(4);
  });

  it('other elements of the namespace, and non-namespaced children, are rejected', () => {
    const attrs = `type='qemu' xmlns:qemu='${QEMU_NS}'`;
    expectRejected(
      doc("<qemu:capabilities><qemu:add capability='x'/></qemu:capabilities>", attrs),
      ErrorCode.CONFIG_UNSUPPORTED,
      '/domain/qemu:capabilities',
    );
    expectRejected(
      doc("<qemu:commandline><arg value='-x'/></qemu:commandline>", attrs),
      ErrorCode.CONFIG_UNSUPPORTED,
      '/domain/qemu:commandline/arg',
    );
    expectRejected(
      doc("<devices><qemu:arg value='-x'/></devices>", attrs),
      ErrorCode.CONFIG_UNSUPPORTED,
      '/domain/devices/qemu:arg',
    );
    expectRejected(
      doc('<qemu:commandline><qemu:arg/></qemu:commandline>', attrs),
      ErrorCode.XML_ERROR,
      '/domain/qemu:commandline/qemu:arg/@value',
    );
  });
});

describe('malformed XML', () => {
  it.each([
    ['mismatched end tag', "<domain type='qemu'>\n  <name>x</nam>\n</domain>", 2, 10],
    ['unclosed root', "<domain type='qemu'>\n  <name>x</name>\n", 1, 1],
    ['unquoted attribute', '<domain type=qemu>\n</domain>', 1, 9],
    ['repeated attribute', "<domain type='qemu' type='kvm'/>", 1, 21],
    ['undeclared entity', "<domain type='qemu'>\n  <name>&nbsp;</name>\n</domain>", 2, 9],
    ['bare ampersand', "<domain type='qemu'>\n<name>a & b</name></domain>", 2, 9],
    ['reference to NUL', "<domain type='qemu'><name>&#0;</name></domain>", 1, 27],
    ['control character', "<domain type='qemu'>\n\n  <name>\u0001</name></domain>", 3, 9],
    ['text after the root', "<domain type='qemu'/>\ntrailing", 2, 1],
    ['two roots', "<domain type='qemu'/>\n<domain type='qemu'/>", 2, 1],
    ['no root', '   ', 1, 4],
  ])('%s → XML_ERROR with line and column', (_what, xml, line, column) => {
    const err = failure(xml);
    expect(err.code).toBe(ErrorCode.XML_ERROR);
    expect({ line: err.details.line, column: err.details.column }).toEqual({ line, column });
  });

  it('an empty string and a non-string are XML_ERROR', () => {
    expect(failure('').code).toBe(ErrorCode.XML_ERROR);
    expect(failure(42 as unknown as string).code).toBe(ErrorCode.XML_ERROR);
  });

  it('a DOCTYPE is not accepted', () => {
    const err = failure("<!DOCTYPE domain [<!ENTITY x 'y'>]>\n<domain type='qemu'><name>&x;</name></domain>");
    expect(err.code).toBe(ErrorCode.CONFIG_UNSUPPORTED);
    expect(err.details).toMatchObject({ path: '/', line: 1, column: 1 });
  });

  it('comments, processing instructions and CRLF line ends are fine', () => {
    const xml = `<?xml version='1.0'?>\r\n<!-- a & b -->\r\n<domain type='qemu'><?pi x?><name>t<!-- c -->1</name>\r\n<memory>1024</memory></domain>\r\n<!-- end -->\r\n`;
    expect(parse(xml)).toMatchObject({ name: 't1', memoryKiB: 1024 });
  });

  it('element-level errors carry the line and column of the element', () => {
    const err = failure(doc('<devices>\n    <hostdev/></devices>'));
    expect(err.details).toMatchObject({ path: '/domain/devices/hostdev', line: 5, column: 5 });
  });
});

describe('unsupported elements and attributes', () => {
  it.each([
    ['graphics spice', devices("<graphics type='spice' port='-1'/>"), '/domain/devices/graphics/@type'],
    [
      'video acceleration',
      devices("<video><model type='virtio'><acceleration accel3d='yes'/></model></video>"),
      '/domain/devices/video/model/acceleration/@accel3d',
    ],
    ['sound ich7', devices("<sound model='ich7'/>"), '/domain/devices/sound/@model'],
    [
      'scsi controller model buslogic',
      devices("<controller type='scsi' index='0' model='buslogic'/>"),
      '/domain/devices/controller/@model',
    ],
    [
      'pci-bridge as an ioh3420',
      devices("<controller type='pci' index='1' model='pci-bridge'><model name='ioh3420'/></controller>"),
      '/domain/devices/controller/model/@name',
    ],
    ['hostdev', devices("<hostdev mode='subsystem' type='pci'/>"), '/domain/devices/hostdev'],
    ['input passthrough', devices("<input type='passthrough' bus='virtio'/>"), '/domain/devices/input/@type'],
    ['channel spicevmc', devices("<channel type='spicevmc'/>"), '/domain/devices/channel/@type'],
    [
      'rng egd',
      devices("<rng model='virtio'><backend model='egd'/></rng>"),
      '/domain/devices/rng/backend/@model',
    ],
    [
      'watchdog dump',
      devices("<watchdog model='i6300esb' action='dump'/>"),
      '/domain/devices/watchdog/@action',
    ],
    [
      'virtiofs',
      devices("<filesystem><driver type='virtiofs'/></filesystem>"),
      '/domain/devices/filesystem/driver/@type',
    ],
    ['xen memballoon', devices("<memballoon model='xen'/>"), '/domain/devices/memballoon/@model'],
    [
      'disk driver copy_on_read (second disk)',
      devices(
        disk() +
          disk('', "<target dev='vdb' bus='virtio'/>").replace(
            "type='raw'/>",
            "type='raw' copy_on_read='on'/>",
          ),
      ),
      '/domain/devices/disk[2]/driver/@copy_on_read',
    ],
    [
      'disk driver detect_zeroes',
      devices(disk().replace("type='raw'/>", "type='raw' detect_zeroes='on'/>")),
      '/domain/devices/disk/driver/@detect_zeroes',
    ],
    [
      'disk driver name',
      devices(disk().replace("name='qemu'", "name='tap'")),
      '/domain/devices/disk/driver/@name',
    ],
    [
      'disk format vmdk',
      devices(disk().replace("type='raw'/>", "type='vmdk'/>")),
      '/domain/devices/disk/driver/@type',
    ],
    ['volume disk', devices(disk().replace("type='file'", "type='volume'")), '/domain/devices/disk/@type'],
    ['isa controller', devices("<controller type='isa' index='0'/>"), '/domain/devices/controller/@type'],
    ['lun', devices(disk().replace("device='disk'", "device='lun'")), '/domain/devices/disk/@device'],
    ['sd bus', devices(disk('', "<target dev='sda' bus='sd'/>")), '/domain/devices/disk/target/@bus'],
    [
      'disk address of type ccw',
      devices(disk("<address type='ccw' cssid='0xfe'/>")),
      '/domain/devices/disk/address/@type',
    ],
    ['shareable disk', devices(disk('<shareable/>')), '/domain/devices/disk/shareable'],
    [
      'disk source startupPolicy',
      devices(disk().replace("file='/d.img'", "file='/d.img' startupPolicy='optional'")),
      '/domain/devices/disk/source/@startupPolicy',
    ],
    [
      'dev source of a file disk',
      devices(disk().replace("file='/d.img'", "dev='/dev/x'")),
      '/domain/devices/disk/source/@dev',
    ],
    [
      'interface type network',
      devices("<interface type='network'><source network='default'/></interface>"),
      '/domain/devices/interface/@type',
    ],
    ['interface type bridge', devices("<interface type='bridge'/>"), '/domain/devices/interface/@type'],
    [
      'ne2k_pci',
      devices("<interface type='user'><model type='ne2k_pci'/></interface>"),
      '/domain/devices/interface/model/@type',
    ],
    [
      'user interface target',
      devices("<interface type='user'><target dev='x'/><model type='virtio'/></interface>"),
      '/domain/devices/interface/target',
    ],
    [
      'user interface queues',
      devices("<interface type='user'><model type='virtio'/><driver queues='2'/></interface>"),
      '/domain/devices/interface/driver/@queues',
    ],
    [
      'vhost driver',
      devices("<interface type='ethernet'><model type='virtio'/><driver name='vhost'/></interface>"),
      '/domain/devices/interface/driver/@name',
    ],
    [
      'interface source with a network',
      devices("<interface type='ethernet'><source network='x'/><model type='virtio'/></interface>"),
      '/domain/devices/interface/source/@network',
    ],
    ['spiceport serial', devices("<serial type='spiceport'/>"), '/domain/devices/serial/@type'],
    [
      'serial tcp tls',
      devices("<serial type='tcp'><source host='h' service='1' tls='yes'/></serial>"),
      '/domain/devices/serial/source/@tls',
    ],
    [
      'serial tcp reconnect',
      devices("<serial type='tcp'><source host='h' service='1'><reconnect enabled='yes'/></source></serial>"),
      '/domain/devices/serial/source/reconnect',
    ],
    [
      'secure boot firmware',
      doc(
        "<os firmware='efi'><type>hvm</type><firmware><feature enabled='yes' name='secure-boot'/></firmware></os>",
      ),
      '/domain/os/firmware/feature',
    ],
    [
      'os loader stateless',
      doc("<os><type>hvm</type><loader stateless='yes'>/x</loader></os>"),
      '/domain/os/loader/@stateless',
    ],
    ['bios useserial', doc("<os><bios useserial='yes'/></os>"), '/domain/os/bios'],
    ['arch', doc("<os><type arch='aarch64'>hvm</type></os>"), '/domain/os/type/@arch'],
    ['xen os', doc('<os><type>xen</type></os>'), '/domain/os/type'],
    ['pm other', doc('<pm><suspend-to-ram/></pm>'), '/domain/pm/suspend-to-ram'],
    ['seclabel', doc("<seclabel type='none'/>"), '/domain/seclabel'],
    ['sysinfo fwcfg', doc("<sysinfo type='fwcfg'/>"), '/domain/sysinfo/@type'],
    ['iothreadids', doc('<iothreadids/>'), '/domain/iothreadids'],
    ['blkiotune', doc('<blkiotune/>'), '/domain/blkiotune'],
    ['cputune shares', doc('<cputune><shares>1024</shares></cputune>'), '/domain/cputune/shares'],
    [
      'nosharepages',
      doc('<memoryBacking><nosharepages/></memoryBacking>'),
      '/domain/memoryBacking/nosharepages',
    ],
    ['soft_limit', doc('<memtune><soft_limit>1</soft_limit></memtune>'), '/domain/memtune/soft_limit'],
    [
      'timer',
      doc(
        "<clock offset='utc'><timer name='rtc' tickpolicy='catchup'><catchup threshold='1'/></timer></clock>",
      ),
      '/domain/clock/timer/catchup',
    ],
    ['clock timezone', doc("<clock offset='timezone'/>"), '/domain/clock/@offset'],
    [
      'hyperv xmm_input',
      doc("<features><acpi/><hyperv><xmm_input state='on'/></hyperv></features>"),
      '/domain/features/hyperv/xmm_input',
    ],
    ['gic', doc("<features><gic version='2'/></features>"), '/domain/features/gic'],
    [
      'cpu numa interconnects',
      doc('<cpu><numa><interconnects/></numa></cpu>'),
      '/domain/cpu/numa/interconnects',
    ],
    ['cpu check full', doc("<cpu check='full'/>"), '/domain/cpu/@check'],
    ['cpu match minimum', doc("<cpu match='minimum'/>"), '/domain/cpu/@match'],
    ['cpu mode maximum', doc("<cpu mode='maximum'/>"), '/domain/cpu/@mode'],
    [
      'topology clusters',
      doc("<cpu><topology sockets='1' clusters='1' cores='1' threads='1'/></cpu>"),
      '/domain/cpu/topology/@clusters',
    ],
    ['vcpu placement auto', doc("<vcpu placement='auto'>1</vcpu>"), '/domain/vcpu/@placement'],
    [
      'memory dumpCore',
      doc('').replace("unit='MiB'", "unit='MiB' dumpCore='off'"),
      '/domain/memory/@dumpCore',
    ],
    ['on_crash rename-restart', doc('<on_crash>rename-restart</on_crash>'), '/domain/on_crash'],
    ['on_poweroff preserve', doc('<on_poweroff>preserve</on_poweroff>'), '/domain/on_poweroff'],
    ['domain type xen', doc('', "type='xen'"), '/domain/@type'],
    ['xml:lang', doc('').replace('<name>', "<name xml:lang='en'>"), '/domain/name/@xml:lang'],
    ['foreign namespace', doc("<x:extra xmlns:x='urn:x'/>"), '/domain/x:extra'],
    ['namespaced attribute', doc('', "type='qemu' xmlns:x='urn:x' x:flag='1'"), '/domain/@x:flag'],
  ])('%s → CONFIG_UNSUPPORTED at its path', (_what, xml, path) => {
    expectRejected(xml, ErrorCode.CONFIG_UNSUPPORTED, path);
  });
});

describe('malformed values', () => {
  it.each([
    ['domain type', doc('', "type='banana'"), '/domain/@type'],
    ['missing domain type', doc('', ''), '/domain/@type'],
    ['missing name', "<domain type='qemu'><memory>1</memory></domain>", '/domain/name'],
    ['missing memory', "<domain type='qemu'><name>x</name></domain>", '/domain/memory'],
    ['root element', '<network><name>x</name></network>', '/network'],
    ['default namespace on the root', doc('', "type='qemu' xmlns='urn:x'"), '/domain'],
    ['name twice', doc('<name>u</name>'), '/domain/name[2]'],
    ['vcpu text', doc('<vcpu>two</vcpu>'), '/domain/vcpu'],
    ['vcpu current', doc("<vcpu current='x'>2</vcpu>"), '/domain/vcpu/@current'],
    ['iothreads', doc('<iothreads>-1</iothreads>'), '/domain/iothreads'],
    ['on_poweroff junk', doc('<on_poweroff>explode</on_poweroff>'), '/domain/on_poweroff'],
    [
      'scheduler',
      doc("<cputune><vcpusched vcpus='0' scheduler='deadline'/></cputune>"),
      '/domain/cputune/vcpusched/@scheduler',
    ],
    [
      'managed',
      devices(
        "<interface type='ethernet'><target dev='t' managed='maybe'/><model type='virtio'/></interface>",
      ),
      '/domain/devices/interface/target/@managed',
    ],
    ['boot order', devices(disk("<boot order='first'/>")), '/domain/devices/disk/boot/@order'],
    ['clock offset', doc("<clock offset='mars'/>"), '/domain/clock/@offset'],
    ['text in an empty element', doc('<features><acpi>yes</acpi></features>'), '/domain/features/acpi'],
    ['text in a container', doc('<devices>stray</devices>'), '/domain/devices'],
  ])('%s → XML_ERROR at its path', (_what, xml, path) => {
    expectRejected(xml, ErrorCode.XML_ERROR, path);
  });
});

describe('semantic errors name the XML path and the typed field', () => {
  it.each([
    [
      'vcpupin for a vCPU that does not exist',
      doc("<vcpu>2</vcpu><cputune><vcpupin vcpu='0' cpuset='0'/><vcpupin vcpu='2' cpuset='1'/></cputune>"),
      '/domain/cputune/vcpupin[2]/@vcpu',
      'cputune.vcpupin.1.vcpu',
    ],
    [
      'currentMemory above memory',
      doc("<currentMemory unit='MiB'>128</currentMemory>"),
      '/domain/currentMemory',
      'currentMemoryKiB',
    ],
    [
      'duplicate disk target',
      devices(disk() + disk().replace('/d.img', '/e.img')),
      '/domain/devices/disk[2]/target/@dev',
      'disks.1.target.dev',
    ],
    [
      'topology that does not multiply to the vcpu count',
      doc("<vcpu>3</vcpu><cpu><topology sockets='1' cores='2' threads='1'/></cpu>"),
      '/domain/cpu/topology',
      'cpu.topology',
    ],
    [
      'current above the vcpu count',
      doc("<vcpu current='3'>2</vcpu>"),
      '/domain/vcpu/@current',
      'vcpu.current',
    ],
    [
      'iothreadpin for an iothread that does not exist',
      doc("<iothreads>1</iothreads><cputune><iothreadpin iothread='2' cpuset='0'/></cputune>"),
      '/domain/cputune/iothreadpin/@iothread',
      'cputune.iothreadpin.0.iothread',
    ],
    [
      'vcpusched for a vCPU that does not exist',
      doc("<vcpu>2</vcpu><cputune><vcpusched vcpus='0-2' scheduler='fifo' priority='1'/></cputune>"),
      '/domain/cputune/vcpusched/@vcpus',
      'cputune.vcpusched.0.ids',
    ],
    [
      'fifo without a priority',
      doc("<cputune><vcpusched vcpus='0' scheduler='fifo'/></cputune>"),
      '/domain/cputune/vcpusched/@priority',
      'cputune.vcpusched.0.priority',
    ],
    [
      'malformed cpuset',
      doc("<cputune><emulatorpin cpuset='0-'/></cputune>"),
      '/domain/cputune/emulatorpin/@cpuset',
      'cputune.emulatorpin.cpuset',
    ],
    ['initrd without kernel', doc('<os><initrd>/i</initrd></os>'), '/domain/os/initrd', 'os.initrd'],
    [
      'maxMemory below memory',
      doc("<maxMemory slots='2' unit='MiB'>32</maxMemory>"),
      '/domain/maxMemory',
      'maxMemory.kib',
    ],
    [
      'maxMemory without slots',
      doc("<maxMemory unit='MiB'>128</maxMemory>"),
      '/domain/maxMemory/@slots',
      'maxMemory.slots',
    ],
    ['bad name', doc('').replace('<name>t</name>', '<name>-bad name</name>'), '/domain/name', 'name'],
    ['bad uuid', doc('<uuid>not-a-uuid</uuid>'), '/domain/uuid', 'uuid'],
    ['empty machine', doc("<os><type machine=''>hvm</type></os>"), '/domain/os/type/@machine', 'os.machine'],
    [
      'relative disk source',
      devices(disk().replace('/d.img', 'd.img')),
      '/domain/devices/disk/source/@file',
      'disks.0.source',
    ],
    [
      'disk without source',
      devices("<disk type='file'><target dev='vda' bus='virtio'/></disk>"),
      '/domain/devices/disk/source',
      'disks.0.source',
    ],
    [
      'disk without target',
      devices("<disk type='file'><source file='/x'/></disk>"),
      '/domain/devices/disk/target',
      'disks.0.target',
    ],
    [
      'bad disk target name',
      devices(disk('', "<target dev='xvda' bus='virtio'/>")),
      '/domain/devices/disk/target/@dev',
      'disks.0.target.dev',
    ],
    [
      'bad MAC',
      devices("<interface type='user'><mac address='52:54'/><model type='virtio'/></interface>"),
      '/domain/devices/interface/mac/@address',
      'interfaces.0.mac',
    ],
    [
      'TAP name too long',
      devices(
        "<interface type='ethernet'><target dev='a-very-long-tap-name'/><model type='virtio'/></interface>",
      ),
      '/domain/devices/interface/target/@dev',
      'interfaces.0.target.dev',
    ],
    ['five serials', devices("<serial type='pty'/>".repeat(5)), '/domain/devices', 'serials'],
    [
      'bad env name',
      doc(
        `<qemu:commandline><qemu:env name='1X' value='y'/></qemu:commandline>`,
        `type='qemu' xmlns:qemu='${QEMU_NS}'`,
      ),
      '/domain/qemu:commandline/qemu:env/@name',
      'qemuCommandline.env.0.name',
    ],
  ])('%s', (_what, xml, path, field) => {
    const err = failure(xml);
    expect(err.code).toBe(ErrorCode.XML_ERROR);
    expect(err.details).toMatchObject({ path, field });
    expect(err.message).toContain(path);
  });
});

describe('formatDomainXml', () => {
  const full: DomainDefinitionInput = {
    name: 'fmt',
    uuid: '0b7e3c2a-9d4f-4e1b-8c6a-5f2d1e0a9b3c',
    title: "it's <bold> & 'quoted'",
    description: 'two\nlines\r\nand\ttab',
    type: 'kvm',
    memoryKiB: 1024,
    vcpu: { count: 2 },
    disks: [
      {
        type: 'file',
        source: "/path with 'quotes' & <angles>",
        target: { dev: 'vda', bus: 'virtio' },
        alias: 'virtio-disk0',
      },
    ],
    interfaces: [{ type: 'user', alias: 'net0' }],
    serials: [{ type: 'file', path: '/log' }],
    qemuCommandline: { args: ['-a\nb'], env: [] },
  };

  it('writes virsh-style XML: single quotes, two-space indent, escaped values, aliases, console', () => {
    const xml = formatDomainXml(resolveDefinition(full));
    expect(xml).toBe(`<domain type='kvm' xmlns:qemu='${QEMU_NS}'>
  <name>fmt</name>
  <uuid>0b7e3c2a-9d4f-4e1b-8c6a-5f2d1e0a9b3c</uuid>
  <title>it's &lt;bold&gt; &amp; 'quoted'</title>
  <description>two
lines&#13;
and\ttab</description>
  <memory unit='KiB'>1024</memory>
  <vcpu placement='static'>2</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/path with &apos;quotes&apos; &amp; &lt;angles&gt;'/>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
    </disk>
    <interface type='user'>
      <model type='virtio'/>
      <alias name='net0'/>
    </interface>
    <serial type='file'>
      <source path='/log'/>
      <target type='isa-serial' port='0'>
        <model name='isa-serial'/>
      </target>
    </serial>
    <console type='file'>
      <source path='/log'/>
      <target type='serial' port='0'/>
    </console>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-a&#10;b'/>
  </qemu:commandline>
</domain>
`);
    const back = resolveDefinition(parseDomainXml(xml));
    expect(back).toStrictEqual({ ...resolveDefinition(full), features: { acpi: true, apic: true } });
  });

  it('a definition without features reads back with ACPI and APIC on (what the typed API means)', () => {
    const def = resolveDefinition({ name: 'f', type: 'qemu', memoryKiB: 1024 });
    expect(def.features).toBeUndefined();
    expect(resolve(formatDomainXml(def)).features).toEqual({ acpi: true, apic: true });
    const off = resolveDefinition({
      name: 'f',
      type: 'qemu',
      memoryKiB: 1024,
      features: { acpi: false, apic: false },
    });
    expect(formatDomainXml(off)).toContain('  <features/>\n');
    expect(resolve(formatDomainXml(off)).features).toEqual({ acpi: false, apic: false });
  });

  it('rejects strings XML cannot carry, naming the field', () => {
    const def = resolveDefinition({ name: 'f', type: 'qemu', memoryKiB: 1024, title: 'bell\u0007' });
    expect(() => formatDomainXml(def)).toThrow(VirtError);
    try {
      formatDomainXml(def);
    } catch (err) {
      expect((err as VirtError).details.path).toBe('title');
    }
  });

  it('validates its input', () => {
    const bad = { name: 'f', type: 'qemu', memoryKiB: -1, uuid: '0b7e3c2a-9d4f-4e1b-8c6a-5f2d1e0a9b3c' };
    expect(() => formatDomainXml(bad as never)).toThrow(
      expect.objectContaining({ code: ErrorCode.XML_ERROR }),
    );
  });
});

describe('Connection.defineDomain(xml) and Domain.toXML()', () => {
  it('defines from XML, formats back, and rejects bad XML without defining anything', async () => {
    const root = tempRoot('vk-xml-');
    const conn = await openRoot(root);
    try {
      const xml = readFileSync(join(import.meta.dirname, '../fixtures/xml/tcg-direct-kernel.xml'), 'utf8');
      const dom = await conn.defineDomain(xml);
      expect(dom.name).toBe('tcg-kernel');
      expect(dom.uuid).toBe('0b7e3c2a-9d4f-4e1b-8c6a-5f2d1e0a9b3c');
      const again = await conn.lookupDomain('tcg-kernel');
      expect(again.toXML()).toBe(formatDomainXml(again.getDefinition()));
      expect(resolveDefinition(parseDomainXml(dom.toXML()))).toStrictEqual(dom.getDefinition());

      await expect(
        conn.defineDomain(devices('<hostdev/>').replace('<name>t</name>', '<name>g</name>')),
      ).rejects.toMatchObject({
        code: ErrorCode.CONFIG_UNSUPPORTED,
        details: { path: '/domain/devices/hostdev' },
      });
      await expect(conn.defineDomain('<domain')).rejects.toMatchObject({ code: ErrorCode.XML_ERROR });
      // A typed object is still accepted.
      await conn.defineDomain({ name: 'typed', type: 'qemu', memoryKiB: 65536 });
      expect((await conn.listDomains()).map((d) => d.name)).toEqual(['tcg-kernel', 'typed']);
      for (const d of await conn.listDomains()) await d.undefine();
    } finally {
      await conn.close();
      removeRoot(root);
    }
  });
});

import { describe, expect, it } from 'vitest';
import { buildCommandLine } from '../../src/drivers/qemu/command-line.js';
import { fdsetIdOf } from '../../src/drivers/qemu/devices/fdset.js';
import { resolveDefinition } from '../../src/stable/definition/validate.js';

const ctx = {
  monitorFd: 4,
  consolePath: '/r/log/vm.console.log',
  homeDir: '/r/lib',
  diskFds: [5, 6],
  tapFds: [],
};
const uuid = '1b4e28ba-2fa1-11d2-883f-0016d3cca427';
const def = (extra: object = {}) =>
  resolveDefinition({ name: 'vm', uuid, type: 'kvm', memoryKiB: 1048576, ...extra });
const argOf = (argv: readonly string[], flag: string) => argv.filter((_, i) => argv[i - 1] === flag);

describe('buildCommandLine', () => {
  it('is deterministic and starts QEMU paused, unconfigured, with QMP on the inherited socket', () => {
    const a = buildCommandLine(def(), ctx);
    expect(buildCommandLine(def(), ctx).argv).toEqual(a.argv);
    expect(a.argv.slice(0, 8)).toEqual([
      '-name',
      'guest=vm,debug-threads=on',
      '-S',
      '-uuid',
      uuid,
      '-no-user-config',
      '-nodefaults',
      '-msg',
    ]);
    expect(argOf(a.argv, '-chardev')).toContain('socket,id=charmonitor,fd=4,server=on,wait=off');
    expect(argOf(a.argv, '-mon')).toEqual(['chardev=charmonitor,id=monitor,mode=control']);
    expect(argOf(a.argv, '-accel')).toEqual(['kvm']);
    expect(argOf(a.argv, '-m')).toEqual(['size=1048576k']);
    expect(argOf(a.argv, '-smp')).toEqual(['1,maxcpus=1,sockets=1,dies=1,cores=1,threads=1']);
    expect(argOf(a.argv, '-display')).toEqual(['none']);
    expect(a.argv).not.toContain('-overcommit');
    expect(a.taints).toEqual([]);
    expect(a.env).toMatchObject({ LC_ALL: 'C', HOME: '/r/lib' });
  });

  it('maps topology, current vCPUs, maxMemory, locked memory and iothreads', () => {
    const { argv } = buildCommandLine(
      def({
        type: 'qemu',
        vcpu: { count: 4, current: 2 },
        cpu: { topology: { sockets: 1, cores: 2, threads: 2 } },
        maxMemory: { kib: 4194304, slots: 4 },
        memoryBacking: { locked: true },
        iothreads: 2,
      }),
      ctx,
    );
    expect(argOf(argv, '-accel')).toEqual(['tcg']);
    expect(argOf(argv, '-smp')).toEqual(['2,maxcpus=4,sockets=1,dies=1,cores=2,threads=2']);
    expect(argOf(argv, '-m')).toEqual(['size=1048576k,slots=4,maxmem=4194304k']);
    expect(argOf(argv, '-overcommit')).toEqual(['mem-lock=on']);
    expect(argOf(argv, '-device').join()).not.toContain('virtio-balloon-pci');
    expect(argOf(buildCommandLine(def({ currentMemoryKiB: 524288 }), ctx).argv, '-device')).toContain(
      '{"driver":"virtio-balloon-pci","id":"balloon0","bus":"pci.0","addr":"0x2"}',
    );
    expect(argOf(argv, '-object')).toEqual(['iothread,id=iothread1', 'iothread,id=iothread2']);
  });

  it('backs guest memory with hugetlbfs when asked, and refuses without a mount', () => {
    const hp = def({ memoryBacking: { hugepages: true } });
    const { argv } = buildCommandLine(hp, {
      ...ctx,
      hugepageMounts: { 2048: '/dev/hugepages' },
      defaultHugepageKiB: 2048,
    });
    expect(argOf(argv, '-object').map((o) => JSON.parse(o))).toContainEqual({
      'qom-type': 'memory-backend-file',
      id: 'pc.ram',
      'mem-path': '/dev/hugepages',
      prealloc: true,
      size: 1048576 * 1024,
    });
    expect(argOf(argv, '-machine')).toContain('memory-backend=pc.ram');
    expect(() => buildCommandLine(hp, ctx)).toThrow(expect.objectContaining({ code: 'CONFIG_UNSUPPORTED' }));
  });

  it("writes a host-passthrough CPU's cache and address bits as libvirt (KVM, not startable here)", () => {
    const cpu = (extra: object) =>
      argOf(buildCommandLine(def({ cpu: { mode: 'host-passthrough', ...extra } }), ctx).argv, '-cpu');
    expect(cpu({ cache: { mode: 'passthrough' } })).toEqual(['host,host-cache-info=on,l3-cache=off']);
    expect(cpu({ cache: { mode: 'disable' } })).toEqual(['host,host-cache-info=off,l3-cache=off']);
    expect(cpu({ cache: { mode: 'emulate', level: 3 }, maxphysaddr: { mode: 'passthrough' } })).toEqual([
      'host,l3-cache=on,host-cache-info=off,host-phys-bits=on',
    ]);
  });

  it('adds CPU features to the model, with a default model when none is named', () => {
    const features = [
      { policy: 'disable', name: 'arch-capabilities' },
      { policy: 'require', name: 'invtsc' },
    ];
    const host = buildCommandLine(def({ cpu: { mode: 'host-passthrough', features } }), ctx);
    expect(argOf(host.argv, '-cpu')).toEqual(['host,-arch-capabilities,+invtsc']);
    const bare = buildCommandLine(def({ type: 'qemu', cpu: { features: features.slice(0, 1) } }), ctx);
    expect(argOf(bare.argv, '-cpu')).toEqual(['qemu64,-arch-capabilities']);
  });

  it('maps power actions, kernel boot and a file serial with a default path (commas escaped)', () => {
    const { argv, live } = buildCommandLine(
      def({
        onPoweroff: 'restart',
        onReboot: 'destroy',
        os: { kernel: '/k', initrd: '/i', cmdline: 'console=ttyS0' },
        serials: [{ type: 'file' }, { type: 'file', path: '/a,b.log' }],
      }),
      ctx,
    );
    expect(argv).toContain('-no-shutdown');
    expect(argv).toContain('-no-reboot');
    expect(argOf(argv, '-kernel')).toEqual(['/k']);
    expect(argOf(argv, '-append')).toEqual(['console=ttyS0']);
    expect(argOf(argv, '-chardev')).toContain('file,id=charserial0,path=/r/log/vm.console.log');
    expect(argOf(argv, '-chardev')).toContain('file,id=charserial1,path=/a,,b.log');
    expect(live.serials[0]).toEqual({ type: 'file', path: '/r/log/vm.console.log' });
  });

  it('maps disks to -blockdev + -device, with aliases in the live definition', () => {
    const { argv, live } = buildCommandLine(
      def({
        disks: [
          {
            type: 'file',
            source: '/d.qcow2',
            driver: { type: 'qcow2' },
            target: { dev: 'vda', bus: 'virtio' },
            bootOrder: 1,
          },
          {
            type: 'file',
            source: '/c.iso',
            device: 'cdrom',
            readonly: true,
            target: { dev: 'sda', bus: 'sata' },
          },
        ],
      }),
      ctx,
    );
    const blockdevs = argOf(argv, '-blockdev').map((j) => JSON.parse(j));
    // QEMU gets each image as an inherited descriptor, never a path to open itself; the fdset and
    // the node names derive from the disk's alias, never from its position.
    const [set0, set1] = [fdsetIdOf('virtio-disk0'), fdsetIdOf('sata0-0-0')];
    expect(argOf(argv, '-add-fd')).toEqual([
      `fd=5,set=${set0},opaque=/d.qcow2`,
      `fd=6,set=${set1},opaque=/c.iso`,
    ]);
    expect(blockdevs[0]).toEqual({
      driver: 'file',
      filename: `/dev/fdset/${set0}`,
      'node-name': 'virtio-disk0-storage',
      'read-only': false,
    });
    expect(blockdevs[1]).toMatchObject({ driver: 'qcow2', file: 'virtio-disk0-storage' });
    expect(blockdevs[3]).toMatchObject({ driver: 'raw', 'read-only': true, 'node-name': 'sata0-0-0-format' });
    expect(argOf(argv, '-device').map((j) => JSON.parse(j))).toEqual([
      { driver: 'ich9-ahci', id: 'sata0', bus: 'pci.0', addr: '0x2' },
      {
        driver: 'virtio-blk-pci',
        bus: 'pci.0',
        addr: '0x3',
        drive: 'virtio-disk0-format',
        id: 'virtio-disk0',
        bootindex: 1,
      },
      { driver: 'ide-cd', bus: 'sata0.0', drive: 'sata0-0-0-format', id: 'sata0-0-0' },
    ]);
    expect(live.disks.map((d) => d.alias)).toEqual(['virtio-disk0', 'sata0-0-0']);
  });

  it('maps TAP interfaces to inherited descriptors, multiqueue included, and user networking', () => {
    const { argv, live } = buildCommandLine(
      def({
        interfaces: [
          { type: 'ethernet', target: { dev: 'tap0', managed: false }, mac: '52:54:00:00:00:01' },
          { type: 'ethernet', queues: 2 },
          { type: 'user', model: 'e1000' },
        ],
      }),
      { ...ctx, tapFds: [[7], [8, 9], undefined] },
    );
    expect(argOf(argv, '-netdev').map((j) => JSON.parse(j))).toEqual([
      { type: 'tap', id: 'hostnet0', fd: '7' },
      { type: 'tap', id: 'hostnet1', fds: '8:9' },
      { type: 'user', id: 'hostnet2' },
    ]);
    expect(argOf(argv, '-device').map((j) => JSON.parse(j))).toEqual([
      {
        driver: 'virtio-net-pci',
        bus: 'pci.0',
        addr: '0x2',
        netdev: 'hostnet0',
        id: 'net0',
        mac: '52:54:00:00:00:01',
      },
      {
        driver: 'virtio-net-pci',
        bus: 'pci.0',
        addr: '0x3',
        netdev: 'hostnet1',
        id: 'net1',
        mq: true,
        vectors: 6,
      },
      { driver: 'e1000', bus: 'pci.0', addr: '0x4', netdev: 'hostnet2', id: 'net2' },
    ]);
    expect(live.interfaces.map((n) => n.alias)).toEqual(['net0', 'net1', 'net2']);
  });

  it('appends the QEMU namespace and taints the domain custom-argv', () => {
    const { argv, env, taints } = buildCommandLine(
      def({ qemuCommandline: { args: ['-global', 'x.y=z'], env: [{ name: 'FOO', value: 'bar' }] } }),
      ctx,
    );
    expect(argv.slice(-2)).toEqual(['-global', 'x.y=z']);
    expect(env['FOO']).toBe('bar');
    expect(taints).toEqual(['custom-argv']);
  });
});

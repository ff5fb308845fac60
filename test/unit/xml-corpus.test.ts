import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { resolveDefinition } from '../../src/stable/definition/validate.js';
import { formatDomainXml, parseDomainXml } from '../../src/stable/index.js';

const dir = join(import.meta.dirname, '../fixtures/xml');
const corpus = readdirSync(dir)
  .filter((f) => f.endsWith('.xml'))
  .sort();
const load = (file: string) => resolveDefinition(parseDomainXml(readFileSync(join(dir, file), 'utf8')));

describe('domain XML corpus', () => {
  it('holds the documents the tests expect', () => {
    expect(corpus).toEqual(
      expect.arrayContaining([
        'ethernet-tap.xml',
        'kubevirt-realtime.xml',
        'minimal-no-features.xml',
        'tcg-direct-kernel.xml',
        'virt-install-q35-kvm.xml',
      ]),
    );
  });

  it.each(corpus)('%s parses and round-trips through formatDomainXml', (file) => {
    const def = load(file);
    const xml = formatDomainXml(def);
    const again = resolveDefinition(parseDomainXml(xml));
    expect(again).toStrictEqual(def);
    // Formatting is a fixed point from the first round on.
    expect(formatDomainXml(again)).toBe(xml);
  });

  it('virt-install q35 guest', () => {
    const def = load('virt-install-q35-kvm.xml');
    expect(def).toMatchObject({
      type: 'kvm',
      name: 'fedora-vm',
      uuid: '6a3c8a1e-5d3b-4a7b-9a37-2b8b1f0c4d21',
      memoryKiB: 2097152,
      currentMemoryKiB: 2097152,
      vcpu: { count: 2 },
      os: { arch: 'x86_64', machine: 'pc-q35-7.2', boot: ['hd'] },
      features: { acpi: true, apic: true },
      cpu: { mode: 'host-passthrough', topology: { sockets: 1, dies: 1, cores: 2, threads: 1 } },
      emulator: '/usr/bin/qemu-system-x86_64',
      disks: [
        {
          type: 'file',
          device: 'disk',
          driver: { type: 'qcow2' },
          source: '/var/lib/virtkit-test/fedora-vm.qcow2',
          target: { dev: 'vda', bus: 'virtio' },
          readonly: false,
        },
      ],
      interfaces: [{ type: 'user', mac: '52:54:00:6b:3c:58', model: 'virtio' }],
      serials: [{ type: 'pty' }],
    });
  });

  it('KubeVirt real-time guest', () => {
    const def = load('kubevirt-realtime.xml');
    expect(def.memoryKiB).toBe(1024 * 1024);
    expect(def.memoryBacking).toEqual({ locked: true, hugepages: true });
    expect(def.memtune).toEqual({ hardLimitKiB: 1572864 });
    expect(def.iothreads).toBe(1);
    expect(def.cputune).toEqual({
      vcpupin: [
        { vcpu: 0, cpuset: '0' },
        { vcpu: 1, cpuset: '1' },
      ],
      emulatorpin: { cpuset: '0-1' },
      iothreadpin: [{ iothread: 1, cpuset: '0-1' }],
      vcpusched: [{ ids: '0-1', scheduler: 'fifo', priority: 10 }],
      iothreadsched: [{ ids: '1', scheduler: 'fifo', priority: 5 }],
    });
    expect(def.features).toEqual({ acpi: true, apic: false });
    expect(def.cpu).toEqual({
      mode: 'host-model',
      topology: { sockets: 1, dies: 1, cores: 2, threads: 1 },
      features: [
        { policy: 'disable', name: 'arch-capabilities' },
        { policy: 'require', name: 'invtsc' },
      ],
    });
    expect(def.interfaces).toEqual([
      {
        type: 'ethernet',
        mac: '02:b6:2e:00:00:01',
        target: { dev: 'tap0', managed: false },
        model: 'virtio',
        queues: 2,
        alias: 'ua-default',
      },
    ]);
    expect(def.disks.map((d) => [d.target.dev, d.target.bus, d.readonly, d.bootOrder, d.alias])).toEqual([
      ['vda', 'virtio', false, 1, 'ua-containerdisk'],
      ['sda', 'sata', true, undefined, 'ua-cloudinitdisk'],
    ]);
    expect(def.qemuCommandline).toEqual({
      args: ['-fw_cfg', 'name=opt/kubevirt/example,string=1'],
      env: [{ name: 'KUBEVIRT_EXAMPLE', value: 'realtime' }],
    });
  });

  it('TCG direct-kernel-boot guest', () => {
    const def = load('tcg-direct-kernel.xml');
    expect(def).toMatchObject({
      type: 'qemu',
      memoryKiB: 256 * 1024,
      currentMemoryKiB: 192 * 1024,
      vcpu: { count: 2, current: 1 },
      os: {
        machine: 'pc',
        kernel: '/var/lib/virtkit-test/vmlinuz',
        initrd: '/var/lib/virtkit-test/initrd.img',
        cmdline: 'console=ttyS0 panic=-1 quiet root=/dev/sda',
      },
      cpu: { mode: 'custom', model: 'qemu64' },
      clock: { offset: 'localtime' },
      onReboot: 'destroy',
      serials: [{ type: 'file', path: '/var/lib/virtkit-test/tcg-kernel.serial.log' }],
    });
    expect(def.description).toBe(
      'TCG guest booting a kernel directly\n(multi-line description & entities <kept>)',
    );
    expect(def.disks.map((d) => [d.target.dev, d.device, d.driver.type, d.readonly, d.serial])).toEqual([
      ['sda', 'disk', 'raw', false, 'ROOT-0001'],
      ['sdb', 'disk', 'qcow2', false, undefined],
      ['sdc', 'cdrom', 'raw', true, undefined],
    ]);
  });

  it('guest with ethernet TAP interfaces and a block disk', () => {
    const def = load('ethernet-tap.xml');
    expect(def).toMatchObject({
      maxMemory: { kib: 16 * 1024 * 1024, slots: 16 },
      memoryKiB: 1024 * 1024,
      vcpu: { count: 4 },
      os: { boot: ['hd', 'network'] },
      cpu: { topology: { sockets: 2, dies: 1, cores: 2, threads: 1 } },
      onPoweroff: 'restart',
      disks: [{ type: 'block', source: '/dev/virtkit-test/tap-guest-root', bootOrder: 1 }],
      interfaces: [
        { type: 'ethernet', target: { dev: 'vk-tap0', managed: false }, model: 'virtio', queues: 4 },
        { type: 'ethernet', target: { dev: 'vk-tap1', managed: true }, model: 'e1000' },
      ],
      serials: [{ type: 'file' }],
    });
  });

  it('a document without <features> has ACPI off, as in libvirt', () => {
    const def = load('minimal-no-features.xml');
    expect(def.features).toEqual({ acpi: false, apic: false });
    expect(def.memoryKiB).toBe(65536);
  });
});

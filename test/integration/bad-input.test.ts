import { chmodSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Connection, DomainDefinitionInput } from '../../src/stable/index.js';
import {
  definitionFiles,
  hostHasKvm,
  openRoot,
  pausedOnly,
  processesMentioning,
  recordEvents,
  removeRoot,
  runLeftovers,
  tempRoot,
  tinyGuest,
} from '../helpers/env.js';

let root: string;
let conn: Connection;
beforeEach(async () => {
  root = tempRoot();
  conn = await openRoot(root);
});
afterEach(async () => {
  await conn.close();
  removeRoot(root);
});

const base = { name: 'bad', type: 'qemu', memoryKiB: 65536 } as const;
/** What an untyped (JavaScript) caller can pass: the point of these tests. */
const untyped = (value: unknown) => value as DomainDefinitionInput;

describe('invalid definitions are rejected before anything is written', () => {
  it.each([
    ['an unknown field', { ...base, hostdevs: [{ mode: 'subsystem' }] }, 'CONFIG_UNSUPPORTED', 'hostdevs'],
    ['an unknown nested field', { ...base, os: { bootloader: '/x' } }, 'CONFIG_UNSUPPORTED', 'os.bootloader'],
    ['a missing name', { type: 'qemu', memoryKiB: 65536 }, 'XML_ERROR', 'name'],
    ['a name with a slash', { ...base, name: 'a/b' }, 'XML_ERROR', 'name'],
    ['a wrong type', { ...base, memoryKiB: '64M' }, 'XML_ERROR', 'memoryKiB'],
    ['an unknown domain type', { ...base, type: 'xen' }, 'XML_ERROR', 'type'],
    ['a zero memory', { ...base, memoryKiB: 0 }, 'XML_ERROR', 'memoryKiB'],
    ['a bad uuid', { ...base, uuid: 'not-a-uuid' }, 'XML_ERROR', 'uuid'],
    ['currentMemory > memory', { ...base, currentMemoryKiB: 65537 }, 'XML_ERROR', 'currentMemoryKiB'],
    [
      'a topology that does not add up',
      { ...base, vcpu: { count: 2 }, cpu: { topology: { sockets: 1, cores: 1, threads: 1 } } },
      'XML_ERROR',
      'cpu.topology',
    ],
    [
      'a vcpupin of a missing vCPU',
      { ...base, cputune: { vcpupin: [{ vcpu: 1, cpuset: '0' }] } },
      'XML_ERROR',
      'cputune.vcpupin.0.vcpu',
    ],
    [
      'fifo without priority',
      { ...base, cputune: { vcpusched: [{ ids: '0', scheduler: 'fifo' }] } },
      'XML_ERROR',
      'cputune.vcpusched.0.priority',
    ],
    ['a relative kernel path', { ...base, os: { kernel: 'vmlinuz' } }, 'XML_ERROR', 'os.kernel'],
    ['an initrd without kernel', { ...base, os: { initrd: '/boot/initrd' } }, 'XML_ERROR', 'os.initrd'],
    [
      'a duplicate disk target',
      {
        ...base,
        disks: [1, 2].map(() => ({ type: 'file', source: '/x.img', target: { dev: 'vda', bus: 'virtio' } })),
      },
      'XML_ERROR',
      'disks.1.target.dev',
    ],
    ['not an object', 42, 'XML_ERROR', '(root)'],
    [
      'a read-only sata disk (QEMU has no read-only ide-hd)',
      {
        ...base,
        disks: [{ type: 'file', source: '/x.img', readonly: true, target: { dev: 'sda', bus: 'sata' } }],
      },
      'CONFIG_UNSUPPORTED',
      'disks.0.readonly',
    ],
    [
      'an XML document outside the subset',
      '<domain type="qemu"><name>x</name><memory>1</memory><devices><hostdev mode="subsystem"/></devices></domain>',
      'CONFIG_UNSUPPORTED',
      '/domain/devices/hostdev',
    ],
    ['malformed XML', '<domain type="qemu"><name>x</name>', 'XML_ERROR', undefined],
  ])('%s', async (_what, input, code, path) => {
    await expect(conn.defineDomain(untyped(input))).rejects.toMatchObject({
      name: 'VirtError',
      code,
      details: path === undefined ? { line: 1 } : { path },
    });
    expect(definitionFiles(root)).toEqual([]);
    expect(await conn.listDomains()).toEqual([]);
  });

  it('a second domain with the same name and another uuid', async () => {
    await conn.defineDomain(base);
    await expect(
      conn.defineDomain({ ...base, uuid: '6f3e1c52-3b8e-4d7e-9a44-2d1b7f0e9c11' }),
    ).rejects.toMatchObject({
      code: 'DOMAIN_EXISTS',
    });
    expect(definitionFiles(root)).toEqual(['bad.json']);
  });

  it('two concurrent definitions claiming one name: exactly one wins', async () => {
    const results = await Promise.allSettled([
      conn.defineDomain({ ...base, uuid: '6f3e1c52-3b8e-4d7e-9a44-2d1b7f0e9c11' }),
      conn.defineDomain({ ...base, uuid: '7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d' }),
    ]);
    expect(results.map((r) => r.status).sort()).toEqual(['fulfilled', 'rejected']);
    expect(results.find((r) => r.status === 'rejected')).toMatchObject({ reason: { code: 'DOMAIN_EXISTS' } });
    expect(await conn.listDomains()).toHaveLength(1);
  });

  it('an unknown domain', async () => {
    await expect(conn.lookupDomain('nope')).rejects.toMatchObject({ code: 'NO_DOMAIN' });
    const dom = await conn.defineDomain(base);
    await dom.undefine();
    await expect(dom.start()).rejects.toMatchObject({ code: 'NO_DOMAIN' });
    await expect(dom.getInfo()).rejects.toMatchObject({ code: 'NO_DOMAIN' });
  });
});

describe('a start that fails leaves nothing behind', () => {
  async function expectCleanFailure(
    input: Parameters<Connection['defineDomain']>[0],
    code: string,
    message?: RegExp,
  ) {
    const rec = recordEvents(conn);
    const dom = await conn.defineDomain(input);
    const err = await dom.start().catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'VirtError', code });
    if (message) expect((err as Error).message).toMatch(message);
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', pid: null });
    expect(runLeftovers(root)).toEqual([]);
    expect(processesMentioning(dom.uuid)).toEqual([]);
    // The domain stays defined and usable.
    expect(definitionFiles(root)).toEqual([`${dom.name}.json`]);
    return { dom, rec };
  }

  it('a kernel that does not exist: QEMU exits, its error is surfaced', async () => {
    const { rec } = await expectCleanFailure(
      { ...base, os: { kernel: '/nonexistent/vmlinuz' } },
      'OPERATION_FAILED',
      /QEMU exited during start-up \(code 1\).*nonexistent\/vmlinuz/,
    );
    expect(rec.events.map((e) => `${e.type}:${e.reason}`)).toEqual(['defined:added', 'stopped:failed']);
  });

  it('an unknown option passed through the QEMU namespace', async () => {
    await expectCleanFailure(
      { ...base, qemuCommandline: { args: ['-no-such-option'] } },
      'OPERATION_FAILED',
      /no-such-option/,
    );
  });

  it('an emulator that is missing', async () => {
    await expectCleanFailure(
      { ...base, emulator: '/nonexistent/qemu' },
      'NO_SUPPORT',
      /install qemu-system-x86/,
    );
  });

  it('a kvm domain on a host without KVM is refused before anything starts; with KVM it starts', async () => {
    if (!hostHasKvm()) {
      await expectCleanFailure({ ...base, type: 'kvm' }, 'CONFIG_UNSUPPORTED', /KVM is not available/);
      return;
    }
    const dom = await conn.defineDomain({ ...base, type: 'kvm' });
    await dom.start({ paused: true });
    expect(await dom.getInfo()).toMatchObject({ state: 'paused' });
    await dom.destroy();
  });

  it('an emulator that is not QEMU and exits', async () => {
    await expectCleanFailure({ ...base, emulator: '/bin/false' }, 'OPERATION_FAILED', /code 1/);
  });

  it('an emulator that crashes on a signal', async () => {
    const fake = join(root, 'lib', 'crashing-qemu');
    writeFileSync(fake, '#!/bin/sh\nkill -SEGV $$\n');
    chmodSync(fake, 0o755);
    await expectCleanFailure({ ...base, emulator: fake }, 'OPERATION_FAILED', /signal SIGSEGV/);
  });

  it("a machine type QEMU does not know: QEMU's own words surface", async () => {
    await expectCleanFailure(
      { ...base, os: { machine: 'no-such-machine' } },
      'OPERATION_FAILED',
      /unsupported machine type/,
    );
  });

  it("a TAP declared managed='no' that does not exist is not created behind the user's back", async () => {
    await expectCleanFailure(
      { ...base, interfaces: [{ type: 'ethernet', target: { dev: 'vk-absent0', managed: false } }] },
      'OPERATION_FAILED',
      /managed='no' but does not exist/,
    );
  });

  it('a disk image that does not exist', async () => {
    await expectCleanFailure(
      {
        ...base,
        disks: [{ type: 'file', source: '/nonexistent/disk.img', target: { dev: 'vda', bus: 'virtio' } }],
      },
      'SYSTEM_ERROR',
      /storage.openFile.*ENOENT/,
    );
  });

  it('leaks no descriptor of the driver across successful and failed starts', async () => {
    const disk = join(root, 'lib', 'd.img');
    writeFileSync(disk, Buffer.alloc(4096));
    const good = await conn.defineDomain(
      pausedOnly('fd-good', {
        disks: [{ type: 'file', source: disk, target: { dev: 'vda', bus: 'virtio' } }],
      }),
    );
    const bad = await conn.defineDomain({
      ...base,
      name: 'fd-bad',
      qemuCommandline: { args: ['-no-such-option'] },
    });
    const cycle = async () => {
      await good.start({ paused: true });
      await good.destroy();
      await bad.start().catch(() => undefined);
    };
    await cycle(); // warm-up: the first round may open descriptors Node keeps (e.g. its signal pipe)
    const before = readdirSync('/proc/self/fd').length;
    for (let i = 0; i < 5; i++) await cycle();
    expect(readdirSync('/proc/self/fd').length).toBe(before);
  });

  it('the domain starts fine afterwards', async () => {
    const dom = await conn.defineDomain(pausedOnly('ok'));
    await dom.start({ paused: true });
    await dom.destroy();
    void tinyGuest;
  });
});

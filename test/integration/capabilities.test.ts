import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { XMLParser } from 'fast-xml-parser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { forgetProbes } from '../../src/drivers/qemu/capabilities/cache.js';
import { type Capabilities, type Connection, connect, parseDomainXml } from '../../src/stable/index.js';
import { removeRoot, tempRoot } from '../helpers/env.js';

const QEMU = '/usr/bin/qemu-system-x86_64';

type X = Record<string, unknown>;
const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@',
  parseAttributeValue: false,
  parseTagValue: false,
  isArray: (_name, jpath) =>
    [
      'cpu.feature',
      'cpu.pages',
      'cells.cell',
      'cell.pages',
      'distances.sibling',
      'cpus.cpu',
      'capabilities.guest',
      'arch.machine',
      'arch.domain',
      'host.secmodel',
      'disk.enum',
      'enum.value',
    ].some((suffix) => String(jpath).endsWith(suffix)),
});

const list = (v: unknown): X[] => (Array.isArray(v) ? (v as X[]) : v === undefined ? [] : [v as X]);

/** `virsh` on libvirt's embedded QEMU driver in its own root: the same emulator on the same host. */
function virsh(root: string, ...args: string[]): X {
  let out: string;
  try {
    out = execFileSync('virsh', ['-c', `qemu:///embed?root=${encodeURIComponent(root)}`, ...args], {
      encoding: 'utf8',
      timeout: 120_000,
    });
  } catch (err) {
    throw new Error(
      `virsh ${args.join(' ')} failed (install libvirt-clients and libvirt-daemon-driver-qemu: bash scripts/setup.sh): ${(err as Error).message}`,
    );
  }
  return parser.parse(out) as X;
}

let root: string;
let virshRoot: string;
const roots: string[] = [];
let conn: Connection;
let caps: Capabilities;
let libvirtCaps: X;

beforeAll(async () => {
  root = tempRoot('vk-caps-');
  virshRoot = tempRoot('vk-caps-virsh-');
  forgetProbes();
  conn = await connect(`qemu:///embed?root=${root}`);
  caps = await conn.getCapabilities();
  libvirtCaps = (virsh(virshRoot, 'capabilities') as { capabilities: X }).capabilities;
});

afterAll(async () => {
  await conn?.close();
  removeRoot(root);
  removeRoot(virshRoot);
  for (const r of roots) removeRoot(r);
});

describe('getCapabilities against virsh capabilities', () => {
  it('agrees on the host CPU: arch, vendor, signature, topology, page sizes; libvirt features are a subset', () => {
    const cpu = (libvirtCaps.host as X).cpu as X;
    const ours = caps.host.cpu;
    expect(ours.arch).toBe(cpu.arch);
    expect(ours.vendor).toBe(cpu.vendor);
    const sig = cpu.signature as X;
    expect(ours.signature).toEqual({
      family: Number(sig['@family']),
      model: Number(sig['@model']),
      stepping: Number(sig['@stepping']),
    });
    const topo = cpu.topology as X;
    expect(ours.topology).toEqual({
      sockets: Number(topo['@sockets']),
      dies: Number(topo['@dies']),
      cores: Number(topo['@cores']),
      threads: Number(topo['@threads']),
    });
    expect(ours.pageSizesKiB).toEqual(list(cpu.pages).map((p) => Number(p['@size'])));
    const libvirtFeatures = list(cpu.feature).map((f) => String(f['@name']));
    expect(libvirtFeatures.length).toBeGreaterThan(0);
    // libvirt lists the features beyond its model, read with CPUID; virtkit, naming no model,
    // lists every feature the kernel reports in /proc/cpuinfo. Those two views differ only by what
    // the kernel does not report (disabled or unknown to it, e.g. osxsave), which is checked here.
    const kernelFlags = new Set(
      (/^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '').trim().split(/\s+/),
    );
    const normal = (f: string) => f.replace(/[.-]/g, '_');
    const missing = libvirtFeatures.filter((f) => !ours.features.includes(f));
    for (const f of missing) expect(kernelFlags.has(f) || kernelFlags.has(normal(f))).toBe(false);
    expect(missing.length).toBeLessThan(libvirtFeatures.length / 2);
  });

  it('agrees on the NUMA cells: memory, pages, distances, CPUs and their topology', () => {
    const cells = list((((libvirtCaps.host as X).topology as X).cells as X).cell);
    expect(caps.host.cells).toHaveLength(cells.length);
    for (const [i, cell] of cells.entries()) {
      const ours = caps.host.cells[i]!;
      expect(ours.id).toBe(Number(cell['@id']));
      expect(ours.memoryKiB).toBe(Number((cell.memory as X)['#text']));
      expect(ours.pages).toEqual(
        list(cell.pages).map((p) => ({ sizeKiB: Number(p['@size']), count: Number(p['#text']) })),
      );
      expect(ours.distances).toEqual(
        list((cell.distances as X).sibling).map((s) => ({
          id: Number(s['@id']),
          value: Number(s['@value']),
        })),
      );
      expect(ours.cpus).toEqual(
        list((cell.cpus as X).cpu).map((c) => ({
          id: Number(c['@id']),
          socketId: Number(c['@socket_id']),
          dieId: Number(c['@die_id']),
          coreId: Number(c['@core_id']),
          siblings: String(c['@siblings']),
        })),
      );
    }
  });

  it('has secmodel none', () => {
    expect(caps.host.secmodel).toBe('none');
    const models = list((libvirtCaps.host as X).secmodel).map((s) => s.model);
    expect(models).toContain('none');
    expect(caps.xml).toContain('<secmodel>\n      <model>none</model>');
  });

  it('agrees on the x86_64 guest: emulator, word size, machine types with canonical names, domain types', () => {
    const guest = list(libvirtCaps.guest).find((g) => (g.arch as X)['@name'] === 'x86_64') as X;
    const arch = guest.arch as X;
    const ours = caps.guests.find((g) => g.arch === 'x86_64')!;
    expect(ours.emulator).toBe(arch.emulator);
    expect(ours.wordsize).toBe(Number(arch.wordsize));
    const key = (m: { name: string; canonical?: string; maxCpus: number }) =>
      `${m.name}|${m.canonical ?? ''}|${m.maxCpus}`;
    const theirs = list(arch.machine).map((m) =>
      key({
        name: String(m['#text']),
        ...(m['@canonical'] ? { canonical: String(m['@canonical']) } : {}),
        maxCpus: Number(m['@maxCpus']),
      }),
    );
    expect(ours.machines.map(key).sort()).toEqual([...new Set(theirs)].sort());
    expect(ours.machines).toContainEqual({ name: 'pc', canonical: 'pc-i440fx-7.2', maxCpus: 255 });
    expect(ours.machines).toContainEqual({ name: 'q35', canonical: 'pc-q35-7.2', maxCpus: 288 });
    expect([...ours.domainTypes].sort()).toEqual(
      list(arch.domain)
        .map((d) => d['@type'])
        .sort(),
    );
  });

  it('prints the typed facts as libvirt XML that parses back to them', () => {
    const doc = (parser.parse(caps.xml) as { capabilities: X }).capabilities;
    const cpu = (doc.host as X).cpu as X;
    expect(cpu.arch).toBe(caps.host.cpu.arch);
    expect(list(cpu.feature).map((f) => f['@name'])).toEqual(caps.host.cpu.features);
    const arch = list(doc.guest)[0]!.arch as X;
    expect(list(arch.machine)).toHaveLength(caps.guests[0]!.machines.length);
  });
});

describe('the probe cache', () => {
  it('is a file under the root, read instead of probing again while the binary is unchanged', async () => {
    const dir = join(root, 'lib', 'capabilities');
    const [file] = readdirSync(dir);
    const cached = JSON.parse(readFileSync(join(dir, file!), 'utf8'));
    expect(cached.key).toMatchObject({ path: QEMU, size: expect.any(Number), mtimeNs: expect.any(String) });
    // Mark the cached copy: a fresh process (no memory) must show the mark, so it read the file.
    const marked = {
      ...cached,
      probe: {
        ...cached.probe,
        machines: [
          ...cached.probe.machines,
          { name: 'vk-marker', isDefault: false, maxCpus: 7, deprecated: false },
        ],
      },
    };
    writeFileSync(join(dir, file!), JSON.stringify(marked));
    forgetProbes();
    const again = await conn.getCapabilities();
    expect(again.guests[0]!.machines).toContainEqual({ name: 'vk-marker', maxCpus: 7 });
    // The binary changes (here: its mtime): the cache is stale and the emulator is probed again.
    utimesSync(join(dir, file!), new Date(), new Date());
    writeFileSync(join(dir, file!), JSON.stringify({ ...marked, key: { ...marked.key, mtimeNs: '1' } }));
    forgetProbes();
    const reprobed = await conn.getCapabilities();
    expect(reprobed.guests[0]!.machines.map((m) => m.name)).not.toContain('vk-marker');
    expect(JSON.parse(readFileSync(join(dir, file!), 'utf8')).key).toEqual(cached.key);
  });

  it('keys each binary by path, size, mtime and ctime: a copy is probed on its own and again when touched', async () => {
    // QEMU loads its accelerator modules from ../lib/<triplet>/qemu next to its binary.
    const prefix = tempRoot('vk-caps-emu-');
    roots.push(prefix);
    mkdirSync(join(prefix, 'bin'));
    symlinkSync('/usr/lib', join(prefix, 'lib'));
    const copy = join(prefix, 'bin', 'qemu-system-x86_64');
    copyFileSync(QEMU, copy);
    chmodSync(copy, 0o755);
    const first = await conn.getDomainCapabilities({ emulator: copy });
    expect(first.emulator).toBe(copy);
    const dir = join(root, 'lib', 'capabilities');
    const before = readdirSync(dir);
    expect(before).toHaveLength(2);
    const file = before.find((f) => JSON.parse(readFileSync(join(dir, f), 'utf8')).key.path === copy)!;
    const keyBefore = JSON.parse(readFileSync(join(dir, file), 'utf8')).key;
    utimesSync(copy, new Date(2000, 0, 1), new Date(2000, 0, 1));
    await conn.getDomainCapabilities({ emulator: copy });
    const keyAfter = JSON.parse(readFileSync(join(dir, file), 'utf8')).key;
    expect(keyAfter.mtimeNs).not.toBe(keyBefore.mtimeNs);
    expect(keyAfter.ctimeNs).not.toBe(keyBefore.ctimeNs);
  });
});

describe('getDomainCapabilities', () => {
  it('agrees with virsh domcapabilities on path, machine, arch and vCPU maximum', async () => {
    for (const machine of [undefined, 'q35', 'pc-i440fx-7.2']) {
      const ours = await conn.getDomainCapabilities({ virttype: 'qemu', ...(machine ? { machine } : {}) });
      const args = ['domcapabilities', '--virttype', 'qemu', ...(machine ? ['--machine', machine] : [])];
      const theirs = (virsh(virshRoot, ...args) as { domainCapabilities: X }).domainCapabilities;
      expect(ours.emulator).toBe(theirs.path);
      expect(ours.machine).toBe(theirs.machine);
      expect(ours.arch).toBe(theirs.arch);
      expect(ours.domainType).toBe(theirs.domain);
      // The definition schema's own maximum (288, q35's) caps what the emulator reports.
      expect(ours.maxVcpus).toBe(Math.min(288, Number((theirs.vcpu as X)['@max'])));
      // virtkit offers a subset of libvirt: every disk bus and device it names, libvirt names too.
      const disk = ((theirs.devices as X).disk as X).enum as X[];
      const values = (name: string) =>
        list(disk.find((e) => e['@name'] === name)?.value).map((v) =>
          typeof v === 'string' ? v : String(v['#text'] ?? v),
        );
      for (const bus of ours.enums.bus!) expect(values('bus')).toContain(bus);
      for (const dev of ours.enums.diskDevice!) expect(values('diskDevice')).toContain(dev);
    }
  });

  it('offers only what the definition parser accepts', async () => {
    const d = await conn.getDomainCapabilities({ virttype: 'qemu' });
    expect(d.enums.bus).toEqual(
      d.machine.includes('q35')
        ? ['virtio', 'sata', 'scsi', 'usb']
        : ['virtio', 'sata', 'ide', 'scsi', 'usb', 'fdc'],
    );
    const xml = (devices: string, cpu = '') =>
      `<domain type='qemu'><name>caps</name><memory unit='MiB'>64</memory><os><type machine='${d.machine}'>hvm</type></os>${cpu}<devices>${devices}</devices></domain>`;
    for (const bus of d.enums.bus!) {
      const dev = bus === 'virtio' ? 'vda' : bus === 'ide' ? 'hda' : bus === 'fdc' ? 'fda' : 'sda';
      for (const device of d.enums.diskDevice!) {
        // The buses and devices are offered each on its own, as libvirt's domain capabilities list them;
        // these pairs are not disks QEMU can make (a virtio or usb-storage CD-ROM).
        if (device === 'cdrom' && (bus === 'virtio' || bus === 'usb')) continue;
        // A floppy drive sits only on the floppy controller, which holds nothing else.
        if ((device === 'floppy') !== (bus === 'fdc')) continue;
        const ro = device === 'cdrom' ? '' : '';
        expect(() =>
          parseDomainXml(
            xml(
              `<disk type='file' device='${device}'><source file='/x.img'/><target dev='${dev}' bus='${bus}'/>${ro}</disk>`,
            ),
          ),
        ).not.toThrow();
      }
    }
    for (const model of d.enums.interfaceModel!) {
      expect(() =>
        parseDomainXml(xml(`<interface type='user'><model type='${model}'/></interface>`)),
      ).not.toThrow();
    }
    for (const mode of d.enums.cpuMode!) {
      const cpu =
        mode === 'custom'
          ? `<cpu mode='custom'><model>${d.cpuModels[0]}</model></cpu>`
          : `<cpu mode='${mode}'/>`;
      expect(() => parseDomainXml(xml('', cpu))).not.toThrow();
    }
    expect(d.xml).toContain(`<vcpu max='${d.maxVcpus}'/>`);
    expect(d.xml).toContain("<graphics supported='no'/>");
    expect(d.cpuModels).toContain('qemu64');
  });

  it('refuses what the emulator or host does not provide, typed', async () => {
    await expect(conn.getDomainCapabilities({ machine: 'no-such-machine' })).rejects.toMatchObject({
      code: 'CONFIG_UNSUPPORTED',
      details: { machine: 'no-such-machine' },
    });
    await expect(conn.getDomainCapabilities({ arch: 'aarch64' })).rejects.toMatchObject({
      code: 'CONFIG_UNSUPPORTED',
    });
    await expect(conn.getDomainCapabilities({ emulator: '/nonexistent/qemu' })).rejects.toMatchObject({
      code: 'NO_SUPPORT',
    });
    await expect(
      conn.getDomainCapabilities({ virttype: 'xen' } as unknown as { virttype: 'qemu' }),
    ).rejects.toMatchObject({ code: 'CONFIG_UNSUPPORTED', details: { field: 'virttype' } });
    const kvm = caps.guests[0]!.domainTypes.includes('kvm');
    if (!kvm) {
      await expect(conn.getDomainCapabilities({ virttype: 'kvm' })).rejects.toMatchObject({
        code: 'CONFIG_UNSUPPORTED',
      });
    } else {
      await expect(conn.getDomainCapabilities({ virttype: 'kvm' })).resolves.toMatchObject({
        domainType: 'kvm',
      });
    }
  });

  it('the test driver has none', async () => {
    const t = await connect('test:///default');
    await expect(t.getCapabilities()).rejects.toMatchObject({ code: 'NO_SUPPORT' });
    await expect(t.getDomainCapabilities()).rejects.toMatchObject({ code: 'NO_SUPPORT' });
    await t.close();
  });
});

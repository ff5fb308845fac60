import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildCommandLine } from '../../src/drivers/qemu/command-line.js';
import { ensureNvram, resolveFirmware } from '../../src/drivers/qemu/firmware.js';
import { ErrorCode } from '../../src/errors.js';
import { resolveDefinition } from '../../src/stable/definition/validate.js';
import { formatDomainXml, parseDomainXml } from '../../src/stable/index.js';

/*
 * The platform elements that real tools write (virt-install, KubeVirt, libvirt's tests): metadata,
 * pm, clock timers, features, firmware, boot menu, SMBIOS, NUMA cells, vcpu cpuset. Each is parsed
 * into the typed definition, formatted back to the same definition, and turned into the QEMU
 * arguments libvirt gives QEMU 7.2.
 */

const doc = (inner: string, machine = 'q35', type = 'qemu') =>
  `<domain type='${type}'><name>p</name><uuid>1b4e28ba-2fa1-11d2-883f-0016d3cca427</uuid><memory unit='MiB'>256</memory><vcpu>2</vcpu><os><type arch='x86_64' machine='${machine}'>hvm</type></os>${inner}</domain>`;
const resolve = (xml: string) => resolveDefinition(parseDomainXml(xml));
const ctx = { monitorFd: 3, consolePath: '/r/c.log', homeDir: '/r/lib', diskFds: [], tapFds: [], nowMs: 0 };
const argv = (xml: string, extra: object = {}) => buildCommandLine(resolve(xml), { ...ctx, ...extra }).argv;
const argOf = (args: readonly string[], flag: string) => args.filter((_, i) => args[i - 1] === flag);
const roundTrips = (xml: string) => {
  const def = resolve(xml);
  const out = formatDomainXml(def);
  expect(resolve(out)).toStrictEqual(def);
  expect(formatDomainXml(resolve(out))).toBe(out);
  return def;
};

describe('metadata', () => {
  const meta = `<metadata>
    <libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
      <libosinfo:os id="http://libosinfo.org/linux/2022"/>
    </libosinfo:libosinfo>
    <app xmlns="urn:app" a="1&amp;2">text &lt;here&gt;<inner><deep x='y'/></inner></app>
  </metadata>`;

  it('is kept verbatim, namespaces declared, and formatted back', () => {
    const def = roundTrips(doc(meta));
    expect(def.metadata).toBe(
      "<libosinfo:libosinfo xmlns:libosinfo='http://libosinfo.org/xmlns/libvirt/domain/1.0'><libosinfo:os id='http://libosinfo.org/linux/2022'/></libosinfo:libosinfo>" +
        "<app xmlns='urn:app' a='1&amp;2'>text &lt;here&gt;<inner><deep x='y'/></inner></app>",
    );
    expect(formatDomainXml(def)).toContain(`<metadata>${def.metadata}</metadata>`);
  });

  it('has no effect on the command line', () => {
    expect(argv(doc(meta))).toEqual(argv(doc('')));
  });

  it('refuses an element without namespace, and typed metadata that is not elements', () => {
    expect(() => parseDomainXml(doc('<metadata><plain/></metadata>'))).toThrow(
      expect.objectContaining({
        code: ErrorCode.XML_ERROR,
        details: expect.objectContaining({ path: '/domain/metadata/plain' }),
      }),
    );
    for (const metadata of ['</metadata><devices/>', '<a xmlns="urn:a">', 'text']) {
      expect(() => resolveDefinition({ name: 'p', type: 'qemu', memoryKiB: 1024, metadata })).toThrow(
        expect.objectContaining({
          code: ErrorCode.XML_ERROR,
          details: expect.objectContaining({ path: 'metadata' }),
        }),
      );
    }
  });
});

describe('pm', () => {
  const pm = "<pm><suspend-to-mem enabled='no'/><suspend-to-disk enabled='yes'/></pm>";
  it('disables S3 and enables S4 on the machine power-management device', () => {
    expect(roundTrips(doc(pm)).pm).toEqual({ suspendToMem: false, suspendToDisk: true });
    expect(argOf(argv(doc(pm)), '-global')).toEqual(['ICH9-LPC.disable_s3=1', 'ICH9-LPC.disable_s4=0']);
    expect(argOf(argv(doc(pm, 'pc')), '-global')).toEqual(['PIIX4_PM.disable_s3=1', 'PIIX4_PM.disable_s4=0']);
  });
});

describe('clock and timers', () => {
  const virtInstall = `<clock offset='utc'><timer name='rtc' tickpolicy='catchup'/><timer name='pit' tickpolicy='delay'/><timer name='hpet' present='no'/></clock>`;
  it("virt-install's timers: RTC catch-up, PIT delay (KVM only), no HPET", () => {
    expect(roundTrips(doc(virtInstall)).clock).toEqual({
      offset: 'utc',
      timers: [
        { name: 'rtc', tickpolicy: 'catchup' },
        { name: 'pit', tickpolicy: 'delay' },
        { name: 'hpet', present: false },
      ],
    });
    const tcg = argv(doc(virtInstall));
    expect(argOf(tcg, '-rtc')).toEqual(['base=utc,driftfix=slew']);
    expect(argOf(tcg, '-machine')[0]).toMatch(/,hpet=off$/);
    expect(argOf(tcg, '-global')).toEqual([]);
    expect(argOf(argv(doc(virtInstall, 'q35', 'kvm')), '-global')).toEqual([
      'kvm-pit.lost_tick_policy=delay',
    ]);
  });

  it('localtime, a variable offset from the start time, hypervclock and kvmclock on the CPU', () => {
    expect(argOf(argv(doc("<clock offset='localtime'/>")), '-rtc')).toEqual(['base=localtime']);
    const variable = doc(
      "<clock offset='variable' adjustment='3600' basis='utc'><timer name='rtc' track='guest'/></clock>",
    );
    expect(roundTrips(variable).clock).toMatchObject({ offset: 'variable', adjustment: 3600, basis: 'utc' });
    expect(argOf(argv(variable, { nowMs: Date.UTC(2024, 0, 1) }), '-rtc')).toEqual([
      'base=2024-01-01T01:00:00,clock=vm',
    ]);
    const cpu = argOf(
      argv(
        doc(
          "<clock offset='utc'><timer name='hypervclock' present='yes'/><timer name='kvmclock' present='no'/></clock>",
        ),
      ),
      '-cpu',
    );
    expect(cpu).toEqual(['qemu64,kvmclock=off,hv-time=on']);
  });

  it('refuses what QEMU cannot do, naming the timer', () => {
    const def = resolve(doc("<clock offset='utc'><timer name='pit' tickpolicy='merge'/></clock>"));
    expect(() => buildCommandLine(def, ctx)).toThrow(
      expect.objectContaining({
        code: ErrorCode.CONFIG_UNSUPPORTED,
        details: { path: 'clock.timers.0.tickpolicy' },
      }),
    );
  });
});

describe('features', () => {
  const windows = `<features><acpi/><apic/><hyperv mode='custom'><relaxed state='on'/><vapic state='on'/><spinlocks state='on' retries='8191'/><vpindex state='on'/><synic state='on'/><stimer state='on'><direct state='on'/></stimer><vendor_id state='on' value='KVM Hv'/></hyperv><kvm><hidden state='on'/></kvm><pvspinlock state='off'/><vmport state='off'/><smm state='on'/><ioapic driver='qemu'/><vmcoreinfo state='on'/></features>`;
  it('Hyper-V enlightenments, KVM hiding and paravirt switches become CPU properties', () => {
    const def = roundTrips(doc(windows));
    expect(def.features).toMatchObject({
      acpi: true,
      apic: true,
      hyperv: { mode: 'custom', relaxed: { state: true }, spinlocks: { state: true, retries: 8191 } },
      kvm: { hidden: true },
      pvspinlock: false,
      vmport: false,
      smm: true,
      ioapic: 'qemu',
      vmcoreinfo: true,
    });
    const args = argv(doc(windows));
    expect(argOf(args, '-cpu')).toEqual([
      'qemu64,kvm=off,kvm-pv-unhalt=off,hv-relaxed=on,hv-vapic=on,hv-vpindex=on,hv-synic=on,hv-spinlocks=0x1fff,hv-stimer=on,hv-stimer-direct=on,hv-vendor-id=KVM Hv',
    ]);
    expect(argOf(args, '-machine')[0]).toMatch(/,smm=on,vmport=off,kernel_irqchip=split$/);
    expect(argOf(args, '-device')).toContain('vmcoreinfo');
  });
});

describe('firmware', () => {
  const descriptors = (dir: string) => {
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'code.fd'), 'code');
    writeFileSync(join(dir, 'vars.fd'), 'vars-template');
    const desc = (features: string[]) =>
      JSON.stringify({
        'interface-types': ['uefi'],
        mapping: {
          device: 'flash',
          executable: { filename: join(dir, features.length ? 'secure.fd' : 'code.fd'), format: 'raw' },
          'nvram-template': { filename: join(dir, 'vars.fd'), format: 'raw' },
        },
        targets: [{ architecture: 'x86_64', machines: ['pc-i440fx-*', 'pc-q35-*'] }],
        features,
      });
    writeFileSync(join(dir, '40-secure.json'), desc(['secure-boot', 'requires-smm']));
    writeFileSync(join(dir, '60-plain.json'), desc([]));
    return [dir];
  };

  it("firmware='efi' picks UEFI without secure boot from the descriptors and copies the variable store", () => {
    const tmp = mkdtempSync(join(tmpdir(), 'vk-fw-'));
    try {
      const dirs = descriptors(join(tmp, 'firmware'));
      const def = roundTrips(doc('<features><acpi/></features>').replace('<os>', "<os firmware='efi'>"));
      const fw = resolveFirmware(def, join(tmp, 'nvram'), dirs);
      expect(fw).toEqual({
        code: join(tmp, 'firmware', 'code.fd'),
        type: 'pflash',
        readonly: true,
        vars: join(tmp, 'nvram', 'p_VARS.fd'),
        template: join(tmp, 'firmware', 'vars.fd'),
      });
      ensureNvram(fw);
      expect(readFileSync(join(tmp, 'nvram', 'p_VARS.fd'), 'utf8')).toBe('vars-template');
      writeFileSync(join(tmp, 'nvram', 'p_VARS.fd'), 'changed by the guest');
      ensureNvram(fw);
      expect(readFileSync(join(tmp, 'nvram', 'p_VARS.fd'), 'utf8')).toBe('changed by the guest');
      const args = buildCommandLine(def, { ...ctx, firmware: fw }).argv;
      expect(argOf(args, '-machine')[0]).toMatch(
        /,pflash0=libvirt-pflash0-format,pflash1=libvirt-pflash1-format$/,
      );
      expect(argOf(args, '-blockdev').map((b) => JSON.parse(b))).toEqual([
        expect.objectContaining({ filename: fw?.code, 'node-name': 'libvirt-pflash0-storage' }),
        expect.objectContaining({ 'node-name': 'libvirt-pflash0-format', 'read-only': true }),
        expect.objectContaining({ filename: fw?.vars, 'node-name': 'libvirt-pflash1-storage' }),
        expect.objectContaining({ 'node-name': 'libvirt-pflash1-format', 'read-only': false }),
      ]);
      expect(() => resolveFirmware(def, tmp, [join(tmp, 'none')])).toThrow(
        expect.objectContaining({ code: ErrorCode.CONFIG_UNSUPPORTED, details: { path: 'os.firmware' } }),
      );
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  it("libvirt's expanded form: loader and nvram with template, and a ROM loader", () => {
    const xml = doc('<features><acpi/></features>').replace(
      '</os>',
      "<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader><nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/v/p_VARS.fd</nvram></os>",
    );
    const def = roundTrips(xml);
    expect(def.os).toMatchObject({
      loader: { path: '/usr/share/OVMF/OVMF_CODE_4M.fd', readonly: true, type: 'pflash' },
      nvram: { path: '/v/p_VARS.fd', template: '/usr/share/OVMF/OVMF_VARS_4M.fd' },
    });
    expect(resolveFirmware(def, '/n')).toEqual({
      code: '/usr/share/OVMF/OVMF_CODE_4M.fd',
      type: 'pflash',
      readonly: true,
      vars: '/v/p_VARS.fd',
      template: '/usr/share/OVMF/OVMF_VARS_4M.fd',
    });
    const rom = resolve(doc('').replace('</os>', "<loader type='rom'>/bios.bin</loader></os>"));
    const fw = resolveFirmware(rom, '/n');
    expect(argOf(buildCommandLine(rom, { ...ctx, firmware: fw }).argv, '-bios')).toEqual(['/bios.bin']);
  });
});

describe('boot menu, SMBIOS, NUMA, vcpu cpuset', () => {
  it('boot menu with its timeout', () => {
    const xml = doc('').replace('</os>', "<bootmenu enable='yes' timeout='3000'/></os>");
    expect(roundTrips(xml).os.bootmenu).toEqual({ enable: true, timeout: 3000 });
    expect(argOf(argv(xml), '-boot')).toEqual(['menu=on,splash-time=3000,strict=on']);
  });

  it("KubeVirt's sysinfo as SMBIOS tables", () => {
    const xml = doc(
      "<sysinfo type='smbios'><system><entry name='manufacturer'>KubeVirt</entry><entry name='product'>None</entry><entry name='uuid'>1b4e28ba-2fa1-11d2-883f-0016d3cca427</entry><entry name='family'>KubeVirt</entry></system><bios><entry name='vendor'>V, Inc.</entry></bios><chassis><entry name='asset'>a1</entry></chassis><baseBoard><entry name='serial'>s1</entry></baseBoard><oemStrings><entry>one</entry></oemStrings></sysinfo>",
    ).replace('</os>', "<smbios mode='sysinfo'/></os>");
    const def = roundTrips(xml);
    expect(def.sysinfo?.system).toEqual({
      manufacturer: 'KubeVirt',
      product: 'None',
      uuid: '1b4e28ba-2fa1-11d2-883f-0016d3cca427',
      family: 'KubeVirt',
    });
    expect(argOf(argv(xml), '-smbios')).toEqual([
      'type=0,vendor=V,, Inc.',
      'type=1,manufacturer=KubeVirt,product=None,uuid=1b4e28ba-2fa1-11d2-883f-0016d3cca427,family=KubeVirt',
      'type=2,serial=s1',
      'type=3,asset=a1',
      'type=11,value=one',
    ]);
    // Without <smbios mode='sysinfo'/> the data is only kept, as in libvirt.
    expect(argOf(argv(xml.replace("<smbios mode='sysinfo'/>", '')), '-smbios')).toEqual([]);
  });

  it('NUMA cells: a memory backend and a node each, the memory adding up', () => {
    const xml = doc(
      "<cpu><numa><cell id='0' cpus='0' memory='128' unit='MiB'/><cell id='1' cpus='1' memory='131072' memAccess='shared'/></numa></cpu>",
    );
    expect(roundTrips(xml).cpu?.numa).toEqual([
      { id: 0, cpus: '0', memoryKiB: 131072 },
      { id: 1, cpus: '1', memoryKiB: 131072, memAccess: 'shared' },
    ]);
    const args = argv(xml);
    expect(argOf(args, '-numa')).toEqual([
      'node,nodeid=0,cpus=0,memdev=ram-node0',
      'node,nodeid=1,cpus=1,memdev=ram-node1',
    ]);
    expect(argOf(args, '-object').map((o) => JSON.parse(o))).toEqual([
      { 'qom-type': 'memory-backend-ram', id: 'ram-node0', size: 134217728 },
      // An access mode makes it file-backed, as libvirt: shared memory must be a file (vhost-user).
      {
        'qom-type': 'memory-backend-file',
        id: 'ram-node1',
        'mem-path': expect.stringMatching(/\/ram$/),
        share: true,
        size: 134217728,
      },
    ]);
    // As libvirt, the cells give the domain's memory, whatever <memory> says.
    expect(parseDomainXml(xml.replace("memory='128' unit='MiB'", "memory='1' unit='MiB'")).memoryKiB).toBe(
      1024 + 131072,
    );
    expect(() => parseDomainXml(xml.replace("cpus='1'", "cpus='0'"))).toThrow(
      expect.objectContaining({ code: ErrorCode.XML_ERROR }),
    );
  });

  it('vcpu cpuset is kept and formatted back', () => {
    expect(
      roundTrips(doc('').replace('<vcpu>2</vcpu>', "<vcpu placement='static' cpuset='0-1'>2</vcpu>")).vcpu,
    ).toEqual({
      count: 2,
      cpuset: '0-1',
    });
  });
});

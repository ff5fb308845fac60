import { describe, expect, it } from 'vitest';
import { buildCommandLine } from '../../src/drivers/qemu/command-line.js';
import { ErrorCode } from '../../src/errors.js';
import { resolveDefinition } from '../../src/stable/definition/validate.js';
import { parseDomainXml } from '../../src/stable/index.js';

/*
 * Documents libvirt refuses, and virtkit with them: each class gets a typed VirtError with a stable
 * code and the path of what is wrong, and the document one step away from it is accepted (so the
 * refusal is about that one thing).
 */

const doc = (os: string, rest = '<features><acpi/></features>', type = 'qemu') =>
  `<domain type='${type}'><name>r</name><memory unit='MiB'>64</memory><os${os}</os>${rest}</domain>`;
const resolve = (xml: string) => resolveDefinition(parseDomainXml(xml));
const ctx = { monitorFd: 3, consolePath: '/r/c.log', homeDir: '/r/lib', diskFds: [], tapFds: [], nowMs: 0 };

function refused(xml: string, code: string, path: string): void {
  expect(() => resolve(xml)).toThrow(
    expect.objectContaining({ code, details: expect.objectContaining({ path }) }),
  );
}

describe('firmware auto-selection contradictions', () => {
  const efi = " firmware='efi'><type machine='q35'>hvm</type>";
  it('a loader path, type or readonly next to firmware=', () => {
    refused(doc(`${efi}<loader>/fw/CODE.fd</loader>`), ErrorCode.XML_ERROR, '/domain/os/loader');
    refused(doc(`${efi}<loader type='pflash'/>`), ErrorCode.XML_ERROR, '/domain/os/loader/@type');
    refused(doc(`${efi}<loader readonly='yes'/>`), ErrorCode.XML_ERROR, '/domain/os/loader/@readonly');
    refused(
      doc(" firmware='bios'><type>hvm</type><loader type='rom'>/fw/bios.bin</loader>"),
      ErrorCode.XML_ERROR,
      '/domain/os/loader',
    );
    // A constraint auto-selection meets (virtkit never picks a secure-boot build) stays accepted.
    expect(resolve(doc(`${efi}<loader secure='no'/>`)).os).toMatchObject({ firmware: 'efi' });
    expect(resolve(doc(efi)).os.loader).toBeUndefined();
  });

  it('the same contradiction in the typed API', () => {
    expect(() =>
      resolveDefinition({
        name: 'r',
        type: 'qemu',
        memoryKiB: 65536,
        os: { firmware: 'efi', loader: { path: '/fw/CODE.fd' } },
      }),
    ).toThrow(expect.objectContaining({ code: ErrorCode.XML_ERROR, details: { path: 'os.loader' } }));
  });

  it('firmware features without auto-selection', () => {
    const features = "<firmware><feature enabled='no' name='enrolled-keys'/></firmware>";
    refused(
      doc(`><type>hvm</type><loader type='pflash' readonly='yes'>/fw/CODE.fd</loader>${features}`),
      ErrorCode.XML_ERROR,
      '/domain/os/firmware',
    );
    expect(resolve(doc(`${efi}${features}`)).os.firmware).toBe('efi');
  });

  it('a loader without a path and without auto-selection', () => {
    refused(
      doc("><type>hvm</type><loader type='pflash' readonly='yes'/>"),
      ErrorCode.XML_ERROR,
      '/domain/os/loader',
    );
    refused(doc("><type>hvm</type><loader secure='no'/>"), ErrorCode.XML_ERROR, '/domain/os/loader');
  });
});

describe('UEFI without ACPI', () => {
  const pflash = "><type machine='q35'>hvm</type><loader type='pflash' readonly='yes'>/fw/CODE.fd</loader>";
  it('is refused for a pflash loader and for firmware=efi, in XML and the typed API', () => {
    refused(doc(pflash, ''), ErrorCode.XML_ERROR, '/domain/features');
    refused(doc(pflash, '<features><apic/></features>'), ErrorCode.XML_ERROR, '/domain/features');
    refused(doc(" firmware='efi'><type>hvm</type>", ''), ErrorCode.XML_ERROR, '/domain/features');
    expect(() =>
      resolveDefinition({
        name: 'r',
        type: 'qemu',
        memoryKiB: 65536,
        os: { firmware: 'efi' },
        features: { acpi: false },
      }),
    ).toThrow(expect.objectContaining({ code: ErrorCode.XML_ERROR, details: { path: 'features.acpi' } }));
    expect(resolve(doc(pflash)).os.loader?.path).toBe('/fw/CODE.fd');
    // A ROM loader (a BIOS) does not need ACPI.
    expect(
      resolve(doc("><type>hvm</type><loader type='rom'>/fw/bios.bin</loader>", '')).os.loader?.type,
    ).toBe('rom');
  });
});

describe('ramfb', () => {
  it('takes no PCI address', () => {
    const video = (address: string) =>
      doc(
        "><type machine='q35'>hvm</type>",
        `<devices><video><model type='ramfb'/>${address}</video></devices>`,
      );
    refused(
      video("<address type='pci' domain='0' bus='0' slot='3' function='0'/>"),
      ErrorCode.XML_ERROR,
      '/domain/devices/video/address',
    );
    expect(resolve(video('')).videos).toEqual([{ model: 'ramfb' }]);
  });
});

describe('host-passthrough on TCG', () => {
  it('defines (a KVM host could start it) but does not start as type qemu', () => {
    const tcg = resolve(doc('><type>hvm</type>', "<cpu mode='host-passthrough'/>"));
    expect(() => buildCommandLine(tcg, ctx)).toThrow(
      expect.objectContaining({ code: ErrorCode.CONFIG_UNSUPPORTED, details: { path: 'cpu.mode' } }),
    );
    const kvm = resolve(doc('><type>hvm</type>', "<cpu mode='host-passthrough'/>", 'kvm'));
    const argv = buildCommandLine(kvm, ctx).argv;
    expect(argv[argv.indexOf('-cpu') + 1]).toBe('host');
  });
});

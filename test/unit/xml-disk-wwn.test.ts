import { describe, expect, it } from 'vitest';
import { buildCommandLine } from '../../src/drivers/qemu/command-line.js';
import { ErrorCode } from '../../src/errors.js';
import { resolveDefinition } from '../../src/stable/definition/validate.js';
import { formatDomainXml, parseDomainXml } from '../../src/stable/index.js';

/* A disk's <wwn>, <vendor>, <product>: parsed, formatted back, and a WWN beyond 2^53 written exactly. */

const doc = (disk: string) =>
  `<domain type='qemu'><name>d</name><uuid>1b4e28ba-2fa1-11d2-883f-0016d3cca427</uuid><memory unit='MiB'>64</memory><os><type machine='pc'>hvm</type></os><devices><disk type='file'><source file='/x'/>${disk}</disk></devices></domain>`;
const resolve = (xml: string) => resolveDefinition(parseDomainXml(xml));
const ctx = { monitorFd: 3, consolePath: '/r/c.log', homeDir: '/r/lib', diskFds: [5], tapFds: [], nowMs: 0 };

describe('disk identity', () => {
  it('a 64-bit WWN reaches QEMU as the exact integer', () => {
    const def = resolve(doc("<target dev='hda' bus='ide'/><wwn>5000c50015ea71ac</wwn>"));
    expect(resolve(formatDomainXml(def))).toStrictEqual(def);
    const argv = buildCommandLine(def, ctx).argv;
    expect(argv.find((a) => a.includes('ide-hd'))).toContain(`"wwn":${BigInt('0x5000c50015ea71ac')}`);
  });

  it.each([
    ["<target dev='vda' bus='virtio'/><wwn>5000c50015ea71ac</wwn>", '/domain/devices/disk/wwn'],
    ["<target dev='hda' bus='ide'/><wwn>12345</wwn>", '/domain/devices/disk/wwn'],
    ["<target dev='hda' bus='ide'/><vendor>X</vendor>", '/domain/devices/disk/vendor'],
  ])('%s is refused at its path', (disk, path) => {
    expect(() => resolve(doc(disk))).toThrow(
      expect.objectContaining({ code: ErrorCode.XML_ERROR, details: expect.objectContaining({ path }) }),
    );
  });
});

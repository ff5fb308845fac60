import { describe, expect, it } from 'vitest';
import { resolveDefinition } from '../../src/stable/definition/validate.js';
import { formatDomainXml, parseDomainXml } from '../../src/stable/index.js';

/*
 * What real tools write that the first XML layer refused: libvirt's loose UUIDs, sizes that are
 * not whole KiB, a disk without a type. Each case is accepted as libvirt accepts it and formats back.
 */

const doc = (inner = '', head = "<name>t</name><memory unit='MiB'>64</memory>") =>
  `<domain type='qemu'>${head}${inner}</domain>`;
const resolve = (xml: string) => resolveDefinition(parseDomainXml(xml));

describe('libvirt-compatible values', () => {
  it.each([
    [
      'any 32 hex digits, not RFC 4122',
      'c7a5fdbd-edaf-9455-926a-d65c16db1809',
      'c7a5fdbd-edaf-9455-926a-d65c16db1809',
    ],
    ['upper case', 'C7A5FDBD-EDAF-9455-926A-D65C16DB1809', 'c7a5fdbd-edaf-9455-926a-d65c16db1809'],
    ['no dashes', 'c7a5fdbdedaf9455926ad65c16db1809', 'c7a5fdbd-edaf-9455-926a-d65c16db1809'],
    ['dashes anywhere', 'c7a5-fdbdedaf9455926ad65c-16db1809', 'c7a5fdbd-edaf-9455-926a-d65c16db1809'],
  ])('a uuid with %s', (_what, written, canonical) => {
    const def = resolve(doc(`<uuid>${written}</uuid>`));
    expect(def.uuid).toBe(canonical);
    expect(resolve(formatDomainXml(def))).toStrictEqual(def);
  });

  it('a disk without type is a file, as in libvirt', () => {
    const def = resolve(
      doc(
        "<devices><disk device='disk'><source file='/d.img'/><target dev='vda' bus='virtio'/></disk></devices>",
      ),
    );
    expect(def.disks[0]).toMatchObject({ type: 'file', source: '/d.img' });
  });

  it('288 vCPUs, the q35 limit', () => {
    const def = resolve(doc("<vcpu>288</vcpu><os><type machine='q35'>hvm</type></os>"));
    expect(def.vcpu.count).toBe(288);
  });
});

import { describe, expect, it } from 'vitest';
import { parseUri } from '../../src/stable/connect.js';

describe('parseUri', () => {
  it('decodes a percent-encoded root with &, #, %, + and spaces', () => {
    const root = '/srv/a&b #c %41 50%+x/é';
    const parsed = parseUri(`qemu:///embed?root=${encodeURIComponent(root)}`);
    expect(parsed).toMatchObject({ scheme: 'qemu', path: '/embed' });
    expect(parsed.params.get('root')).toBe(root);
    expect([...parsed.params.keys()]).toEqual(['root']);
  });

  it('takes an unencoded root with spaces and other characters that need no encoding', () => {
    expect(parseUri('qemu:///embed?root=/tmp/my vms/é').params.get('root')).toBe('/tmp/my vms/é');
    expect(parseUri('QEMU:///embed?root=/x').scheme).toBe('qemu');
    expect(parseUri('test:///default')).toMatchObject({ scheme: 'test', path: '/default' });
    expect(parseUri('qemu://').path).toBe('/');
  });

  it('splits an unencoded & into another parameter, which the driver then refuses', () => {
    expect([...parseUri('qemu:///embed?root=/tmp/a&b').params.keys()]).toEqual(['root', 'b']);
  });

  it.each([
    ['not a uri', /scheme/],
    ['qemu:/embed?root=/x', /scheme/],
    ['qemu:///embed?root=/tmp/a#b', /%23/],
    ['qemu:///embed?root=/tmp/a#', /%23/],
    ['qemu:///embed?root=/a&root=/b', /given twice/],
    ['qemu:///embed?root=/a%00b', /NUL/],
    ['qemu://host/embed?root=/tmp/x', /remote/],
    ['qemu://user@/embed?root=/tmp/x', /scheme/],
  ])('refuses %s with INVALID_URI', (uri, message) => {
    expect(() => parseUri(uri)).toThrow(
      expect.objectContaining({ code: 'INVALID_URI', message: expect.stringMatching(message) }),
    );
  });

  it('refuses what is not a string', () => {
    expect(() => parseUri(42 as unknown as string)).toThrow(expect.objectContaining({ code: 'INVALID_URI' }));
  });
});

import { describe, expect, it } from 'vitest';
import { openTestDriver } from '../../src/drivers/test/driver.js';
import { ErrorCode } from '../../src/errors.js';
import { INTERNAL_SEAM as seamKey } from '../../src/privileged/seam.js';
import { connect, registerDriver } from '../../src/stable/connect.js';
import { INTERNAL_SEAM as connectionKey } from '../../src/stable/driver.js';

// stable/ names the seam's registry key itself rather than importing the contract (layer rules in
// .dependency-cruiser.cjs); the two names must be one symbol or openInternal finds no seam.
describe('the internal seam key', () => {
  it('is the same registry symbol in the public API and in the contract', () => {
    expect(connectionKey).toBe(seamKey);
    expect(Symbol.keyFor(seamKey)).toBe('virtkit.internal.seam');
  });

  it('reaches the driver through a connection, and no longer once it is closed', async () => {
    const conn = await connect('test:///default');
    const seam = (conn as unknown as Record<symbol, { driverKind?: string } | undefined>)[seamKey];
    expect(seam?.driverKind).toBe('test');
    await conn.close();
    expect((conn as unknown as Record<symbol, unknown>)[seamKey]).toBeUndefined();
  });
});

// connect() imports no driver: the entry points register them (test/setup/drivers.ts does it here).
describe('the driver registry', () => {
  it('opens a URI with the driver registered for its scheme', async () => {
    const seen: string[] = [];
    registerDriver('layers-probe', (uri, parsed, options) => {
      seen.push(`${uri} ${parsed.scheme} ${parsed.path}`);
      return openTestDriver(uri, parsed, options);
    });
    const conn = await connect('layers-probe:///default');
    expect(seen).toEqual(['layers-probe:///default layers-probe /default']);
    expect(await conn.listDomains()).toEqual([]);
    await conn.close();
  });

  it('refuses an unregistered scheme with INVALID_URI naming the registered ones', async () => {
    const err = await connect('nosuch:///x').catch((e: unknown) => e);
    expect(err).toMatchObject({ code: ErrorCode.INVALID_URI, details: { scheme: 'nosuch' } });
    expect((err as { details: { registered: string[] } }).details.registered).toEqual(
      expect.arrayContaining(['qemu', 'test']),
    );
  });

  it('accepts the same opener twice and refuses a second one for a taken scheme', () => {
    expect(() => registerDriver('test', openTestDriver)).not.toThrow();
    expect(() =>
      registerDriver('test', (uri, parsed, options) => openTestDriver(uri, parsed, options)),
    ).toThrow(expect.objectContaining({ code: ErrorCode.INTERNAL_ERROR }));
  });
});

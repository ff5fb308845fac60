import { describe, expect, it } from 'vitest';
import { INTERNAL_SEAM as seamKey } from '../../src/privileged/seam.js';
import { connect } from '../../src/stable/connect.js';
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

/*
 * A node agent written against internal API 1.1, installed next to a virtkit that implements
 * another internal API version. It must not compile (the handshake value is typed as the literal
 * of the installed version) and, compiled anyway, must fail at once with INTERNAL_VERSION_MISMATCH
 * instead of registering handlers whose contract it does not know.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'virtkit';
import { openInternal } from 'virtkit/internal';

const root = mkdtempSync(join(tmpdir(), 'virtkit-internal-consumer-other-'));
try {
  await using conn = await connect(`qemu:///embed?root=${root}`);
  const internal = openInternal(conn, { apiVersion: '1.1' });
  internal.setHandler('process.setMaxMemLock', async () => {});
  console.log(JSON.stringify({ ok: true, apiVersion: internal.apiVersion }));
} finally {
  rmSync(root, { recursive: true, force: true });
}

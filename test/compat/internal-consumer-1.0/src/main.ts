/*
 * A node agent written against internal API 1.0: it opens the internal API with the version it was
 * written against (the literal '1.0', never the library's INTERNAL_API_VERSION), registers the
 * handler of `storage.openFile`, starts a paused domain with a disk, and checks that the driver
 * called the handler and tainted the domain.
 */
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'virtkit';
import { type InvocationContext, type OperationArgs, openInternal } from 'virtkit/internal';

const root = mkdtempSync(join(tmpdir(), 'virtkit-internal-consumer-'));
try {
  await using conn = await connect(`qemu:///embed?root=${root}`);
  const internal = openInternal(conn, { apiVersion: '1.0' });

  const calls: Array<{ phase: string; domain: string; path: string }> = [];
  internal.setHandler(
    'storage.openFile',
    async (ctx: InvocationContext, args: OperationArgs<'storage.openFile'>) => {
      calls.push({ phase: ctx.phase, domain: ctx.domain.name, path: args.path });
      return { fd: openSync(args.path, args.mode === 'r' ? 'r' : 'r+') };
    },
    { timeoutMs: 5_000 },
  );
  if (!internal.hasHandler('storage.openFile') || internal.hasHandler('net.openTap')) {
    throw new Error('hasHandler does not reflect the registration');
  }

  const disk = join(root, 'disk.img');
  writeFileSync(disk, Buffer.alloc(1024 * 1024));
  closeSync(openSync(disk, 'r'));
  const dom = await conn.defineDomain({
    name: 'compat-internal',
    type: 'qemu',
    memoryKiB: 65536,
    disks: [{ type: 'file', source: disk, target: { dev: 'vda', bus: 'virtio' } }],
  });
  await dom.start({ paused: true });
  const info = await dom.getInfo();
  await dom.destroy();
  await dom.undefine();

  if (calls.length !== 1 || calls[0]?.phase !== 'pre-exec' || calls[0]?.path !== disk) {
    throw new Error(
      `expected one pre-exec call of storage.openFile for ${disk}, got ${JSON.stringify(calls)}`,
    );
  }
  if (!info.taints.includes('internal-handler')) {
    throw new Error(`expected the taint internal-handler, got ${JSON.stringify(info.taints)}`);
  }
  console.log(JSON.stringify({ ok: true, apiVersion: internal.apiVersion, calls, taints: info.taints }));
} finally {
  rmSync(root, { recursive: true, force: true });
}

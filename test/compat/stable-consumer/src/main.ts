/*
 * A management application written against the stable API: connect to an embedded root, define a
 * domain, start it paused, follow its events, destroy and undefine it, and handle errors by code.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type DomainEvent, type DomainInfo, ErrorCode, VirtError } from 'virtkit';

const root = mkdtempSync(join(tmpdir(), 'virtkit-stable-consumer-'));
try {
  await using conn = await connect(`qemu:///embed?root=${root}`);
  const seen: DomainEvent[] = [];
  conn.on('domain-event', (event) => seen.push(event));

  const dom = await conn.defineDomain({ name: 'compat-stable', type: 'qemu', memoryKiB: 65536 });
  await dom.start({ paused: true });
  const info: DomainInfo = await dom.getInfo();
  if (info.state !== 'paused' || info.pid === null) {
    throw new Error(`expected a paused domain with a QEMU pid, got ${info.state} (pid ${info.pid})`);
  }

  // A second start of a running domain is refused with a stable code.
  let refused: string | undefined;
  try {
    await dom.start();
  } catch (err) {
    if (!(err instanceof VirtError)) throw err;
    refused = err.code;
  }
  if (refused !== ErrorCode.OPERATION_INVALID) throw new Error(`expected OPERATION_INVALID, got ${refused}`);

  await dom.destroy();
  await dom.undefine();

  try {
    await conn.lookupDomain('compat-stable');
    throw new Error('lookupDomain found an undefined domain');
  } catch (err) {
    if (!(err instanceof VirtError) || err.code !== ErrorCode.NO_DOMAIN) throw err;
  }

  // Events are delivered asynchronously: wait (briefly) until the life cycle is complete.
  for (let i = 0; i < 100 && !seen.some((e) => e.type === 'undefined'); i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  console.log(JSON.stringify({ ok: true, events: seen.map((e) => `${e.type}:${e.reason}`) }));
} finally {
  rmSync(root, { recursive: true, force: true });
}

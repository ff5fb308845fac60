/*
 * One process, every way of loading virtkit: `import` (the ESM build) and `require` (the CJS build)
 * of both entry points. The two builds are two module instances with their own classes, so the
 * state they share (the handler table of a driver) must go through the Symbol.for() seam:
 *   - a handler registered through one format is seen through the other, both ways;
 *   - a second copy of virtkit that implements another internal API version is refused with
 *     INTERNAL_VERSION_MISMATCH, both ways, instead of silently keeping a table of its own.
 * Not a pinned consumer: it passes the library's own INTERNAL_API_VERSION, because what it checks
 * is the plumbing between builds, not the handshake (the compat fixtures check that).
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import * as esm from 'virtkit';
import * as esmInternal from 'virtkit/internal';

const require = createRequire(import.meta.url);
const cjs = require('virtkit');
const cjsInternal = require('virtkit/internal');
const version = esmInternal.INTERNAL_API_VERSION;
const report = {};

// Both formats of both entry points load and export the same names.
assert.deepEqual(Object.keys(cjs).sort(), Object.keys(esm).sort(), 'virtkit: ESM and CJS exports differ');
assert.deepEqual(
  Object.keys(cjsInternal).sort(),
  Object.keys(esmInternal).sort(),
  'virtkit/internal: ESM and CJS exports differ',
);
assert.equal(cjsInternal.INTERNAL_API_VERSION, version);
assert.notEqual(cjs.VirtError, esm.VirtError, 'expected two module instances (one per format)');
report.exports = { stable: Object.keys(esm).length, internal: Object.keys(esmInternal).length };

const roots = [];
process.on('exit', () => {
  for (const root of roots) rmSync(root, { recursive: true, force: true });
});
const embedUri = () => {
  const root = mkdtempSync(join(tmpdir(), 'virtkit-dual-format-'));
  roots.push(root);
  return `qemu:///embed?root=${root}`;
};
const codeOf = (fn) => {
  try {
    fn();
  } catch (err) {
    return { code: err.code, message: err.message };
  }
  return { code: 'no error' };
};

/** Registers through `registrar`, then checks through `observer`, on a connection made by `maker`. */
async function shared(maker, registrar, observer, op) {
  const conn = await maker.connect(embedUri());
  try {
    registrar.openInternal(conn, { apiVersion: version }).setHandler(op, async () => undefined);
    const seen = observer.openInternal(conn, { apiVersion: version });
    assert.equal(
      seen.hasHandler(op),
      true,
      `${op} registered through one format is not seen through the other`,
    );
    // The same table, not a copy: a second registration is refused.
    assert.equal(codeOf(() => seen.setHandler(op, async () => undefined)).code, 'HANDLER_ALREADY_REGISTERED');
    return true;
  } finally {
    await conn.close();
  }
}

report.esmConnectionCjsHandler = await shared(esm, cjsInternal, esmInternal, 'process.setMaxMemLock');
report.cjsConnectionEsmHandler = await shared(cjs, esmInternal, cjsInternal, 'net.openTap');

// A second installed copy of virtkit whose build implements another internal API version.
const installed = dirname(require.resolve('virtkit/package.json'));
const second = join(dirname(installed), 'virtkit-second-copy');
rmSync(second, { recursive: true, force: true });
roots.push(second);
cpSync(installed, second, { recursive: true, dereference: true });
const [major, minor] = version.split('.').map(Number);
const otherVersion = `${major}.${minor + 1}`;
let patched = 0;
for (const file of readdirSync(join(second, 'dist'))) {
  if (!/\.(c?js)$/.test(file)) continue;
  const path = join(second, 'dist', file);
  const text = readFileSync(path, 'utf8');
  const next = text.replace(
    /(INTERNAL_API_VERSION\s*=\s*)"[0-9.]+"/,
    (_, head) => `${head}${JSON.stringify(otherVersion)}`,
  );
  if (next !== text) {
    writeFileSync(path, next);
    patched++;
  }
}
assert.ok(patched >= 2, `could not patch INTERNAL_API_VERSION in the copy's ESM and CJS builds (${patched})`);
const secondStable = require(join(second, 'dist', 'index.cjs'));
const secondInternal = require(join(second, 'dist', 'internal.cjs'));
assert.equal(secondInternal.INTERNAL_API_VERSION, otherVersion);

const conn = await esm.connect(embedUri());
try {
  const refused = codeOf(() => secondInternal.openInternal(conn, { apiVersion: otherVersion }));
  assert.equal(refused.code, 'INTERNAL_VERSION_MISMATCH', JSON.stringify(refused));
  assert.ok(refused.message.includes(version) && refused.message.includes(otherVersion), refused.message);
  report.secondCopyRefused = refused;
} finally {
  await conn.close();
}
const otherConn = await secondStable.connect(embedUri());
try {
  assert.equal(
    codeOf(() => esmInternal.openInternal(otherConn, { apiVersion: version })).code,
    'INTERNAL_VERSION_MISMATCH',
  );
  report.secondCopyConnectionRefused = true;
} finally {
  await otherConn.close();
}
console.log(JSON.stringify({ ok: true, ...report }));

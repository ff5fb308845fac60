/*
 * Boots the tiny guest through the embedded driver: shows the life-cycle events as they happen
 * and the guest's serial console, then asks the guest to power off (ACPI) and waits for it.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, VirtError } from '../src/index.js';
import { ensureGuestImage } from '../test/fixtures/guest-image.js';

const root = mkdtempSync(join(tmpdir(), 'virtkit-demo-'));
const image = ensureGuestImage();
// SeaBIOS clears the screen and the kernel sets modes: strip those escapes from the console.
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching ESC is the point
const TERMINAL_CONTROL = /\u001b(\[[0-9;?]*[a-zA-Z]|c)/g;
const say = (line: string) => process.stdout.write(`${line}\n`);

async function main(): Promise<void> {
  await using conn = await connect(`qemu:///embed?root=${root}`);
  conn.on('domain-event', (e) => say(`  [event] ${e.domain.name}: ${e.type} (${e.reason})`));
  say(`embedded driver on ${root}`);
  const dom = await conn.defineDomain({
    name: 'demo',
    type: 'qemu',
    memoryKiB: 128 * 1024,
    vcpu: { count: 1 },
    os: {
      kernel: image.kernel,
      initrd: image.initrd,
      cmdline: 'console=ttyS0 panic=-1 quiet virtkit.mode=wait',
    },
    serials: [{ type: 'file' }],
  });
  const t0 = performance.now();
  await dom.start();
  const info = await dom.getInfo();
  say(
    `started in ${(performance.now() - t0).toFixed(0)} ms: pid ${info.pid}, ${info.vcpus} vCPU, ${info.memoryKiB} KiB`,
  );
  const consolePath = join(root, 'log', 'demo.console.log');
  let shown = 0;
  const showConsole = () => {
    const text = readFileSync(consolePath, 'utf8').replace(TERMINAL_CONTROL, '');
    for (const line of text.split('\n').slice(shown, -1)) say(`  [console] ${line}`);
    shown = Math.max(shown, text.split('\n').length - 1);
    return text;
  };
  const deadline = Date.now() + 60_000;
  while (!showConsole().includes('VIRTKIT-GUEST-WAITING')) {
    if (Date.now() > deadline) throw new Error('the guest did not boot within 60 s');
    await new Promise((r) => setTimeout(r, 200));
  }
  say('guest is up; shutting it down through ACPI');
  await dom.shutdown({ timeoutMs: 30_000, fallbackToDestroy: true });
  showConsole();
  const after = await dom.getInfo();
  say(`domain is ${after.state} (${after.reason})`);
  await dom.undefine();
}

main()
  .catch((err: unknown) => {
    process.stderr.write(`demo failed: ${VirtError.is(err) ? `${err.code}: ${err.message}` : String(err)}\n`);
    process.exitCode = 1;
  })
  .finally(() => rmSync(root, { recursive: true, force: true }));

/*
 * Hotplug latency, virtkit against raw QMP on the same running TCG guest (the test kernel in its
 * "devices" mode, so it lets go of an unplugged disk):
 *
 * - disk attach: `dom.attachDevice(<disk>, { live })` (storage.openFile built-in, add-fd,
 *   blockdev-add ×2, device_add, live definition written) against the same QMP commands sent by
 *   hand over a second monitor (add-fd + blockdev-add ×2 + device_add), alternating per iteration;
 *   both sides use virtkit's QMP client, so the ratio is what the driver adds on top of QEMU;
 * - vCPU hotplug on a paused firmware-only domain (`<vcpu current='1'>N</vcpu>`):
 *   `setVcpus(n + 1)` without cputune (nothing to place) and with pins and vcpusched (cgroup
 *   placement and scheduling of the new thread, built-ins) against device_add + query-cpus-fast
 *   by hand. QEMU's TCG cannot unplug vCPUs safely, so each sample adds one to a fresh slot.
 *
 * Run: npm run bench:hotplug      Knobs (env): BENCH_HP_N (20).
 */

import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QmpClient } from '../src/drivers/qemu/qmp/client.js';
import { type Connection, connect, type Domain } from '../src/index.js';
import { ensureGuestImage } from '../test/fixtures/guest-image.js';
import { summarize } from './common.js';

const N = Number(process.env['BENCH_HP_N'] ?? 20);
const VCPUS = 8;
const dir = mkdtempSync(join(tmpdir(), 'vk-bench-hp-'));
const log = (msg: string) => process.stderr.write(`[bench:hotplug] ${msg}\n`);

function image(name: string): string {
  const path = join(dir, name);
  writeFileSync(path, Buffer.alloc(1024 * 1024));
  return path;
}

async function diskBench(conn: Connection): Promise<{ raw: number[]; virtkit: number[] }> {
  const image0 = ensureGuestImage();
  const probe = join(dir, 'disk.qmp');
  const dom = await conn.defineDomain({
    name: 'bench-hp-disk',
    type: 'qemu',
    memoryKiB: 128 * 1024,
    os: {
      kernel: image0.kernel,
      initrd: image0.initrd,
      cmdline: 'console=ttyS0 panic=-1 quiet virtkit.mode=devices',
    },
    serials: [{ type: 'file' }],
    qemuCommandline: { args: ['-qmp', `unix:${probe},server=on,wait=off`], env: [] },
  });
  await dom.start();
  const qmp = await QmpClient.connect(probe, { timeoutMs: 10_000 });
  // Let the guest boot and load virtio_blk: an unplug then completes at once.
  await new Promise((r) => setTimeout(r, 15_000));
  const raw: number[] = [];
  const virtkit: number[] = [];
  try {
    for (let i = 0; i < N; i++) {
      const path = image(`d${i}.img`);
      const t0 = performance.now();
      await dom.attachDevice(
        `<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='${path}'/><target dev='vdb' bus='virtio'/></disk>`,
        { live: true },
      );
      virtkit.push(performance.now() - t0);
      await dom.detachDevice('virtio-disk1', { live: true, timeoutMs: 30_000 });

      const rawPath = image(`r${i}.img`);
      const set = 900;
      const t1 = performance.now();
      const fd = openSync(rawPath, 'r+');
      await qmp.addFd(fd, { fdsetId: set, opaque: rawPath });
      closeSync(fd);
      await qmp.execute('blockdev-add', {
        driver: 'file',
        'node-name': 'raw-storage',
        filename: `/dev/fdset/${set}`,
      });
      await qmp.execute('blockdev-add', { driver: 'raw', 'node-name': 'raw-format', file: 'raw-storage' });
      await qmp.execute('device_add', { driver: 'virtio-blk-pci', id: 'raw-disk', drive: 'raw-format' });
      raw.push(performance.now() - t1);
      // As the driver does: the backend goes only once QEMU has finalized the device.
      const deleted = qmp.waitForEvent('DEVICE_DELETED', (e) => e.data.device === 'raw-disk', {
        timeoutMs: 30_000,
      });
      await qmp.execute('device_del', { id: 'raw-disk' });
      await deleted;
      await qmp.execute('blockdev-del', { 'node-name': 'raw-format' });
      await qmp.execute('blockdev-del', { 'node-name': 'raw-storage' });
      await qmp.execute('remove-fd', { 'fdset-id': set });
    }
  } finally {
    qmp.close();
    await dom.destroy({ graceMs: 1000 });
  }
  return { raw, virtkit };
}

async function vcpuDomain(
  conn: Connection,
  name: string,
  tuned: boolean,
): Promise<{ dom: Domain; qmp: QmpClient }> {
  const probe = join(dir, `${name}.qmp`);
  const dom = await conn.defineDomain({
    name,
    type: 'qemu',
    memoryKiB: 64 * 1024,
    vcpu: { count: VCPUS, current: 1 },
    ...(tuned
      ? {
          cputune: {
            vcpupin: Array.from({ length: VCPUS }, (_, i) => ({ vcpu: i, cpuset: String(i % 2) })),
            vcpusched: [{ ids: `0-${VCPUS - 1}`, scheduler: 'batch' as const, priority: 0 }],
          },
        }
      : {}),
    qemuCommandline: { args: ['-qmp', `unix:${probe},server=on,wait=off`], env: [] },
  });
  await dom.start({ paused: true });
  return { dom, qmp: await QmpClient.connect(probe, { timeoutMs: 10_000 }) };
}

async function vcpuBench(conn: Connection): Promise<{ raw: number[]; plain: number[]; tuned: number[] }> {
  const out = { raw: [] as number[], plain: [] as number[], tuned: [] as number[] };
  const rounds = Math.max(1, Math.ceil(N / (VCPUS - 1)));
  for (let r = 0; r < rounds; r++) {
    for (const kind of ['plain', 'tuned', 'raw'] as const) {
      const { dom, qmp } = await vcpuDomain(conn, `bench-hp-vcpu-${kind}-${r}`, kind === 'tuned');
      try {
        for (let n = 1; n < VCPUS; n++) {
          const t0 = performance.now();
          if (kind === 'raw') {
            const slots =
              await qmp.execute<Array<{ type: string; props: Record<string, number>; 'qom-path'?: string }>>(
                'query-hotpluggable-cpus',
              );
            const free = slots.filter((s) => s['qom-path'] === undefined).at(-1);
            if (!free) throw new Error('no free vCPU slot');
            await qmp.execute('device_add', { driver: free.type, id: `raw-vcpu${n}`, ...free.props });
            await qmp.execute('query-cpus-fast');
          } else {
            await dom.setVcpus(n + 1, { live: true });
          }
          out[kind].push(performance.now() - t0);
        }
      } finally {
        qmp.close();
        await dom.destroy({ graceMs: 1000 });
        await dom.undefine();
      }
    }
  }
  return out;
}

async function main(): Promise<void> {
  const root = join(dir, 'root');
  const conn = await connect(`qemu:///embed?root=${root}`);
  let disk: { raw: number[]; virtkit: number[] };
  let vcpu: { raw: number[]; plain: number[]; tuned: number[] };
  try {
    log(`disk attach, ${N} alternating iterations…`);
    disk = await diskBench(conn);
    log('vCPU hotplug…');
    vcpu = await vcpuBench(conn);
  } finally {
    for (const d of await conn.listDomains({ state: 'active' })) await d.destroy({ graceMs: 1000 });
    await conn.close();
    rmSync(dir, { recursive: true, force: true });
  }
  const med = (xs: number[]) => summarize(xs).median;
  const row = (what: string, raw: number[], vk: number[]) =>
    `| ${what} | ${med(raw).toFixed(2)} | ${med(vk).toFixed(2)} | ${(med(vk) / med(raw)).toFixed(2)}× |`;
  process.stdout.write(
    [
      `Hotplug latency on TCG guests, medians (disk: ${disk.raw.length} alternating samples; vCPU: ${vcpu.raw.length} per contender):`,
      '',
      '| | raw QMP (ms) | virtkit (ms) | ratio |',
      '|---|---|---|---|',
      row('disk attach (add-fd, blockdev-add ×2, device_add)', disk.raw, disk.virtkit),
      row('vCPU add, no cputune', vcpu.raw, vcpu.plain),
      row('vCPU add, pinned + vcpusched (placement and scheduling)', vcpu.raw, vcpu.tuned),
      '',
    ].join('\n'),
  );
}

await main();

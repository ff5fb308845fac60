import { readlinkSync, statSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { z } from 'zod';
import { errorMessage } from '../../../errors.js';
import type { DiskDefinition, InterfaceDefinition } from '../../../stable/definition/schema.js';
import type { QmpClient } from '../qmp/client.js';

/*
 * Disks and NICs read back from a running QEMU (libvirt's qemu-attach did the same from the command
 * line): the peripherals QOM lists (`qom-list`), their PCI address (`qom-get addr`, bus from
 * `query-pci`), a disk's image from `query-block` and its protocol from `query-named-block-nodes`,
 * a NIC's MAC and netdev from QOM and the netdev's type from `info network` (QEMU 7.2 has no
 * `query-netdev`). Only what the definition can represent comes back; everything else is named in
 * `skipped`, so the caller can log it. What QEMU answers is untrusted: every value goes through the
 * definition's schema before it is used.
 */

/** A disk or NIC found in QEMU, keyed by its QOM path. */
export interface FoundDevices {
  readonly disks: DiskDefinition[];
  readonly interfaces: InterfaceDefinition[];
  /** Peripherals that are not representable, with why. */
  readonly skipped: string[];
}

const QomEntries = z.array(z.looseObject({ name: z.string(), type: z.string() }));
const BlockInfo = z.array(
  z.looseObject({
    qdev: z.string().optional(),
    inserted: z
      .looseObject({ file: z.string(), drv: z.string(), ro: z.boolean(), 'node-name': z.string().optional() })
      .optional(),
  }),
);

/** QEMU's virtio disk devices and the definition's model of each (plain virtio has none). */
const DISK_MODELS: Record<string, { model?: DiskDefinition['model'] }> = {
  'virtio-blk-pci': {},
  'virtio-blk-pci-transitional': { model: 'virtio-transitional' },
  'virtio-blk-pci-non-transitional': { model: 'virtio-non-transitional' },
};
const NIC_MODELS: Record<string, InterfaceDefinition['model']> = {
  'virtio-net-pci': 'virtio',
  'virtio-net-pci-transitional': 'virtio-transitional',
  'virtio-net-pci-non-transitional': 'virtio-non-transitional',
  e1000: 'e1000',
  e1000e: 'e1000e',
  rtl8139: 'rtl8139',
};
/** An id virtkit can give back to QEMU as an alias (QEMU's id_wellformed). */
const QEMU_ID = /^[A-Za-z][A-Za-z0-9._-]*$/;

interface Peripheral {
  readonly path: string;
  readonly id: string | undefined;
  readonly model: string;
}

async function peripherals(qmp: QmpClient): Promise<Peripheral[]> {
  const out: Peripheral[] = [];
  for (const [container, named] of [
    ['/machine/peripheral', true],
    ['/machine/peripheral-anon', false],
  ] as const) {
    const entries = QomEntries.parse(await qmp.execute('qom-list', { path: container }));
    for (const e of entries) {
      const model = /^child<(.+)>$/.exec(e.type)?.[1];
      if (model) out.push({ path: `${container}/${e.name}`, id: named ? e.name : undefined, model });
    }
  }
  return out;
}

/** `info network`'s netdev lines: ` \ hostnet0: index=0,type=tap,ifname=vnet0,…`. */
function netdevTypes(text: string): Map<string, { type: string; ifname?: string }> {
  const out = new Map<string, { type: string; ifname?: string }>();
  for (const line of text.split(/\r?\n/)) {
    const m = /^\s*\\\s+([^:]+):\s+(.*)$/.exec(line);
    if (!m) continue;
    const fields = new Map(
      (m[2] as string).split(',').map((kv) => kv.split('=', 2) as [string, string | undefined]),
    );
    out.set(m[1] as string, { type: fields.get('type') ?? '', ifname: fields.get('ifname') });
  }
  return out;
}

async function pciAddress(
  qmp: QmpClient,
  dev: Peripheral,
  buses: Map<string, number>,
): Promise<{ type: 'pci'; domain: 0; bus: number; slot: number; function: number } | undefined> {
  const devfn = z
    .number()
    .int()
    .min(0)
    .max(255)
    .safeParse(await qmp.execute('qom-get', { path: dev.path, property: 'addr' }));
  if (!devfn.success) return undefined;
  return {
    type: 'pci',
    domain: 0,
    bus: (dev.id && buses.get(dev.id)) || 0,
    slot: devfn.data >> 3,
    function: devfn.data & 7,
  };
}

const targetLetters = (n: number): string =>
  n < 26 ? String.fromCharCode(97 + n) : targetLetters(Math.floor(n / 26) - 1) + targetLetters(n % 26);

/**
 * Reads the disks and NICs of a running QEMU. `cwd` resolves the relative image names QEMU reports
 * (its own working directory, `/proc/<pid>/cwd`).
 *
 * @param taken - target names already in use (a reconstructed virtio disk gets the next free `vdX`)
 */
export async function readDevices(
  qmp: QmpClient,
  cwd: string,
  taken: ReadonlySet<string> = new Set(),
): Promise<FoundDevices> {
  const found: FoundDevices = { disks: [], interfaces: [], skipped: [] };
  const pci = await qmp.command('query-pci');
  const buses = new Map<string, number>();
  for (const bus of pci) for (const d of bus.devices) if (d.qdev_id) buses.set(d.qdev_id, d.bus);
  // In PCI address order, as the guest enumerates them: targets (vda, vdb, …) follow it.
  const devices: Array<Peripheral & { address?: Awaited<ReturnType<typeof pciAddress>> }> = [];
  for (const dev of await peripherals(qmp)) {
    const relevant = DISK_MODELS[dev.model] || NIC_MODELS[dev.model];
    devices.push({ ...dev, address: relevant ? await pciAddress(qmp, dev, buses) : undefined });
  }
  const key = (d: (typeof devices)[number]) =>
    d.address ? (d.address.bus * 256 + d.address.slot) * 8 + d.address.function : Number.MAX_SAFE_INTEGER;
  devices.sort((a, b) => key(a) - key(b));
  const blocks = BlockInfo.parse(await qmp.execute('query-block'));
  const nodes = await qmp.command('query-named-block-nodes');
  const network = await qmp.execute('human-monitor-command', { 'command-line': 'info network' });
  const netdevs = netdevTypes(typeof network === 'string' ? network : '');
  const used = new Set(taken);
  const alias = (dev: Peripheral) => (dev.id && QEMU_ID.test(dev.id) ? { alias: dev.id } : {});
  for (const dev of devices) {
    try {
      const diskModel = DISK_MODELS[dev.model];
      if (diskModel) {
        const block = blocks.find((b) => b.qdev === `${dev.path}/virtio-backend` || b.qdev === dev.path);
        const image = block?.inserted;
        if (!image) {
          found.skipped.push(`${dev.path} (${dev.model}): no medium`);
          continue;
        }
        const format = image.drv === 'raw' || image.drv === 'qcow2' ? image.drv : undefined;
        if (!format) {
          found.skipped.push(`${dev.path} (${dev.model}): image format ${image.drv}`);
          continue;
        }
        const source = isAbsolute(image.file) ? image.file : resolve(cwd, image.file);
        const protocol = nodes.find(
          (n) => n.file === image.file && (n.drv === 'file' || n.drv === 'host_device'),
        );
        let n = 0;
        while (used.has(`vd${targetLetters(n)}`)) n++;
        const dev_ = `vd${targetLetters(n)}`;
        used.add(dev_);
        const address = dev.address;
        found.disks.push({
          type: protocol?.drv === 'host_device' || isBlockDevice(source) ? 'block' : 'file',
          device: 'disk',
          driver: { type: format },
          source,
          target: { dev: dev_, bus: 'virtio' },
          ...diskModel,
          readonly: image.ro,
          ...alias(dev),
          ...(address ? { address } : {}),
        });
        continue;
      }
      const model = NIC_MODELS[dev.model];
      if (model) {
        const mac = z.string().safeParse(await qmp.execute('qom-get', { path: dev.path, property: 'mac' }));
        const netdev = z
          .string()
          .safeParse(await qmp.execute('qom-get', { path: dev.path, property: 'netdev' }));
        const backend = netdev.success ? netdevs.get(netdev.data) : undefined;
        const address = dev.address;
        const common = {
          model,
          ...(mac.success ? { mac: mac.data.toLowerCase() } : {}),
          ...alias(dev),
          ...(address ? { address } : {}),
        };
        if (backend?.type === 'user') found.interfaces.push({ type: 'user', ...common });
        else if (backend?.type === 'tap' && backend.ifname)
          // A TAP someone else made: virtkit must never create or remove it (managed='no').
          found.interfaces.push({
            type: 'ethernet',
            target: { dev: backend.ifname, managed: false },
            ...common,
          });
        else found.skipped.push(`${dev.path} (${dev.model}): netdev ${backend?.type ?? 'unknown'}`);
        continue;
      }
      found.skipped.push(`${dev.path} (${dev.model}): not a disk or NIC model virtkit represents`);
    } catch (err) {
      found.skipped.push(`${dev.path} (${dev.model}): ${errorMessage(err)}`);
    }
  }
  return found;
}

function isBlockDevice(path: string): boolean {
  try {
    return statSync(path).isBlockDevice();
  } catch {
    return false;
  }
}

/** QEMU's working directory, against which it resolved relative image names. */
export function qemuCwd(pid: number): string {
  try {
    return readlinkSync(`/proc/${pid}/cwd`);
  } catch {
    return '/';
  }
}

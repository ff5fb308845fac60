import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { QmpClient } from '../../src/drivers/qemu/qmp/client.js';
import { useProbeRoot } from '../helpers/probe-root.js';

/*
 * <memoryBacking> (source, access, allocation, huge page sizes per NUMA cell, discard) on real
 * QEMU (TCG, paused): the memory backend objects libvirt's qemuBuildMemoryBackendProps would make,
 * read back through QMP (qom-get and query-memdev). Huge pages come from the 2 MiB hugetlbfs the
 * global test set-up mounts and reserves; each domain here takes at most 16 of those pages.
 */

const rig = useProbeRoot();

const doc = (name: string, inner: string, memory = 32): string => `<domain type='qemu'>
  <name>${name}</name>
  <memory unit='MiB'>${memory}</memory>
  <vcpu>2</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  ${inner}
</domain>`;

interface Memdev {
  id: string;
  size: number;
  share: boolean;
  prealloc: boolean;
}

async function backends(qmp: QmpClient): Promise<Map<string, Memdev>> {
  const list = await qmp.execute<Memdev[]>('query-memdev');
  return new Map(list.map((m) => [m.id, m]));
}

const get = (qmp: QmpClient, id: string, property: string): Promise<unknown> =>
  qmp.execute('qom-get', { path: `/objects/${id}`, property });

describe('<memoryBacking> on real QEMU', () => {
  it('memfd, shared, preallocated by 2 threads: one memfd backend for all guest memory', async () => {
    const { qmp, live } = await rig.startWithProbe(
      doc(
        'memfd',
        `<memoryBacking><source type='memfd'/><access mode='shared'/><allocation mode='immediate' threads='2'/></memoryBacking>`,
      ),
    );
    expect(live.memoryBacking).toMatchObject({
      source: 'memfd',
      access: 'shared',
      allocation: { mode: 'immediate', threads: 2 },
    });
    expect(await get(qmp, 'pc.ram', 'type')).toBe('memory-backend-memfd');
    expect(await get(qmp, 'pc.ram', 'prealloc-threads')).toBe(2);
    expect(await get(qmp, 'pc.ram', 'hugetlb')).toBe(false);
    expect((await backends(qmp)).get('pc.ram')).toMatchObject({
      size: 32 * 1024 * 1024,
      share: true,
      prealloc: true,
    });
  });

  it('file-backed, private, discarded; a cell overriding the access mode; nothing left in lib/ram', async () => {
    const { qmp } = await rig.startWithProbe(
      doc(
        'file',
        `<cpu><numa><cell id='0' cpus='0' memory='16' unit='MiB'/><cell id='1' cpus='1' memory='16' unit='MiB' memAccess='shared' discard='no'/></numa></cpu>
  <memoryBacking><source type='file'/><access mode='private'/><discard/></memoryBacking>`,
      ),
    );
    const dir = join(rig.root, 'lib', 'ram');
    for (const id of ['ram-node0', 'ram-node1']) {
      expect(await get(qmp, id, 'type')).toBe('memory-backend-file');
      expect(await get(qmp, id, 'mem-path')).toBe(dir);
    }
    expect(await get(qmp, 'ram-node0', 'discard-data')).toBe(true);
    expect(await get(qmp, 'ram-node1', 'discard-data')).toBe(false);
    const memdevs = await backends(qmp);
    expect(memdevs.get('ram-node0')).toMatchObject({ share: false, prealloc: false });
    expect(memdevs.get('ram-node1')).toMatchObject({ share: true });
    // QEMU made its files in the directory and unlinked them at once.
    expect(readdirSync(dir)).toEqual([]);
  });

  it('huge page sizes per NUMA cell: 2 MiB pages for cell 0 only, and 4 KiB meaning none', async () => {
    const { qmp, live } = await rig.startWithProbe(
      doc(
        'pages',
        `<cpu><numa><cell id='0' cpus='0' memory='16' unit='MiB'/><cell id='1' cpus='1' memory='16' unit='MiB'/></numa></cpu>
  <memoryBacking><hugepages><page size='2' unit='MiB' nodeset='0'/><page size='4' unit='KiB' nodeset='1'/></hugepages></memoryBacking>`,
      ),
    );
    expect(live.memoryBacking?.pages).toEqual([
      { sizeKiB: 2048, nodeset: '0' },
      { sizeKiB: 4, nodeset: '1' },
    ]);
    expect(await get(qmp, 'ram-node0', 'type')).toBe('memory-backend-file');
    expect(String(await get(qmp, 'ram-node0', 'mem-path'))).toMatch(/^\//);
    expect((await backends(qmp)).get('ram-node0')).toMatchObject({ prealloc: true });
    expect(await get(qmp, 'ram-node1', 'type')).toBe('memory-backend-ram');
  });

  it('memfd on huge pages: hugetlb with the page size, preallocated', async () => {
    const { qmp } = await rig.startWithProbe(
      doc(
        'memfd-huge',
        `<memoryBacking><hugepages><page size='2048'/></hugepages><source type='memfd'/></memoryBacking>`,
      ),
    );
    expect(await get(qmp, 'pc.ram', 'type')).toBe('memory-backend-memfd');
    expect(await get(qmp, 'pc.ram', 'hugetlb')).toBe(true);
    expect(await get(qmp, 'pc.ram', 'hugetlbsize')).toBe(2 * 1024 * 1024);
    expect((await backends(qmp)).get('pc.ram')).toMatchObject({ prealloc: true, size: 32 * 1024 * 1024 });
  });

  it('refuses what libvirt refuses, and a page size this host has no hugetlbfs for at start', async () => {
    await expect(
      rig.conn.defineDomain(
        doc(
          'nonode',
          "<memoryBacking><hugepages><page size='2048' nodeset='1'/></hugepages></memoryBacking>",
        ),
      ),
    ).rejects.toMatchObject({
      code: 'XML_ERROR',
      details: { path: '/domain/memoryBacking/hugepages/page/@nodeset' },
    });
    await expect(
      rig.conn.defineDomain(doc('badsrc', "<memoryBacking><source type='disk'/></memoryBacking>")),
    ).rejects.toMatchObject({ code: 'XML_ERROR', details: { path: '/domain/memoryBacking/source/@type' } });
    await expect(
      rig.conn.defineDomain(doc('badmode', "<memoryBacking><allocation mode='later'/></memoryBacking>")),
    ).rejects.toMatchObject({ code: 'XML_ERROR' });
    // 5 MiB pages exist on no x86 host.
    const dom = await rig.conn.defineDomain(
      doc('five', "<memoryBacking><hugepages><page size='5' unit='MiB'/></hugepages></memoryBacking>"),
    );
    await expect(dom.start()).rejects.toMatchObject({
      code: 'CONFIG_UNSUPPORTED',
      details: { path: 'memoryBacking.hugepages' },
    });
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff' });
  });
});

import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { QmpClient } from '../../src/drivers/qemu/qmp/client.js';
import { resolveDomainXml } from '../../src/stable/definition/xml.js';
import { runLeftovers } from '../helpers/env.js';
import { useProbeRoot } from '../helpers/probe-root.js';

/*
 * <numatune> on real QEMU (TCG): guest memory bound to host NUMA nodes through its memory
 * backends' host-nodes and policy, as libvirt builds them. This host may have one node (0): the
 * tests bind to it, and a node it lacks is refused at start as libvirt does.
 */

const rig = useProbeRoot();

const doc = (name: string, inner: string) => `<domain type='qemu'>
  <name>${name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>2</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  ${inner}
  <qemu:commandline xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><qemu:arg value='-qmp'/><qemu:arg value='unix:${join(rig.root, `${name}.probe`)},server=on,wait=off'/></qemu:commandline>
</domain>`;

async function start(name: string, inner: string): Promise<QmpClient> {
  const dom = await rig.conn.defineDomain(doc(name, inner));
  expect(resolveDomainXml(dom.toXML())).toEqual(dom.getDefinition());
  await dom.start({ paused: true });
  const qmp = await rig.probe(join(rig.root, `${name}.probe`));
  return qmp;
}

describe('<numatune> on real QEMU', () => {
  it('memory mode strict: all guest RAM in one backend bound to host node 0', async () => {
    const qmp = await start('strict', "<numatune><memory mode='strict' nodeset='0'/></numatune>");
    const get = (property: string) => qmp.execute('qom-get', { path: '/objects/pc.ram', property });
    expect(await get('policy')).toBe('bind');
    expect(await get('host-nodes')).toEqual([0]);
    expect(await get('size')).toBe(64 * 1024 * 1024);
  });

  it('memnode per guest NUMA cell, the others following <memory>', async () => {
    const qmp = await start(
      'cells',
      `<cpu><numa><cell id='0' cpus='0' memory='32' unit='MiB'/><cell id='1' cpus='1' memory='32' unit='MiB'/></numa></cpu>
  <numatune><memory mode='preferred' nodeset='0'/><memnode cellid='1' mode='interleave' nodeset='0'/></numatune>`,
    );
    const get = (id: string, property: string) =>
      qmp.execute('qom-get', { path: `/objects/${id}`, property });
    expect(await get('ram-node0', 'policy')).toBe('preferred');
    expect(await get('ram-node1', 'policy')).toBe('interleave');
    expect(await get('ram-node1', 'host-nodes')).toEqual([0]);
  });

  it('cells in any id order, a memory-only cell, and the memory taken from the cells as libvirt does', async () => {
    // <memory> says 64 MiB; the cells hold 96: libvirt (and virtkit) take the cells' sum.
    const qmp = await start(
      'order',
      `<cpu><numa><cell id='2' memory='16' unit='MiB'/><cell id='0' cpus='0' memory='48' unit='MiB'/><cell id='1' cpus='1' memory='32' unit='MiB'/></numa></cpu>`,
    );
    const dom = await rig.conn.lookupDomain('order');
    const def = dom.getDefinition();
    expect(def.memoryKiB).toBe(96 * 1024);
    expect(def.cpu?.numa?.map((c) => [c.id, c.cpus, c.memoryKiB])).toEqual([
      [0, '0', 48 * 1024],
      [1, '1', 32 * 1024],
      [2, undefined, 16 * 1024],
    ]);
    const memdevs = await qmp.execute<Array<{ id: string; size: number }>>('query-memdev');
    expect(memdevs.map((m) => [m.id, m.size]).sort()).toEqual([
      ['ram-node0', 48 * 1024 * 1024],
      ['ram-node1', 32 * 1024 * 1024],
      ['ram-node2', 16 * 1024 * 1024],
    ]);
    const cpus =
      await qmp.execute<Array<{ 'cpu-index': number; props: { 'node-id': number } }>>('query-cpus-fast');
    expect(cpus.map((c) => [c['cpu-index'], c.props['node-id']])).toEqual([
      [0, 0],
      [1, 1],
    ]);
  });

  it('refuses a host node the host lacks at start, placement auto and mode restrictive at define', async () => {
    const dom = await rig.conn.defineDomain(
      doc('absent', "<numatune><memory mode='strict' nodeset='999'/></numatune>"),
    );
    await expect(dom.start()).rejects.toMatchObject({
      code: 'CONFIG_UNSUPPORTED',
      details: { path: 'numatune' },
    });
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff' });
    expect(runLeftovers(rig.root)).toEqual([]);
    await expect(
      rig.conn.defineDomain(doc('auto', "<numatune><memory mode='strict' placement='auto'/></numatune>")),
    ).rejects.toMatchObject({ code: 'CONFIG_UNSUPPORTED' });
    await expect(
      rig.conn.defineDomain(doc('restr', "<numatune><memory mode='restrictive' nodeset='0'/></numatune>")),
    ).rejects.toMatchObject({ code: 'CONFIG_UNSUPPORTED' });
    await expect(
      rig.conn.defineDomain(
        doc('nocell', "<numatune><memnode cellid='0' mode='strict' nodeset='0'/></numatune>"),
      ),
    ).rejects.toMatchObject({ code: 'XML_ERROR' });
  });
});

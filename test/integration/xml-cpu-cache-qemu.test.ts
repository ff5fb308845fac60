import { describe, expect, it } from 'vitest';
import type { QmpClient } from '../../src/drivers/qemu/qmp/client.js';
import { useProbeRoot } from '../helpers/probe-root.js';

/*
 * <cpu><cache> and <maxphysaddr> on real QEMU (TCG, paused): the -cpu properties libvirt's
 * qemuBuildCpuModelArgStr writes (l3-cache, host-cache-info, phys-bits, host-phys-bits), read back
 * from the vCPU objects with qom-get.
 */

const rig = useProbeRoot();

const doc = (name: string, cpu: string): string => `<domain type='qemu'>
  <name>${name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  ${cpu}
</domain>`;

async function cpuProperty(qmp: QmpClient, property: string): Promise<unknown> {
  const cpus = await qmp.execute<Array<{ 'qom-path': string }>>('query-cpus-fast');
  const path = cpus[0]?.['qom-path'];
  if (path === undefined) throw new Error('QEMU reports no vCPU');
  return qmp.execute('qom-get', { path, property });
}

describe('<cpu><cache> and <maxphysaddr> on real QEMU', () => {
  it('host-model with the cache disabled and 42 emulated physical address bits', async () => {
    const { qmp, live } = await rig.startWithProbe(
      doc(
        'nocache',
        "<cpu mode='host-model'><cache mode='disable'/><maxphysaddr mode='emulate' bits='42'/></cpu>",
      ),
    );
    expect(live.cpu).toMatchObject({
      cache: { mode: 'disable' },
      maxphysaddr: { mode: 'emulate', bits: 42 },
    });
    expect(await cpuProperty(qmp, 'l3-cache')).toBe(false);
    expect(await cpuProperty(qmp, 'phys-bits')).toBe(42);
  });

  it('a named model with an emulated L3 cache and the host physical address bits', async () => {
    const { qmp } = await rig.startWithProbe(
      doc(
        'l3',
        "<cpu mode='custom'><model>qemu64</model><cache level='3' mode='emulate'/><maxphysaddr mode='passthrough'/></cpu>",
      ),
    );
    expect(await cpuProperty(qmp, 'l3-cache')).toBe(true);
    expect(await cpuProperty(qmp, 'host-phys-bits')).toBe(true);
  });

  it('refuses what libvirt refuses, with the path', async () => {
    const refused = async (cpu: string, path: string) =>
      expect(rig.conn.defineDomain(doc('bad', cpu))).rejects.toMatchObject({
        code: 'XML_ERROR',
        details: expect.objectContaining({ path }),
      });
    await refused(
      "<cpu mode='host-model'><cache level='2' mode='emulate'/></cpu>",
      '/domain/cpu/cache/@level',
    );
    await refused("<cpu mode='host-model'><cache mode='passthrough'/></cpu>", '/domain/cpu/cache/@mode');
    await refused(
      "<cpu mode='host-model'><maxphysaddr mode='emulate'/></cpu>",
      '/domain/cpu/maxphysaddr/@bits',
    );
    await refused(
      "<cpu mode='host-model'><maxphysaddr mode='passthrough' bits='42'/></cpu>",
      '/domain/cpu/maxphysaddr/@bits',
    );
    await refused("<cpu mode='host-model'><cache mode='sometimes'/></cpu>", '/domain/cpu/cache/@mode');
  });
});

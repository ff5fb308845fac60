import { join } from 'node:path';
import { afterEach, beforeEach, expect } from 'vitest';
import { QmpClient } from '../../src/drivers/qemu/qmp/client.js';
import { resolveDomainXml } from '../../src/stable/definition/xml.js';
import type { Connection, DomainDefinition } from '../../src/stable/index.js';
import { openRoot, removeRoot, tempRoot } from './env.js';

/**
 * A fresh embedded root and connection for each test of a file, and second QMP monitors ("probes")
 * on its domains, through which a test sees what QEMU really has.
 */
export interface ProbeRoot {
  /** The current test's root. */
  readonly root: string;
  /** The current test's connection to its root. */
  readonly conn: Connection;
  /** Connects to the QMP monitor QEMU serves at `path`; closed after the test or by {@link closeProbes}. */
  probe(path: string): Promise<QmpClient>;
  /** Closes the probes opened so far. */
  closeProbes(): void;
  /**
   * Defines `xml` with a second monitor at `<root>/probe.qmp`, starts it paused, checks that
   * toXML() of the live domain re-parses to its definition and returns the probe, that definition
   * and QEMU's pid.
   */
  startWithProbe(xml: string): Promise<{ qmp: QmpClient; live: DomainDefinition; pid: number }>;
}

/**
 * Registers the hooks of a {@link ProbeRoot}: after each test its probes are closed, its active
 * domains destroyed, the connection closed and the root removed.
 */
export function useProbeRoot(): ProbeRoot {
  let root: string | undefined;
  let conn: Connection | undefined;
  const closers: Array<() => void> = [];
  const closeProbes = (): void => {
    for (const c of closers.splice(0)) c();
  };
  const rig: ProbeRoot = {
    get root(): string {
      if (root === undefined) throw new Error('no root outside a test');
      return root;
    },
    get conn(): Connection {
      if (conn === undefined) throw new Error('no connection outside a test');
      return conn;
    },
    async probe(path: string): Promise<QmpClient> {
      const qmp = await QmpClient.connect(path, { timeoutMs: 10_000 });
      closers.push(() => qmp.close());
      return qmp;
    },
    closeProbes,
    async startWithProbe(xml: string): Promise<{ qmp: QmpClient; live: DomainDefinition; pid: number }> {
      const probe = join(rig.root, 'probe.qmp');
      const withProbe = xml.replace(
        '</domain>',
        `<qemu:commandline xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><qemu:arg value='-qmp'/><qemu:arg value='unix:${probe},server=on,wait=off'/></qemu:commandline></domain>`,
      );
      const dom = await rig.conn.defineDomain(withProbe);
      await dom.start({ paused: true });
      const qmp = await rig.probe(probe);
      const live = dom.getDefinition();
      expect(resolveDomainXml(dom.toXML())).toEqual(live);
      return { qmp, live, pid: (await dom.getInfo()).pid as number };
    },
  };
  beforeEach(async () => {
    root = tempRoot();
    conn = await openRoot(root);
  });
  afterEach(async () => {
    closeProbes();
    const c = rig.conn;
    for (const dom of await c.listDomains({ state: 'active' })) await dom.destroy({ graceMs: 1000 });
    await c.close();
    removeRoot(rig.root);
    conn = undefined;
    root = undefined;
  });
  return rig;
}

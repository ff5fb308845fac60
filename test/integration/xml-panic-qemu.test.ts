import { closeSync, existsSync, openSync, readdirSync, readFileSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { QmpClient } from '../../src/drivers/qemu/qmp/client.js';
import { resolveDomainXml } from '../../src/stable/definition/xml.js';
import type { Connection, DomainDefinitionInput } from '../../src/stable/index.js';
import { GUEST_MARKER, openRoot, recordEvents, removeRoot, tempRoot, tinyGuest } from '../helpers/env.js';

/*
 * <panic> devices and <on_crash>: a TCG busybox guest loads Linux's pvpanic driver and panics
 * (`echo c > /proc/sysrq-trigger`); QEMU's ISA pvpanic device tells QEMU, and the driver applies
 * on_crash as libvirt's processGuestPanicEvent does. Every wait is for an event or a file's content.
 */

let root: string;
let conn: Connection;
const closers: Array<() => void> = [];

beforeEach(async () => {
  root = tempRoot();
  conn = await openRoot(root);
});
afterEach(async () => {
  for (const c of closers.splice(0)) c();
  for (const dom of await conn.listDomains({ state: 'active' })) await dom.destroy({ graceMs: 1000 });
  await conn.close();
  removeRoot(root);
});

function panicking(name: string, onCrash: DomainDefinitionInput['onCrash']): DomainDefinitionInput {
  return tinyGuest(name, 'panic', {
    onCrash,
    panics: [{ model: 'isa', iobase: 0x505 }],
    // A second monitor for the test's own look at QEMU.
    qemuCommandline: { args: ['-qmp', `unix:${join(root, `${name}.probe`)},server=on,wait=off`] },
  });
}

/** The console log once it holds `text` `times` times (60 s at most). */
async function waitForConsole(name: string, text: string, times = 1): Promise<string> {
  const path = join(root, 'log', `${name}.console.log`);
  const deadline = Date.now() + 60_000;
  for (;;) {
    let content = '';
    try {
      content = readFileSync(path, 'utf8');
    } catch {}
    if (content.split(text).length - 1 >= times) return content;
    if (Date.now() > deadline)
      throw new Error(`console never showed ${text} ×${times}: ${content.slice(-500)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('on_crash with a pvpanic device on real QEMU', () => {
  it('preserve: the panicked guest stays stopped, state crashed/panicked; resume is refused, destroy ends it', async () => {
    const rec = recordEvents(conn);
    const dom = await conn.defineDomain(panicking('preserve', 'preserve'));
    // The definition round-trips through libvirt XML.
    expect(resolveDomainXml(dom.toXML())).toMatchObject({
      onCrash: 'preserve',
      panics: [{ model: 'isa', iobase: 0x505 }],
    });
    expect(dom.toXML()).toMatch(/<panic model='isa'>\s*<address type='isa' iobase='0x505'\/>\s*<\/panic>/);
    expect(dom.toXML()).toContain('<on_crash>preserve</on_crash>');
    await dom.start();
    await rec.next((e) => e.type === 'crashed');
    await waitForConsole('preserve', 'VIRTKIT-GUEST-PANICKING');
    expect(await dom.getInfo()).toMatchObject({ state: 'crashed', reason: 'panicked' });
    // QEMU holds the guest where it panicked.
    const qmp = await QmpClient.connect(join(root, 'preserve.probe'), { timeoutMs: 10_000 });
    closers.push(() => qmp.close());
    expect(await qmp.execute('query-status')).toMatchObject({ status: 'guest-panicked', running: false });
    await expect(dom.resume()).rejects.toMatchObject({ code: 'OPERATION_INVALID' });
    const types = rec.events.map((e) => `${e.type}:${e.reason}`);
    expect(types).toContain('suspended:crashed');
    expect(types.at(-1)).toBe('crashed:panicked');
    await dom.destroy();
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'destroyed' });
  });

  it('restart: the guest is reset in the same QEMU and boots again, running with reason crashed', async () => {
    const rec = recordEvents(conn);
    const dom = await conn.defineDomain(panicking('restart', 'restart'));
    await dom.start();
    const pid = (await dom.getInfo()).pid;
    await rec.next((e) => e.type === 'resumed' && e.reason === 'crashed');
    // The second boot's marker: the same QEMU ran the guest again from the start.
    await waitForConsole('restart', GUEST_MARKER, 2);
    const info = await dom.getInfo();
    expect(info.pid).toBe(pid);
    const types = rec.events.map((e) => `${e.type}:${e.reason}`);
    expect(types.indexOf('crashed:panicked')).toBeGreaterThan(-1);
    expect(types.indexOf('resumed:crashed')).toBeGreaterThan(types.indexOf('crashed:panicked'));
  });

  it('destroy: QEMU ends and the domain is shut off with reason crashed', async () => {
    const rec = recordEvents(conn);
    const dom = await conn.defineDomain(panicking('destroy', 'destroy'));
    await dom.start();
    await rec.next((e) => e.type === 'stopped');
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'crashed' });
    const types = rec.events.map((e) => `${e.type}:${e.reason}`);
    expect(types).toContain('crashed:panicked');
    expect(types.at(-1)).toBe('stopped:crashed');
    expect(await waitForConsole('destroy', 'VIRTKIT-GUEST-PANICKING')).toContain('Kernel panic');
  });

  it('coredump-destroy: the guest memory is written as an ELF core under lib/dump, then QEMU ends', async () => {
    const rec = recordEvents(conn);
    const dom = await conn.defineDomain(panicking('dump', 'coredump-destroy'));
    await dom.start();
    await rec.next((e) => e.type === 'stopped');
    expect(await dom.getInfo()).toMatchObject({ state: 'shutoff', reason: 'crashed' });
    const dir = join(root, 'lib', 'dump');
    expect(existsSync(dir)).toBe(true);
    const cores = readdirSync(dir);
    expect(cores).toHaveLength(1);
    const core = join(dir, cores[0] as string);
    expect(cores[0]).toMatch(/^dump-.*\.core$/);
    expect(statSync(core).mode & 0o777).toBe(0o600);
    // 128 MiB of guest RAM, behind an ELF header.
    expect(statSync(core).size).toBeGreaterThan(128 * 1024 * 1024);
    const head = Buffer.alloc(4);
    const fd = openSync(core, 'r');
    readSync(fd, head, 0, 4, 0);
    closeSync(fd);
    expect(head.toString('latin1')).toBe('\x7fELF');
  });
});

describe('<panic> devices from XML on real QEMU', () => {
  it("an ISA pvpanic at its port and a Hyper-V one as the CPU's hv-crash", async () => {
    const probe = join(root, 'probe.qmp');
    const dom = await conn.defineDomain(`<domain type='qemu'>
  <name>panics</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <on_crash>coredump-restart</on_crash>
  <devices>
    <panic model='hyperv'/>
    <panic><address type='isa' iobase='0x506'/></panic>
  </devices>
  <qemu:commandline xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><qemu:arg value='-qmp'/><qemu:arg value='unix:${probe},server=on,wait=off'/></qemu:commandline>
</domain>`);
    expect(dom.getDefinition().panics).toEqual([{ model: 'hyperv' }, { model: 'isa', iobase: 0x506 }]);
    await dom.start({ paused: true });
    const qmp = await QmpClient.connect(probe, { timeoutMs: 10_000 });
    closers.push(() => qmp.close());
    const anon = (await qmp.execute('qom-list', { path: '/machine/peripheral-anon' })) as Array<{
      name: string;
      type: string;
    }>;
    const devices = anon.filter((c) => c.type === 'child<pvpanic>');
    expect(devices).toHaveLength(1);
    const path = `/machine/peripheral-anon/${devices[0]?.name}`;
    expect(await qmp.execute('qom-get', { path, property: 'ioport' })).toBe(0x506);
    const cpus = (await qmp.execute('query-cpus-fast')) as Array<{ 'qom-path': string }>;
    const cpu = cpus[0]?.['qom-path'] as string;
    expect(await qmp.execute('qom-get', { path: cpu, property: 'hv-crash' })).toBe(true);
    const xml = dom.toXML();
    expect(xml).toContain('<on_crash>coredump-restart</on_crash>');
    expect(resolveDomainXml(xml)).toEqual(dom.getDefinition());
  });

  it('refuses what libvirt refuses or QEMU 7.2 cannot do here, with typed errors', async () => {
    const doc = (inner: string, crash = 'destroy') =>
      `<domain type='qemu'><name>bad</name><memory unit='MiB'>64</memory><os><type>hvm</type></os><on_crash>${crash}</on_crash><devices>${inner}</devices></domain>`;
    await expect(conn.defineDomain(doc('', 'rename-restart'))).rejects.toMatchObject({
      code: 'CONFIG_UNSUPPORTED',
      details: { path: '/domain/on_crash' },
    });
    await expect(conn.defineDomain(doc("<panic model='pvpanic'/>"))).rejects.toMatchObject({
      code: 'CONFIG_UNSUPPORTED',
    });
    await expect(conn.defineDomain(doc("<panic model='isa'/><panic model='isa'/>"))).rejects.toMatchObject({
      code: 'XML_ERROR',
    });
    await expect(
      conn.defineDomain(doc("<panic model='hyperv'><address type='isa' iobase='0x505'/></panic>")),
    ).rejects.toMatchObject({ code: 'XML_ERROR' });
    expect(await conn.listDomains({ state: 'all' })).toHaveLength(0);
  });
});

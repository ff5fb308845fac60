import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { QmpClient } from '../../src/drivers/qemu/qmp/client.js';
import type { Connection } from '../../src/stable/index.js';
import { ensureGuestImage, GUEST_MARKER } from '../fixtures/guest-image.js';
import { openRoot, removeRoot, tempRoot } from '../helpers/env.js';

/*
 * Platform elements on real QEMU (TCG): a guest defined from XML with UEFI firmware (Debian's
 * ovmf, picked from QEMU's firmware descriptors) boots the test kernel to its console line, with
 * its own NVRAM copied into the root; the SMBIOS, power-management, clock and feature settings of
 * the document are what the running QEMU reports.
 */

const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd';
let root: string;
let conn: Connection;

beforeEach(async () => {
  // Loud, never skipped: the EFI test needs Debian's ovmf package (scripts/setup.sh installs it).
  if (!existsSync(OVMF_CODE)) throw new Error(`${OVMF_CODE} is missing: apt-get install -y ovmf`);
  root = tempRoot();
  conn = await openRoot(root);
});
afterEach(async () => {
  for (const dom of await conn.listDomains({ state: 'active' })) await dom.destroy({ graceMs: 1000 });
  await conn.close();
  removeRoot(root);
});

async function waitForConsole(name: string, text: string, timeoutMs = 120_000): Promise<string> {
  const path = join(root, 'log', `${name}.console.log`);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let content = '';
    try {
      content = readFileSync(path, 'utf8');
    } catch {}
    if (content.includes(text)) return content;
    if (Date.now() > deadline)
      throw new Error(`console never showed ${text}; it has: ${content.slice(-800)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const uuid = '5c1ad1e2-0000-4000-8000-0000000000e1';
function efiDoc(name: string, mode: 'hello' | 'wait', probe?: string): string {
  const image = ensureGuestImage();
  const extra = probe
    ? `<qemu:commandline><qemu:arg value='-qmp'/><qemu:arg value='unix:${probe},server=on,wait=off'/></qemu:commandline>`
    : '';
  return `<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>${name}</name>
  <uuid>${uuid}</uuid>
  <metadata><app:info xmlns:app='urn:virtkit-test'>efi</app:info></metadata>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <sysinfo type='smbios'><system><entry name='manufacturer'>virtkit-test</entry><entry name='serial'>SN-42</entry></system></sysinfo>
  <os firmware='efi'>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>${image.kernel}</kernel>
    <initrd>${image.initrd}</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet virtkit.mode=${mode}</cmdline>
    <smbios mode='sysinfo'/>
  </os>
  <features><acpi/><apic/><smm state='on'/><vmport state='off'/></features>
  <clock offset='utc'><timer name='rtc' tickpolicy='catchup'/><timer name='pit' tickpolicy='delay'/><timer name='hpet' present='no'/></clock>
  <pm><suspend-to-mem enabled='no'/><suspend-to-disk enabled='no'/></pm>
  <devices><serial type='file'/></devices>
  ${extra}
</domain>`;
}

describe('UEFI and platform settings on real QEMU', () => {
  it('boots the test kernel through OVMF to its console line, with a per-domain NVRAM', async () => {
    const dom = await conn.defineDomain(efiDoc('efi', 'hello'));
    await dom.start();
    const console = await waitForConsole('efi', GUEST_MARKER);
    expect(console).toContain(GUEST_MARKER);
    // The variable store was copied from the descriptor's template into the root.
    const vars = join(root, 'lib', 'nvram', 'efi_VARS.fd');
    expect(readFileSync(vars).length).toBe(readFileSync('/usr/share/OVMF/OVMF_VARS_4M.fd').length);
    expect(dom.toXML()).toContain("<os firmware='efi'>");
    expect(dom.toXML()).toContain(
      "<metadata><app:info xmlns:app='urn:virtkit-test'>efi</app:info></metadata>",
    );
  }, 180_000);

  it('QEMU holds the firmware and NVRAM, and has the SMBIOS, pm, clock and machine settings of the document', async () => {
    const probe = join(root, 'probe.qmp');
    const dom = await conn.defineDomain(efiDoc('efip', 'wait', probe));
    await dom.start({ paused: true });
    const { pid } = await dom.getInfo();
    expect(pid).toBeGreaterThan(0);
    const open = readdirSync(`/proc/${pid}/fd`).map((fd) => {
      try {
        return readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        return '';
      }
    });
    expect(open).toContain(OVMF_CODE);
    expect(open).toContain(join(root, 'lib', 'nvram', 'efip_VARS.fd'));
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    expect(cmdline).toContain('type=1,manufacturer=virtkit-test,serial=SN-42');
    expect(cmdline).toContain('ICH9-LPC.disable_s3=1');
    expect(cmdline).toContain('base=utc,driftfix=slew');
    const qmp = await QmpClient.connect(probe, { timeoutMs: 10_000 });
    try {
      const get = (path: string, property: string) => qmp.execute('qom-get', { path, property });
      expect(await get('/machine', 'smm')).toBe('on');
      expect(await get('/machine', 'vmport')).toBe('off');
      expect(await get('/machine', 'hpet')).toBe(false);
      expect(await get('/machine', 'pflash0')).toBe('libvirt-pflash0-format');
      expect(await get('/machine', 'pflash1')).toBe('libvirt-pflash1-format');
    } finally {
      qmp.close();
    }
    await dom.destroy();
  }, 120_000);
});

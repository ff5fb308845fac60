import { ErrorCode, VirtError } from '../../../errors.js';
import type { ControllerDefinition, DomainDefinition } from '../../../stable/definition/schema.js';
import type { MachineFamily } from './machine.js';
import { checkVirtioModel } from './virtio.js';

/*
 * Controllers as libvirt adds them at define time: the PCI root (pci-root on i440FX, pcie-root on
 * Q35), a SATA controller (built into Q35 at 00:1f.2; an ich9-ahci on i440FX when a disk needs one),
 * USB controller 0, and the virtio-serial controller channels need. virtkit's USB controller is `model='none'` unless the definition names
 * another: guests have had no USB so far, and a domain's hardware does not change behind it.
 * PCIe root ports are added by the address assignment, one per device that needs one.
 */

const unsupported = (path: string, message: string): VirtError =>
  new VirtError(ErrorCode.CONFIG_UNSUPPORTED, `${path}: ${message}`, { path });

/** The QEMU id (and libvirt alias) of a controller that QEMU names itself. */
export function fixedControllerAlias(c: ControllerDefinition, family: MachineFamily): string | undefined {
  if (c.type === 'pci' && c.model !== 'pcie-root-port') return family === 'q35' ? 'pcie.0' : 'pci.0';
  if (c.type === 'sata' && family === 'q35') return 'ide';
  if (c.type === 'ide') return 'ide';
  return undefined;
}

/** The alias libvirt gives a controller. */
export function controllerAlias(c: ControllerDefinition, family: MachineFamily): string {
  const fixed = fixedControllerAlias(c, family);
  if (fixed) return fixed;
  const index = c.index ?? 0;
  if (c.type === 'pci') return `pci.${index}`;
  if (c.type === 'sata') return `sata${index}`;
  if (c.type === 'virtio-serial') return `virtio-serial${index}`;
  return index === 0 ? 'usb' : `usb${index}`;
}

const ORDER = { usb: 0, sata: 1, pci: 2, 'virtio-serial': 3, ide: 4 } as const;

/**
 * The definition's controllers (copies, in their order) with the implicit ones added after them and
 * every index filled in. Root ports without an index get the next free ones.
 *
 * @throws VirtError `CONFIG_UNSUPPORTED` for a controller the machine type cannot have
 */
export function completeControllers(def: DomainDefinition, family: MachineFamily): ControllerDefinition[] {
  const list = def.controllers.map((c) => ({ ...c }));
  const path = (c: ControllerDefinition) => `controllers.${list.indexOf(c)}`;
  const rootModel = family === 'q35' ? 'pcie-root' : 'pci-root';
  const roots = list.filter((c) => c.type === 'pci' && c.model !== 'pcie-root-port');
  for (const c of list) {
    const at = `controllers.${list.indexOf(c)}`;
    if (c.type === 'pci' && c.model !== 'pcie-root-port') {
      if (c.model !== rootModel)
        throw unsupported(`${at}.model`, `a ${c.model} on a ${family} machine (it has a ${rootModel})`);
      if (c.index !== undefined && c.index !== 0)
        throw unsupported(`${at}.index`, 'a PCI root other than index 0');
      if (c.address) throw unsupported(`${at}.address`, 'an address for the PCI root');
    }
    if (c.type === 'pci' && c.model === 'pcie-root-port' && family !== 'q35')
      throw unsupported(`${at}.model`, 'a pcie-root-port on an i440fx machine (use q35)');
    if (c.type === 'pci' && c.model === 'pcie-root-port' && c.index === 0)
      throw unsupported(`${at}.index`, 'index 0 for a pcie-root-port (index 0 is the PCI root)');
    if (c.type !== 'pci' && (c.index ?? 0) !== 0)
      throw unsupported(`${at}.index`, `a second ${c.type} controller (virtkit supports index 0)`);
    if (c.type === 'usb' && c.model === 'piix3-uhci' && family === 'q35')
      throw unsupported(`${at}.model`, 'a piix3-uhci USB controller on a q35 machine (use qemu-xhci)');
    if (c.type === 'usb' && c.ports !== undefined && c.model !== 'qemu-xhci')
      throw unsupported(
        `${at}.ports`,
        `a port count for a ${c.model} USB controller (only qemu-xhci has one)`,
      );
    if (c.type === 'virtio-serial') checkVirtioModel(c.model, family, `${at}.model`);
    if (c.type === 'ide' && family === 'q35')
      throw unsupported(`${at}.type`, 'an IDE controller on a q35 machine (it has SATA: use bus sata)');
  }
  if (roots.length > 1) throw unsupported(path(roots[1] as ControllerDefinition), 'a second PCI root');
  for (const type of ['sata', 'usb', 'virtio-serial', 'ide'] as const) {
    const all = list.filter((c) => c.type === type);
    if (all.length > 1)
      throw unsupported(path(all[1] as ControllerDefinition), `a second ${type} controller`);
  }
  if (roots.length === 0) list.push({ type: 'pci', index: 0, model: rootModel });
  const needsSata = family === 'q35' || def.disks.some((d) => d.target.bus === 'sata');
  if (needsSata && !list.some((c) => c.type === 'sata')) list.push({ type: 'sata', index: 0 });
  if (!list.some((c) => c.type === 'usb')) list.push({ type: 'usb', index: 0, model: 'none' });
  const ideDisk = def.disks.findIndex((d) => d.target.bus === 'ide');
  if (ideDisk >= 0 && family === 'q35')
    throw unsupported(`disks.${ideDisk}.target.bus`, 'an IDE disk on a q35 machine (use bus sata)');
  if (ideDisk >= 0 && !list.some((c) => c.type === 'ide')) list.push({ type: 'ide', index: 0 });
  // The guest-agent channel and its kind sit on a virtio-serial controller.
  if ((def.channels ?? []).length > 0 && !list.some((c) => c.type === 'virtio-serial'))
    list.push({ type: 'virtio-serial', index: 0 });

  const taken = new Set<number>();
  for (const c of list) {
    if (c.type !== 'pci') {
      c.index = 0;
      continue;
    }
    if (c.model !== 'pcie-root-port') c.index = 0;
    if (c.index === undefined) continue;
    if (taken.has(c.index))
      throw unsupported(`${path(c)}.index`, `a second PCI controller with index ${c.index}`);
    taken.add(c.index);
  }
  let next = 1;
  for (const c of list) {
    if (c.index !== undefined) continue;
    while (taken.has(next)) next++;
    c.index = next;
    taken.add(next);
  }
  return list;
}

/** Controllers in libvirt's `dumpxml` order: by type, then index. */
export function sortControllers(list: ControllerDefinition[]): ControllerDefinition[] {
  return list.sort((a, b) => ORDER[a.type] - ORDER[b.type] || (a.index ?? 0) - (b.index ?? 0));
}

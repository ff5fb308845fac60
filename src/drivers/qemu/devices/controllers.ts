import { ErrorCode, VirtError } from '../../../errors.js';
import { isPciRoot } from '../../../stable/definition/pci-controllers.js';
import type { ControllerDefinition, DomainDefinition } from '../../../stable/definition/schema.js';
import { defaultDriveAddress } from '../../device-aliases.js';
import type { MachineFamily } from './machine.js';
import { checkVirtioModel } from './virtio.js';

/*
 * Controllers as libvirt adds them at define time: the PCI root (pci-root on i440FX, pcie-root on
 * Q35), a SATA controller (built into Q35 at 00:1f.2; an ich9-ahci on i440FX when a disk needs one),
 * USB controller 0, and the virtio-serial controller channels need. virtkit's USB controller is `model='none'` unless the definition names
 * another or a USB disk or input needs one: guests have had no USB so far, and a domain's hardware
 * does not change behind it. A
 * `<controller type='usb'>` without a model gets libvirt's default for the machine.
 * PCIe root ports are added by the address assignment, one per device that needs one.
 */

const unsupported = (path: string, message: string): VirtError =>
  new VirtError(ErrorCode.CONFIG_UNSUPPORTED, `${path}: ${message}`, { path });
const invalid = (path: string, message: string): VirtError =>
  new VirtError(ErrorCode.XML_ERROR, `invalid domain definition: ${path}: ${message}`, { path });

/** The QEMU id (and libvirt alias) of a controller that QEMU names itself. */
export function fixedControllerAlias(c: ControllerDefinition, family: MachineFamily): string | undefined {
  if (c.type === 'pci' && isPciRoot(c.model)) return family === 'q35' ? 'pcie.0' : 'pci.0';
  if (c.type === 'sata' && family === 'q35' && (c.index ?? 0) === 0) return 'ide';
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
  if (c.type === 'scsi') return `scsi${index}`;
  if (c.type === 'virtio-serial') return `virtio-serial${index}`;
  if (c.type === 'fdc') return 'fdc0';
  return index === 0 ? 'usb' : `usb${index}`;
}

const ORDER = { usb: 0, sata: 1, scsi: 2, pci: 3, 'virtio-serial': 4, ide: 5, fdc: 6 } as const;

type UsbController = Extract<ControllerDefinition, { type: 'usb' }>;

/** The ICH9 UHCI companions of an EHCI master, and the function each has in the set's slot. */
export const ICH9_FUNCTION = { 'ich9-ehci1': 7, 'ich9-uhci1': 0, 'ich9-uhci2': 1, 'ich9-uhci3': 2 } as const;

/** Whether `c` is a UHCI companion of an ICH9 EHCI controller (it has no QEMU id of its own). */
export function isUsbCompanion(c: ControllerDefinition): c is UsbController {
  return c.type === 'usb' && c.model !== undefined && c.model.startsWith('ich9-uhci');
}

/**
 * One USB controller, or an ICH9 set: an `ich9-ehci1` and `ich9-uhci1`…`3` companions, each
 * with the first of its two ports on the EHCI's six (QEMU's `masterbus` and `firstport`).
 */
function checkUsbSet(list: ControllerDefinition[]): void {
  const usb = list.filter((c): c is UsbController => c.type === 'usb');
  const at = (c: ControllerDefinition) => `controllers.${list.indexOf(c)}`;
  const master = usb.find((c) => c.model === 'ich9-ehci1');
  const seen = new Set<string>();
  for (const c of usb) {
    const companion = c.model?.startsWith('ich9-uhci') === true;
    if (usb.length > 1 && !(master && (c === master || companion)))
      throw unsupported(
        at(c),
        'a second usb controller (virtkit supports one, or an ich9-ehci1 with its ich9-uhci companions)',
      );
    if (seen.has(c.model ?? '')) throw unsupported(`${at(c)}.model`, `a second ${c.model} USB controller`);
    seen.add(c.model ?? '');
    if (companion && !master)
      throw unsupported(
        `${at(c)}.model`,
        `an ${c.model} without its ich9-ehci1 master (virtkit supports the ICH9 UHCI only as a companion)`,
      );
    if (companion && c.master === undefined)
      throw unsupported(`${at(c)}.master`, `an ${c.model} companion without <master startport>`);
    if (!companion && c.master !== undefined)
      throw invalid(`${at(c)}.master`, `a ${c.model} USB controller is no companion: it takes no <master>`);
    if (companion && c.master && c.master.startport + 2 > 6)
      throw invalid(
        `${at(c)}.master.startport`,
        `startport ${c.master.startport}: the ich9-ehci1 has ports 0-5 and a companion takes two`,
      );
  }
}

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
  const roots = list.filter((c) => c.type === 'pci' && isPciRoot(c.model));
  for (const c of list) {
    const at = `controllers.${list.indexOf(c)}`;
    if (c.type === 'pci') checkPciController(def, c, family, at);
    if (c.type === 'pci' && isPciRoot(c.model)) {
      if (c.model !== rootModel)
        throw unsupported(`${at}.model`, `a ${c.model} on a ${family} machine (it has a ${rootModel})`);
      if (c.index !== undefined && c.index !== 0)
        throw unsupported(`${at}.index`, 'a PCI root other than index 0');
      if (c.address) throw unsupported(`${at}.address`, 'an address for the PCI root');
    }
    if (c.type === 'pci' && !isPciRoot(c.model) && c.index === 0)
      throw unsupported(`${at}.index`, `index 0 for a ${c.model} (index 0 is the PCI root)`);
    if (c.type !== 'pci' && c.type !== 'sata' && (c.index ?? 0) !== 0)
      throw unsupported(`${at}.index`, `a second ${c.type} controller (virtkit supports index 0)`);
    // libvirt's default model: USB 3 on Q35, the PIIX3's UHCI function on i440FX.
    if (c.type === 'usb' && c.model === undefined) c.model = family === 'q35' ? 'qemu-xhci' : 'piix3-uhci';
    if (c.type === 'usb' && c.model === 'piix3-uhci' && family === 'q35')
      throw unsupported(`${at}.model`, 'a piix3-uhci USB controller on a q35 machine (use qemu-xhci)');
    if (c.type === 'usb' && c.ports !== undefined && c.model !== 'qemu-xhci')
      throw unsupported(
        `${at}.ports`,
        `a port count for a ${c.model} USB controller (only qemu-xhci has one)`,
      );
    if (c.type === 'virtio-serial') checkVirtioModel(c.model, family, `${at}.model`);
    // libvirt's default SCSI controller on x86 is the LSI 53C895A, a conventional PCI card.
    if (c.type === 'scsi' && c.model === undefined) c.model = 'lsilogic';
    if (c.type === 'scsi' && c.model === 'lsilogic' && family === 'q35')
      throw unsupported(
        `${at}.model`,
        "an lsilogic SCSI controller on a q35 machine (virtkit adds no PCI bridge for it: use model='virtio-scsi')",
      );
    if (c.type === 'scsi' && c.model !== 'lsilogic' && c.model !== 'virtio-scsi')
      checkVirtioModel(c.model, family, `${at}.model`);
    if (c.type === 'pci' && c.pcihole64KiB !== undefined && !isPciRoot(c.model))
      throw invalid(
        `${at}.pcihole64KiB`,
        `a ${c.model} has no 64-bit PCI hole: only the root (pci-root, pcie-root)`,
      );
    if (
      c.type === 'pci' &&
      c.target?.hotplug !== undefined &&
      !['pci-root', 'pcie-root-port', 'pcie-switch-downstream-port'].includes(c.model)
    )
      throw invalid(`${at}.target.hotplug`, `hot-plug cannot be set on a ${c.model}`);
    if (c.type === 'fdc' && family === 'q35')
      throw unsupported(`${at}.type`, 'a floppy controller on a q35 machine (use pc)');
    if (c.type === 'ide' && family === 'q35')
      throw unsupported(`${at}.type`, 'an IDE controller on a q35 machine (it has SATA: use bus sata)');
  }
  if (roots.length > 1) throw unsupported(path(roots[1] as ControllerDefinition), 'a second PCI root');
  checkUsbSet(list);
  for (const type of ['scsi', 'virtio-serial', 'ide', 'fdc'] as const) {
    const all = list.filter((c) => c.type === type);
    if (all.length > 1)
      throw unsupported(path(all[1] as ControllerDefinition), `a second ${type} controller`);
  }
  const sataIndexes = new Set<number>();
  for (const c of list.filter((x) => x.type === 'sata')) {
    if (sataIndexes.has(c.index ?? 0))
      throw unsupported(`${path(c)}.index`, `a second sata controller with index ${c.index ?? 0}`);
    sataIndexes.add(c.index ?? 0);
  }
  if (roots.length === 0) list.push({ type: 'pci', index: 0, model: rootModel });
  // libvirt adds the SATA controllers the disks' drive addresses name (sdg… on controller 1).
  const needsSata = new Set<number>(family === 'q35' ? [0] : []);
  for (const d of def.disks) {
    if (d.target.bus !== 'sata') continue;
    needsSata.add((d.address?.type === 'drive' ? d.address : defaultDriveAddress(d)).controller);
  }
  for (const index of [...needsSata].sort((a, b) => a - b)) {
    if (!sataIndexes.has(index)) list.push({ type: 'sata', index });
  }
  // A USB disk or input needs a controller: libvirt's default one for the machine.
  const usbDevice =
    def.disks.some((d) => d.target.bus === 'usb') || (def.inputs ?? []).some((i) => i.bus === 'usb');
  const usbModel = usbDevice ? (family === 'q35' ? 'qemu-xhci' : 'piix3-uhci') : 'none';
  if (!list.some((c) => c.type === 'usb')) list.push({ type: 'usb', index: 0, model: usbModel });
  // A SCSI disk without a SCSI controller gets one, libvirt's default model for the machine.
  if (def.disks.some((d) => d.target.bus === 'scsi') && !list.some((c) => c.type === 'scsi')) {
    list.push({ type: 'scsi', index: 0, model: 'lsilogic' });
    if (family === 'q35') {
      const at = def.disks.findIndex((d) => d.target.bus === 'scsi');
      throw unsupported(
        `disks.${at}.target.bus`,
        "a scsi disk on a q35 machine without a SCSI controller (libvirt would add an lsilogic behind a PCI bridge: add <controller type='scsi' model='virtio-scsi'/>)",
      );
    }
  }
  // The floppy controller is the pc machine's ISA one; libvirt 9 builds no floppy for q35 here.
  const floppy = def.disks.findIndex((d) => d.target.bus === 'fdc');
  if (floppy >= 0 && family === 'q35')
    throw unsupported(
      `disks.${floppy}.target.bus`,
      'a floppy on a q35 machine (it has no floppy controller: use pc)',
    );
  const ideDisk = def.disks.findIndex((d) => d.target.bus === 'ide');
  if (ideDisk >= 0 && family === 'q35')
    throw unsupported(`disks.${ideDisk}.target.bus`, 'an IDE disk on a q35 machine (use bus sata)');
  if (ideDisk >= 0 && !list.some((c) => c.type === 'ide')) list.push({ type: 'ide', index: 0 });
  // The guest-agent channel, a virtio console and their kind sit on a virtio-serial controller.
  if (
    (def.channels ?? []).length + (def.consoles ?? []).length > 0 &&
    !list.some((c) => c.type === 'virtio-serial')
  )
    list.push({ type: 'virtio-serial', index: 0 });

  const taken = new Set<number>();
  for (const c of list) {
    if (c.type !== 'pci') {
      c.index = c.type === 'sata' ? (c.index ?? 0) : 0;
      continue;
    }
    if (isPciRoot(c.model)) c.index = 0;
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

/** The machine each PCI controller model belongs to (libvirt's rules), and its own target fields. */
function checkPciController(
  def: DomainDefinition,
  c: Extract<ControllerDefinition, { type: 'pci' }>,
  family: MachineFamily,
  at: string,
): void {
  const q35Only = [
    'pcie-root-port',
    'dmi-to-pci-bridge',
    'pcie-to-pci-bridge',
    'pcie-expander-bus',
    'pcie-switch-upstream-port',
    'pcie-switch-downstream-port',
  ];
  if (family !== 'q35' && q35Only.includes(c.model))
    throw unsupported(`${at}.model`, `a ${c.model} on an i440fx machine (PCI Express needs q35)`);
  if (family === 'q35' && c.model === 'pci-expander-bus')
    throw unsupported(`${at}.model`, 'a pci-expander-bus on a q35 machine (use pcie-expander-bus)');
  const t = c.target;
  if (!t) return;
  const ports = c.model === 'pcie-root-port' || c.model === 'pcie-switch-downstream-port';
  const expander = c.model === 'pci-expander-bus' || c.model === 'pcie-expander-bus';
  if ((t.chassis !== undefined || t.port !== undefined) && !ports)
    throw invalid(`${at}.target`, `a ${c.model} has no chassis or port (root and downstream ports have)`);
  if (t.chassisNr !== undefined && c.model !== 'pci-bridge')
    throw invalid(`${at}.target.chassisNr`, `a ${c.model} has no chassisNr (a pci-bridge has)`);
  if ((t.busNr !== undefined || t.node !== undefined) && !expander)
    throw invalid(`${at}.target`, `a ${c.model} has no busNr or node (expander buses have)`);
  const cells = def.cpu?.numa?.length ?? 0;
  if (t.node !== undefined && t.node >= cells)
    throw invalid(`${at}.target.node`, `NUMA node ${t.node}, but the guest has ${cells} NUMA cell(s)`);
}

/** Controllers in libvirt's `dumpxml` order: by type, then index; an ICH9 EHCI before its companions. */
export function sortControllers(list: ControllerDefinition[]): ControllerDefinition[] {
  const rank = (c: ControllerDefinition) =>
    c.type === 'usb' && c.model !== undefined && c.model in ICH9_FUNCTION
      ? c.model === 'ich9-ehci1'
        ? 0
        : 1 + ICH9_FUNCTION[c.model as keyof typeof ICH9_FUNCTION]
      : 0;
  return list.sort(
    (a, b) => ORDER[a.type] - ORDER[b.type] || (a.index ?? 0) - (b.index ?? 0) || rank(a) - rank(b),
  );
}

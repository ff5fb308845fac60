import { isPciRoot, PCI_CONTROLLER_DEVICE } from '../../../stable/definition/pci-controllers.js';
import type { ControllerDefinition, DomainDefinition } from '../../../stable/definition/schema.js';
import { pciPlacement } from './pci-bus.js';
import type { QapiObject } from './qapi.js';
import { virtioDevice } from './virtio.js';
import { virtioProps } from './virtio-options.js';

/**
 * The device of a controller (`-device` arguments), or undefined for one QEMU builds in: the PCI
 * root, Q35's SATA controller, the pc machine's IDE, a USB controller of model `none`. The virtio-serial controller
 * carries the channels.
 */
export function controllerDevice(def: DomainDefinition, c: ControllerDefinition): QapiObject | undefined {
  const id = c.alias ?? '';
  if (c.type === 'pci') {
    if (isPciRoot(c.model)) return undefined;
    const driver = c.modelName ?? PCI_CONTROLLER_DEVICE[c.model as keyof typeof PCI_CONTROLLER_DEVICE];
    const hotplug: QapiObject = c.target?.hotplug === undefined ? {} : { hotplug: c.target.hotplug };
    const placement = pciPlacement(def, c.address, `controller ${id}`);
    // The properties of libvirt's qemuBuildControllerPCIDevProps, in its order.
    switch (c.model) {
      case 'pcie-root-port':
      case 'pcie-switch-downstream-port':
        return {
          driver,
          port: c.target?.port ?? 0,
          chassis: c.target?.chassis ?? c.index ?? 0,
          ...hotplug,
          id,
          ...placement,
        };
      case 'pci-bridge':
        return { driver, chassis_nr: c.target?.chassisNr ?? c.index ?? 0, id, ...placement };
      case 'pci-expander-bus':
      case 'pcie-expander-bus':
        return {
          driver,
          bus_nr: c.target?.busNr ?? 0,
          ...(c.target?.node !== undefined ? { numa_node: c.target.node } : {}),
          id,
          ...placement,
        };
      default:
        return { driver, id, ...placement };
    }
  }
  if (c.type === 'sata') {
    if (id === 'ide') return undefined;
    return { driver: 'ich9-ahci', id, ...pciPlacement(def, c.address, `controller ${id}`) };
  }
  // The PIIX3's IDE function and the ISA floppy controller are part of the pc machine.
  if (c.type === 'ide' || c.type === 'fdc') return undefined;
  if (c.type === 'virtio-serial') {
    return {
      driver: virtioDevice('virtio-serial-pci', c.model),
      id,
      ...(c.ports !== undefined ? { max_ports: c.ports } : {}),
      ...(c.vectors !== undefined ? { vectors: c.vectors } : {}),
      ...pciPlacement(def, c.address, `controller ${id}`),
      ...virtioProps(c.virtio),
    };
  }
  if (c.type === 'scsi') {
    return {
      driver:
        c.model === 'lsilogic'
          ? 'lsi'
          : virtioDevice('virtio-scsi-pci', c.model === 'virtio-scsi' ? undefined : c.model),
      id,
      ...pciPlacement(def, c.address, `controller ${id}`),
      // libvirt's qemuBuildControllerSCSIDevProps.
      ...(c.driver?.queues !== undefined ? { num_queues: c.driver.queues } : {}),
      ...(c.driver?.cmdPerLun !== undefined ? { cmd_per_lun: c.driver.cmdPerLun } : {}),
      ...(c.driver?.maxSectors !== undefined ? { max_sectors: c.driver.maxSectors } : {}),
      ...(c.driver?.ioeventfd !== undefined ? { ioeventfd: c.driver.ioeventfd } : {}),
      ...(c.driver?.iothread !== undefined ? { iothread: `iothread${c.driver.iothread}` } : {}),
      ...virtioProps(c.virtio),
    };
  }
  if (c.model === 'none') return undefined;
  if (c.model === 'ich9-ehci1')
    return { driver: 'ich9-usb-ehci1', id, ...pciPlacement(def, c.address, `controller ${id}`) };
  if (c.model?.startsWith('ich9-uhci')) {
    // A companion has no id of its own (it shares its master's alias): its ports are the master's.
    return {
      driver: c.model.replace('ich9-', 'ich9-usb-'),
      masterbus: `${id}.0`,
      firstport: c.master?.startport ?? 0,
      ...pciPlacement(def, c.address, `controller ${id} (${c.model})`),
    };
  }
  return {
    driver: c.model === 'qemu-xhci' ? 'qemu-xhci' : 'piix3-usb-uhci',
    id,
    // libvirt gives both the USB 2 and the USB 3 side the port count.
    ...(c.ports !== undefined ? { p2: c.ports, p3: c.ports } : {}),
    ...pciPlacement(def, c.address, `controller ${id}`),
  };
}

/**
 * The `-global`s of the PCI root, as libvirt's qemuBuildGlobalControllerCommandLine and
 * qemuBuildPMCommandLine: the 64-bit PCI hole size, and ACPI hot-plug into a pc machine's root bus.
 */
export function pciRootGlobals(def: DomainDefinition): string[] {
  const root = def.controllers.find(
    (c): c is Extract<ControllerDefinition, { type: 'pci' }> => c.type === 'pci' && isPciRoot(c.model),
  );
  if (!root) return [];
  const args: string[] = [];
  const host = root.model === 'pcie-root' ? 'q35-pcihost' : 'i440FX-pcihost';
  if (root.pcihole64KiB !== undefined) args.push('-global', `${host}.pci-hole64-size=${root.pcihole64KiB}K`);
  if (root.model === 'pci-root' && root.target?.hotplug !== undefined)
    args.push('-global', `PIIX4_PM.acpi-root-pci-hotplug=${root.target.hotplug ? 'on' : 'off'}`);
  return args;
}

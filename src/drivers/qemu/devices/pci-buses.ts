import type { PciControllerModel } from '../../../stable/definition/pci-controllers.js';
import type { MachineFamily } from './machine.js';

/*
 * What each PCI bus takes, as libvirt's virDomainPCIAddressBusSetModel says it:
 * - `root`: the machine's root bus (slots 1-31 less the chipset's);
 * - `port`: behind a root or downstream port: slot 0 only, one PCIe device or an upstream port;
 * - `pci`: a conventional PCI bus (dmi-to-pci-bridge, pxb), slots 0-31;
 * - `pci-hotplug`: a hot-pluggable conventional PCI bus (pci-bridge, pcie-to-pci-bridge), slots 1-31;
 * - `ports`: a pxb-pcie's bus, slots 0-31 for root ports only;
 * - `upstream`: a switch's upstream port, slots 0-31 for downstream ports only.
 */

/** The kind of a PCI bus. */
export type BusKind = 'root' | 'port' | 'pci' | 'pci-hotplug' | 'ports' | 'upstream';

/** The bus a PCI controller model makes. */
export function busKindOf(model: PciControllerModel): BusKind {
  switch (model) {
    case 'pci-root':
    case 'pcie-root':
      return 'root';
    case 'pcie-root-port':
    case 'pcie-switch-downstream-port':
      return 'port';
    case 'pci-bridge':
    case 'pcie-to-pci-bridge':
      return 'pci-hotplug';
    case 'dmi-to-pci-bridge':
    case 'pci-expander-bus':
      return 'pci';
    case 'pcie-expander-bus':
      return 'ports';
    case 'pcie-switch-upstream-port':
      return 'upstream';
  }
}

/** Where a device of that kind may sit. */
const ENDPOINT: readonly BusKind[] = ['root', 'port', 'pci', 'pci-hotplug'];

/** The buses a PCI controller of `model` may sit on (an endpoint device: `undefined`). */
export function parentKinds(
  model: PciControllerModel | undefined,
  family: MachineFamily,
): readonly BusKind[] {
  switch (model) {
    case undefined:
      return ENDPOINT;
    case 'pcie-root-port':
      return ['root', 'ports'];
    case 'pcie-switch-downstream-port':
      return ['upstream'];
    case 'pcie-switch-upstream-port':
      return ['port'];
    case 'pcie-to-pci-bridge':
      return ['root', 'port'];
    case 'pci-bridge':
      return family === 'q35' ? ['pci', 'pci-hotplug'] : ['root', 'pci', 'pci-hotplug'];
    default:
      // dmi-to-pci-bridge, pci-expander-bus, pcie-expander-bus: on the root bus.
      return ['root'];
  }
}

/** The slots of a bus of that kind that devices may use. */
export function slotRange(kind: BusKind): { min: number; max: number } {
  if (kind === 'port') return { min: 0, max: 0 };
  if (kind === 'pci-hotplug' || kind === 'root') return { min: 1, max: 31 };
  return { min: 0, max: 31 };
}

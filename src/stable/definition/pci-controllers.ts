/*
 * libvirt's PCI controller models and the QEMU device each is (its `<model name>`), as
 * qemuBuildControllerPCIDevProps builds them. The roots are built into the machine.
 */

/** The PCI controller models virtkit supports. */
export const PCI_CONTROLLER_MODELS = [
  'pci-root',
  'pcie-root',
  'pcie-root-port',
  'pci-bridge',
  'dmi-to-pci-bridge',
  'pcie-to-pci-bridge',
  'pci-expander-bus',
  'pcie-expander-bus',
  'pcie-switch-upstream-port',
  'pcie-switch-downstream-port',
] as const;

/** A PCI controller model. */
export type PciControllerModel = (typeof PCI_CONTROLLER_MODELS)[number];

/** The QEMU device of each model that is not a root (libvirt's `<model name>`). @internal */
export const PCI_CONTROLLER_DEVICE: Readonly<
  Record<Exclude<PciControllerModel, 'pci-root' | 'pcie-root'>, string>
> = {
  'pcie-root-port': 'pcie-root-port',
  'pci-bridge': 'pci-bridge',
  'dmi-to-pci-bridge': 'i82801b11-bridge',
  'pcie-to-pci-bridge': 'pcie-pci-bridge',
  'pci-expander-bus': 'pxb',
  'pcie-expander-bus': 'pxb-pcie',
  'pcie-switch-upstream-port': 'x3130-upstream',
  'pcie-switch-downstream-port': 'xio3130-downstream',
};

/** Whether a model is the machine's PCI root. @internal */
export function isPciRoot(model: PciControllerModel): boolean {
  return model === 'pci-root' || model === 'pcie-root';
}

import { ErrorCode, VirtError } from '../../../errors.js';
import type { MachineFamily } from './machine.js';

/** A virtio model as libvirt names it: plain, transitional (legacy and modern) or modern only. */
export type VirtioModel = 'virtio' | 'virtio-transitional' | 'virtio-non-transitional';

/** QEMU's device for a virtio model: `virtio-blk-pci`, `virtio-blk-pci-non-transitional`, … */
export function virtioDevice(base: string, model: VirtioModel | undefined): string {
  return model === undefined || model === 'virtio' ? base : `${base}${model.slice('virtio'.length)}`;
}

/**
 * Refuses a transitional device on Q35: it is conventional PCI, which libvirt puts behind a
 * pcie-to-pci-bridge; virtkit builds one for the e1000 and its kind, not yet for virtio devices.
 */
export function checkVirtioModel(model: string | undefined, family: MachineFamily, path: string): void {
  if (model === 'virtio-transitional' && family === 'q35') {
    throw new VirtError(
      ErrorCode.CONFIG_UNSUPPORTED,
      `${path}: a virtio-transitional device on a q35 machine (it needs a PCI bridge virtkit does not add; use virtio-non-transitional)`,
      { path },
    );
  }
}

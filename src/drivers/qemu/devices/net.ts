import { ErrorCode, VirtError } from '../../../errors.js';
import type { DomainDefinition, InterfaceDefinition } from '../../../stable/definition/schema.js';
import { nicBootIndex } from './boot-order.js';
import { pciPlacement } from './pci-bus.js';
import type { QapiObject } from './qapi.js';
import { type VirtioModel, virtioDevice } from './virtio.js';
import { virtioProps } from './virtio-options.js';

function aliasOf(nic: InterfaceDefinition): string {
  if (nic.alias === undefined) throw new VirtError(ErrorCode.INTERNAL_ERROR, 'an interface has no alias');
  return nic.alias;
}

/** The netdev id of an interface: libvirt's `host<alias>`. */
export function netdevId(nic: InterfaceDefinition): string {
  return `host${aliasOf(nic)}`;
}

/**
 * The backend of an interface (`netdev_add` arguments). `fds` are the TAP descriptors as QEMU
 * knows them: numbers inherited on the command line, or names given with `getfd`.
 */
export function netdevOf(
  nic: InterfaceDefinition,
  fds: readonly (number | string)[] | undefined,
): QapiObject {
  if (nic.type === 'user') return { type: 'user', id: netdevId(nic) };
  if (!fds?.length)
    throw new VirtError(ErrorCode.INTERNAL_ERROR, `no TAP descriptor for interface ${aliasOf(nic)}`);
  return fds.length === 1
    ? { type: 'tap', id: netdevId(nic), fd: String(fds[0]) }
    : { type: 'tap', id: netdevId(nic), fds: fds.map(String).join(':') };
}

/** The guest-visible NIC (`device_add` arguments). */
export function nicDevice(def: DomainDefinition, nic: InterfaceDefinition): QapiObject {
  const alias = aliasOf(nic);
  const queues = nic.type === 'ethernet' ? (nic.queues ?? 1) : 1;
  const virtio = nic.model.startsWith('virtio');
  const rom = nic.rom;
  const bootindex = nicBootIndex(def, nic);
  return {
    driver: virtio ? virtioDevice('virtio-net-pci', nic.model as VirtioModel) : nic.model,
    ...pciPlacement(def, nic.address, `interface ${alias}`),
    netdev: netdevId(nic),
    id: alias,
    ...(nic.mac ? { mac: nic.mac } : {}),
    ...(bootindex !== undefined ? { bootindex } : {}),
    ...(virtio && queues > 1 ? { mq: true, vectors: 2 * queues + 2 } : {}),
    // As libvirt: a disabled ROM is an empty romfile; the BAR switch is rombar.
    ...(rom?.bar !== undefined ? { rombar: rom.bar ? 1 : 0 } : {}),
    ...(rom?.enabled === false ? { romfile: '' } : rom?.file !== undefined ? { romfile: rom.file } : {}),
    ...(virtio ? virtioProps(nic.virtio) : {}),
  };
}

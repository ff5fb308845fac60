import type { DomainDefinition, PciAddress } from '../../../stable/definition/schema.js';
import type { QapiObject } from './qapi.js';
import { virtioDevice } from './virtio.js';

/*
 * A `<filesystem>` as libvirt's qemuBuildFSStr and qemuBuildFSDevCmd write it: `-fsdev local`
 * with the security model, multidevs, file and directory modes, the write policy, the id
 * `fsdev-<alias>`, the path and read-only, then a virtio-9p-pci device with the mount tag.
 */

type Filesystem = NonNullable<DomainDefinition['filesystems']>[number];

const esc = (value: string): string => value.replaceAll(',', ',,');

/** libvirt's alias of the `index`th filesystem. */
export const filesystemAlias = (fs: Filesystem, index: number): string => fs.alias ?? `fs${index}`;

/** The `-fsdev` option of a filesystem. */
export function fsdevOption(fs: Filesystem, index: number): string {
  const model = { passthrough: 'passthrough', mapped: 'mapped', squash: 'none' }[fs.accessmode];
  const parts = ['local', `security_model=${model}`];
  if (fs.multidevs !== undefined && fs.multidevs !== 'default') parts.push(`multidevs=${fs.multidevs}`);
  if (fs.fmode !== undefined) parts.push(`fmode=${fs.fmode.toString(8).padStart(4, '0')}`);
  if (fs.dmode !== undefined) parts.push(`dmode=${fs.dmode.toString(8).padStart(4, '0')}`);
  if (fs.wrpolicy !== undefined) parts.push(`writeout=${fs.wrpolicy}`);
  parts.push(`id=fsdev-${filesystemAlias(fs, index)}`, `path=${esc(fs.source)}`);
  if (fs.readonly) parts.push('readonly=on');
  return parts.join(',');
}

/** The virtio-9p-pci device of a filesystem, at the placement `place` gives its address. */
export function filesystemDevice(
  fs: Filesystem,
  index: number,
  place: (address: PciAddress | undefined, what: string) => Record<string, string>,
): QapiObject {
  const id = filesystemAlias(fs, index);
  return {
    driver: virtioDevice('virtio-9p-pci', fs.model),
    id,
    fsdev: `fsdev-${id}`,
    mount_tag: fs.target,
    ...place(fs.address, `filesystem ${id}`),
  };
}

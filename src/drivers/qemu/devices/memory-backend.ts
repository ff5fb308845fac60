import { join } from 'node:path';
import { ErrorCode, VirtError } from '../../../errors.js';
import type { DomainDefinition } from '../../../stable/definition/schema.js';
import { parseCpuset } from '../../../util/cpuset.js';

/*
 * The memory backend of guest RAM (`pc.ram` without NUMA cells, `ram-nodeN` per cell), as
 * libvirt's qemuBuildMemoryBackendProps chooses it from `<memoryBacking>`, the cell and
 * `<numatune>`:
 * - `source type='memfd'` → memory-backend-memfd (`hugetlb`, `hugetlbsize` with huge pages);
 * - huge pages, an access mode or `source type='file'` → memory-backend-file: `mem-path` the
 *   hugetlbfs mount of the page size, or for plain file-backed memory the root's `lib/ram/`
 *   (QEMU creates its file there and unlinks it at once, so nothing is left behind);
 *   `discard-data` from `<discard/>` (only a file backend has it: elsewhere libvirt ignores it too);
 * - otherwise memory-backend-ram.
 * `share` follows the access mode; `prealloc` comes with huge pages and `allocation
 * mode='immediate'`, `prealloc-threads` from its `threads`.
 */

/** Where guest RAM may come from on this host. */
export interface MemoryBackingHost {
  /** Mount points of hugetlbfs by page size in KiB. */
  readonly hugepageMounts?: Readonly<Record<number, string>>;
  /** The host's default huge page size in KiB (`<hugepages/>` without a `<page>`). */
  readonly defaultHugepageKiB?: number;
  /** The directory of file-backed memory (`source type='file'`). */
  readonly memoryBackingDir: string;
}

/** The system page size: a "huge" page of this size is no huge page (as libvirt). */
const SYSTEM_PAGE_KIB = 4;

/** The memory backing directory inside the root's `lib` (the QEMU home directory). */
export const memoryBackingDir = (lib: string): string => join(lib, 'ram');

/** The huge page size (KiB) of a guest NUMA cell (undefined: all memory), or undefined for none. */
export function hugepageKiB(def: DomainDefinition, cell: number | undefined): number | undefined {
  const backing = def.memoryBacking;
  if (!backing?.hugepages) return undefined;
  const pages = backing.pages ?? [];
  let size: number | undefined;
  if (pages.length === 0) size = 0;
  else {
    const own =
      cell === undefined
        ? undefined
        : pages.find((p) => p.nodeset !== undefined && (parseCpuset(p.nodeset) ?? []).includes(cell));
    size = (own ?? pages.find((p) => p.nodeset === undefined))?.sizeKiB;
  }
  if (size === SYSTEM_PAGE_KIB) return undefined;
  return size;
}

/** The host-nodes and policy of a cell's memory from `<numatune>`. */
export function numaBinding(
  def: DomainDefinition,
  cell: number | undefined,
): { 'host-nodes': number[]; policy: string } | undefined {
  const tune = def.numatune;
  const entry =
    (cell === undefined ? undefined : tune?.memnodes?.find((m) => m.cellid === cell)) ?? tune?.memory;
  if (!entry) return undefined;
  const nodes = parseCpuset(entry.nodeset) ?? [];
  return { 'host-nodes': nodes, policy: entry.mode === 'strict' ? 'bind' : entry.mode };
}

/**
 * The backend of `sizeKiB` of guest RAM with `id`, for guest NUMA cell `cell` (undefined: the
 * memory of a domain without cells). Without cells, undefined when nothing asks for a backend
 * (QEMU's own RAM then serves, as libvirt's `-m` alone).
 */
export function memoryBackend(
  def: DomainDefinition,
  host: MemoryBackingHost,
  id: string,
  sizeKiB: number,
  cell: number | undefined,
): Record<string, unknown> | undefined {
  const backing = def.memoryBacking;
  const cellDef = cell === undefined ? undefined : def.cpu?.numa?.[cell];
  const access = cellDef?.memAccess ?? backing?.access;
  const discard = cellDef?.discard ?? backing?.discard;
  const binding = numaBinding(def, cell);
  let pageKiB = hugepageKiB(def, cell);
  if (pageKiB === 0) pageKiB = host.defaultHugepageKiB ?? 2048;
  let prealloc = backing?.allocation?.mode === 'immediate';
  const props: Record<string, unknown> = { 'qom-type': 'memory-backend-ram', id };
  if (backing?.source === 'memfd') {
    props['qom-type'] = 'memory-backend-memfd';
    if (pageKiB !== undefined) {
      props.hugetlb = true;
      props.hugetlbsize = pageKiB * 1024;
      prealloc = true;
    }
  } else if (pageKiB !== undefined || access !== undefined || backing?.source === 'file') {
    props['qom-type'] = 'memory-backend-file';
    if (pageKiB !== undefined) {
      const mount = host.hugepageMounts?.[pageKiB];
      if (mount === undefined) {
        throw new VirtError(
          ErrorCode.CONFIG_UNSUPPORTED,
          `no hugetlbfs is mounted for ${pageKiB} KiB pages on this host: mount one (mount -t hugetlbfs -o pagesize=${pageKiB}K none DIR) and reserve pages, or change <hugepages>`,
          { path: 'memoryBacking.hugepages' },
        );
      }
      props['mem-path'] = mount;
      prealloc = true;
    } else {
      props['mem-path'] = host.memoryBackingDir;
    }
    if (discard) props['discard-data'] = true;
  }
  if (access !== undefined) props.share = access === 'shared';
  if (prealloc) props.prealloc = true;
  if (backing?.allocation?.threads !== undefined) props['prealloc-threads'] = backing.allocation.threads;
  props.size = sizeKiB * 1024;
  Object.assign(props, binding);
  const needed =
    cell !== undefined ||
    props['qom-type'] !== 'memory-backend-ram' ||
    binding !== undefined ||
    prealloc ||
    props['prealloc-threads'] !== undefined;
  return needed ? props : undefined;
}

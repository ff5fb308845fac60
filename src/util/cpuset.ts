/**
 * Parses a libvirt cpuset string ("0-3,^2,6") into the sorted list of ids it names.
 * Returns undefined for a malformed string, so callers can report the field that held it.
 */
export function parseCpuset(text: string, limit = 4096): number[] | undefined {
  const include = new Set<number>();
  const exclude = new Set<number>();
  for (const raw of text.split(',')) {
    const part = raw.trim();
    const m = /^(\^)?(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) return undefined;
    const lo = Number(m[2]);
    const hi = m[3] === undefined ? lo : Number(m[3]);
    if (hi < lo || hi >= limit) return undefined;
    for (let i = lo; i <= hi; i++) (m[1] ? exclude : include).add(i);
  }
  const ids = [...include].filter((i) => !exclude.has(i)).sort((a, b) => a - b);
  return ids.length > 0 ? ids : undefined;
}

/** Formats ids as the compact cpuset form the kernel's cpuset files accept ("0-2,5"). */
export function formatCpuset(ids: readonly number[]): string {
  const sorted = [...new Set(ids)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === (sorted[j] as number) + 1) j++;
    parts.push(i === j ? `${sorted[i]}` : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}

/**
 * The fdset id of a disk, derived from its alias (FNV-1a): the same alias always gives the same
 * set, whatever the disk's position, so a disk plugged after an unplug never reuses a set another
 * disk still holds, and a new driver finds a disk's set after a reconnect. Collisions between a
 * domain's aliases are checked where the sets are used.
 */
export function fdsetIdOf(alias: string): number {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(alias, 'utf8')) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  // Positive and below 2^30, so QEMU's int parsing on the command line and in QMP agree.
  return (hash & 0x3fffffff) + 1;
}

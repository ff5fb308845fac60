/*
 * What `<cputune>` asks of the threads' placement and scheduling, in the shape the handlers take.
 * One reading for both drivers, so the test driver's simulation asks exactly what QEMU's does.
 */
import type { OperationArgs } from '../privileged/operations.js';
import type { DomainDefinition } from '../stable/definition/schema.js';
import { parseCpuset } from '../util/cpuset.js';

type CpuTune = NonNullable<DomainDefinition['cputune']>;
type ThreadRef = { readonly tid: number; readonly index: number };

/** True when the domain's threads are placed in cgroups at start (and so a hot-plugged vCPU is too). */
export function placesThreads(def: DomainDefinition): boolean {
  const tune = def.cputune;
  return !!tune && (tune.vcpupin.length > 0 || !!tune.emulatorpin || tune.iothreadpin.length > 0);
}

/** The `cpusets` argument of `cgroup.placeThreads`. */
export function placementCpusets(tune: CpuTune): OperationArgs<'cgroup.placeThreads'>['cpusets'] {
  return {
    emulator: tune.emulatorpin?.cpuset,
    vcpus: tune.vcpupin.map((p) => ({ index: p.vcpu, cpuset: p.cpuset })),
    iothreads: tune.iothreadpin.map((p) => ({ index: p.iothread, cpuset: p.cpuset })),
  };
}

/** The `threads` argument of `thread.setScheduler` for the vCPU and I/O threads `vcpusched`/`iothreadsched` name. */
export function schedulingOf(
  tune: CpuTune,
  vcpus: readonly ThreadRef[],
  iothreads: readonly ThreadRef[] = [],
): OperationArgs<'thread.setScheduler'>['threads'] {
  const sched: OperationArgs<'thread.setScheduler'>['threads'] = [];
  for (const [entries, list, role] of [
    [tune.vcpusched, vcpus, 'vcpu'],
    [tune.iothreadsched, iothreads, 'iothread'],
  ] as const) {
    for (const entry of entries) {
      for (const index of parseCpuset(entry.ids) ?? []) {
        const t = list.find((x) => x.index === index);
        if (t)
          sched.push({ tid: t.tid, role, index, policy: entry.scheduler, priority: entry.priority ?? 0 });
      }
    }
  }
  return sched;
}

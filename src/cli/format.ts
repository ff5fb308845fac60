import type { DomainInfoJson, DomainSummaryJson } from '../stable/control/operations.js';
import type { DomainEvent, DomainState } from '../stable/events.js';
import type { JobInfo } from '../stable/jobs.js';

/*
 * Human output as virsh prints it, so that scripts written against virsh keep working: the same
 * tables, labels, state names and the blank line virsh leaves after most commands.
 */

/** virsh's name of a state. */
export function stateName(state: DomainState): string {
  switch (state) {
    case 'shutoff':
      return 'shut off';
    case 'shutdown':
      return 'in shutdown';
    default:
      return state;
  }
}

/** A table as virsh's vshTable draws it: a header, a rule, rows, a blank line. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    ` ${cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('   ')}`;
  const head = line(header);
  const rule = '-'.repeat(widths.reduce((a, w) => a + w + 3, 0));
  return `${head}\n${rule}\n${rows.map((r) => `${line(r)}\n`).join('')}\n`;
}

/** `virsh list`. */
export function listTable(domains: readonly DomainSummaryJson[]): string {
  return table(
    ['Id', 'Name', 'State'],
    domains.map((d) => [d.id === null ? '-' : String(d.id), d.name, stateName(d.state)]),
  );
}

/** `virsh dominfo`. */
export function dominfoText(info: DomainInfoJson): string {
  const rows: Array<[string, string]> = [
    ['Id:', info.id === null ? '-' : String(info.id)],
    ['Name:', info.name],
    ['UUID:', info.uuid],
    ['OS Type:', info.osType],
    ['State:', stateName(info.state)],
    ['CPU(s):', String(info.vcpus)],
  ];
  if (info.cpuTimeNs !== '0') rows.push(['CPU time:', `${(Number(info.cpuTimeNs) / 1e9).toFixed(1)}s`]);
  rows.push(
    ['Max memory:', `${info.maxMemoryKiB} KiB`],
    ['Used memory:', `${info.memoryKiB} KiB`],
    ['Persistent:', info.persistent ? 'yes' : 'no'],
    ['Autostart:', info.autostart ? 'enable' : 'disable'],
    ['Managed save:', 'no'],
    ['Security model:', 'none'],
    ['Security DOI:', '0'],
  );
  if (info.taints.length > 0) rows.push(['Taints:', info.taints.join(', ')]);
  return `${rows.map(([k, v]) => `${k.padEnd(15)} ${v}`).join('\n')}\n\n`;
}

/** `virsh domjobinfo`: virsh's labels, and virtkit's operation and phase. */
export function jobText(job: JobInfo): string {
  if (job.operation === 'none') return `${'Job type:'.padEnd(17)} None\n\n`;
  const rows: Array<[string, string]> = [
    ['Job type:', 'Unbounded'],
    ['Operation:', job.operation],
    ['Phase:', job.phase ?? '-'],
    ['Time elapsed:', `${job.elapsedMs} ms`],
  ];
  if (job.progress) {
    rows.push(['Progress:', `${job.progress.completed} of ${job.progress.total} ${job.progress.unit}`]);
  }
  if (job.aborting) rows.push(['Aborting:', 'yes']);
  return `${rows.map(([k, v]) => `${k.padEnd(17)} ${v}`).join('\n')}\n\n`;
}

/** One line of `virsh event`: a reset is virsh's `reboot` event, the rest `lifecycle` ones. */
export function eventLine(event: DomainEvent): string {
  if (event.type === 'rebooted') return `event 'reboot' for domain '${event.domain.name}'\n`;
  return `event 'lifecycle' for domain '${event.domain.name}': ${capitalise(event.type)} ${capitalise(event.reason)}\n`;
}

function capitalise(word: string): string {
  return word.charAt(0).toUpperCase() + word.slice(1);
}

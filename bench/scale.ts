/*
 * Many VMs at once: raw QEMU (the floor) and virtkit, each in a process of its own, alternating
 * round by round on the same machine, then virtkit's reconnect to many running domains and its
 * queries over many defined ones. Writes bench/results/scale.md and scale.json.
 *
 * Run: npm run bench:scale
 * Knobs (env): BENCH_SCALE_N (bursts: `32,128p`, a `p` starts that burst paused), BENCH_SCALE_ROUNDS (3),
 *              BENCH_SCALE_PAUSED (1: start every burst paused), BENCH_RECONNECT_N (100),
 *              BENCH_LIST_N (1000), BENCH_LIST_RUNNING (half of BENCH_LIST_N),
 *              BENCH_SCALE_PROF (a directory: CPU profiles of both sides' processes),
 *              BENCH_SCALE_ONLY (comma list of burst,reconnect,list), BENCH_ACCEL (kvm|tcg),
 *              BENCH_SCALE_LIBVIRT (0: no libvirt beside virtkit in the reconnect measure),
 *              BENCH_SCALE_BEFORE (another checkout of virtkit, with node_modules: its driver runs
 *              as a third side of every burst round, "virtkit (before)", for a before/after in one run),
 *              BENCH_SCALE_NAME (base name of the results in bench/results; default scale),
 *              BENCH_RAW_DESTROY_SIGNAL (SIGTERM: the floor ends QEMU as virtkit does, see raw.ts).
 * The machine is shared: the load average is recorded with every round, and ratios are taken
 * between the two sides of one round (they ran back to back). Each side also reports its main
 * thread's CPU time and its time spent runnable but waiting for a CPU during each burst
 * (/proc schedstat), which tells the driver's own work from the scheduler's share of a loop delay.
 */

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  type Accel,
  cleanupAll,
  machineDescription,
  markedProcesses,
  qemuVersion,
  summarize,
  tempDir,
} from './common.js';
import { probeKvm } from './kvm-probe.js';
import { LibvirtContender } from './libvirt.js';
import { ScaleHost, type ScaleResult } from './scale-common.js';

const ROUNDS = Number(process.env['BENCH_SCALE_ROUNDS'] ?? 3);
/** The bursts: how many domains, and whether they start paused (the issue's 128 are). */
const BURSTS = (process.env['BENCH_SCALE_N'] ?? '32,128p').split(',').map((item) => ({
  n: Number.parseInt(item, 10),
  paused: item.trim().endsWith('p') || process.env['BENCH_SCALE_PAUSED'] === '1',
}));
const RECONNECT_N = Number(process.env['BENCH_RECONNECT_N'] ?? 100);
const LIST_N = Number(process.env['BENCH_LIST_N'] ?? 1000);
const LIST_RUNNING = Number(process.env['BENCH_LIST_RUNNING'] ?? Math.floor(LIST_N / 2));
const ONLY = new Set((process.env['BENCH_SCALE_ONLY'] ?? 'burst,reconnect,list').split(','));
const RESULTS = join(import.meta.dirname, 'results');
const BEFORE = process.env['BENCH_SCALE_BEFORE'];
/** The results' base name in bench/results (a partial or before/after run need not replace scale.md). */
const NAME = process.env['BENCH_SCALE_NAME'] ?? 'scale';

const log = (msg: string) => process.stderr.write(`[bench:scale] ${msg}\n`);
const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
const f1 = (n: number | undefined) => (n === undefined || Number.isNaN(n) ? 'n/a' : n.toFixed(1));
const f2 = (n: number | undefined) => (n === undefined || Number.isNaN(n) ? 'n/a' : n.toFixed(2));
const med = (xs: number[]) => summarize(xs).median;

interface LvAdopt {
  openMs: number;
  resumeMs: number;
}

/**
 * libvirt's side of the reconnect: one python process starts `n` domains paused and ends without
 * clean-up; a second one opens the same root (timed by libvirt_bench.py) and resumes them all.
 */
async function libvirtAdopt(accel: Accel, root: string, n: number): Promise<LvAdopt> {
  const before = await LibvirtContender.launch(accel, { label: 'lv-rc', root });
  await before.startPaused(n);
  await before.leave();
  const after = await LibvirtContender.launch(accel, { label: 'lv-rc', root });
  try {
    const x = await after.adopt(n);
    return { openMs: after.openMs, resumeMs: x.resumeMs };
  } finally {
    await after.quit();
  }
}

interface Round {
  raw: ScaleResult;
  virtkit: ScaleResult;
  /** The other checkout's driver (BENCH_SCALE_BEFORE). */
  before?: ScaleResult;
  loadBefore: string;
  loadAfter: string;
}

async function main(): Promise<void> {
  const probe = await probeKvm();
  log(`accelerator: ${probe.accel} (${probe.why}); load ${loadavg()}`);
  const md: string[] = [];
  const json: Record<string, unknown> = {
    meta: {
      date: new Date().toISOString(),
      machine: machineDescription(),
      qemu: qemuVersion(),
      accel: probe.accel,
      bursts: BURSTS,
      rounds: ROUNDS,
    },
  };
  md.push(`# virtkit scale benchmark — ${new Date().toISOString()}`, '');
  md.push(`- machine: ${machineDescription()}`, `- ${qemuVersion()}; accelerator ${probe.accel}`);
  md.push(
    `- VM: 2 vCPUs, 64 MiB, firmware only; each side in a process of its own, alternating, ${ROUNDS} rounds (plus one unmeasured)`,
    '',
  );

  for (const { n: N, paused: PAUSED } of ONLY.has('burst') ? BURSTS : []) {
    const raw = await ScaleHost.raw(N, probe.accel);
    const vk = await ScaleHost.virtkit(N, probe.accel);
    const bf = BEFORE ? await ScaleHost.virtkit(N, probe.accel, BEFORE) : undefined;
    const hosts: Array<['raw' | 'virtkit' | 'before', ScaleHost]> = [
      ['raw', raw],
      ['virtkit', vk],
      ...(bf ? [['before', bf] as ['before', ScaleHost]] : []),
    ];
    // One unmeasured round each: page cache, QEMU's first exec, the JIT of both sides.
    for (const [, h] of hosts) await h.round(PAUSED);
    const rounds: Round[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const loadBefore = loadavg();
      // Each side goes first in turn.
      const order = hosts.map((_, i) => hosts[(i + r) % hosts.length] as (typeof hosts)[number]);
      const got: Partial<Record<'raw' | 'virtkit' | 'before', ScaleResult>> = {};
      for (const [k, h] of order) got[k] = await h.round(PAUSED);
      const rr = got.raw as ScaleResult;
      const vr = got.virtkit as ScaleResult;
      const br = got.before;
      rounds.push({ raw: rr, virtkit: vr, ...(br ? { before: br } : {}), loadBefore, loadAfter: loadavg() });
      log(
        `${N}${PAUSED ? ' paused' : ''} round ${r + 1}/${ROUNDS}: start raw ${f1(rr.startMs)} virtkit ${f1(vr.startMs)} ms (${f2(vr.startMs / rr.startMs)}×)` +
          `${br ? ` before ${f1(br.startMs)} ms (${f2(br.startMs / rr.startMs)}×)` : ''}, ` +
          `destroy raw ${f1(rr.destroyMs)} virtkit ${f1(vr.destroyMs)}${br ? ` before ${f1(br.destroyMs)}` : ''} ms; ` +
          `virtkit loop p99 ${f1(vr.startLoop?.p99)} max ${f1(vr.startLoop?.max)} ms${br ? ` (before ${f1(br.startLoop?.p99)} / ${f1(br.startLoop?.max)})` : ''}, raw ${f1(rr.startLoop?.p99)} / ${f1(rr.startLoop?.max)}; ` +
          `main thread CPU start/destroy raw ${f1(rr.startThread?.cpuMs)}/${f1(rr.destroyThread?.cpuMs)} virtkit ${f1(vr.startThread?.cpuMs)}/${f1(vr.destroyThread?.cpuMs)}${br ? ` before ${f1(br.startThread?.cpuMs)}/${f1(br.destroyThread?.cpuMs)}` : ''} ms; load ${loadavg()}`,
      );
    }
    for (const [, h] of hosts) await h.quit();
    const side = (k: 'raw' | 'virtkit' | 'before') => {
      const rs = rounds.map((r) => r[k]).filter((x): x is ScaleResult => x !== undefined);
      return {
        startMs: med(rs.map((r) => r.startMs)),
        destroyMs: med(rs.map((r) => r.destroyMs)),
        startLoopP99: med(rs.map((r) => r.startLoop?.p99 ?? Number.NaN)),
        startLoopMax: Math.max(...rs.map((r) => r.startLoop?.max ?? Number.NaN)),
        destroyLoopP99: med(rs.map((r) => r.destroyLoop?.p99 ?? Number.NaN)),
        perDomainKiB: med(rs.map((r) => ((r.runningRssKiB ?? 0) - r.baseRssKiB) / r.n)),
        heapPerDomainKiB: med(rs.map((r) => ((r.runningHeapKiB ?? 0) - (r.baseHeapKiB ?? 0)) / r.n)),
        peakRssKiB: Math.max(...rs.map((r) => r.peakRssKiB)),
        startCpuMs: med(rs.map((r) => r.startThread?.cpuMs ?? Number.NaN)),
        startWaitMs: med(rs.map((r) => r.startThread?.waitMs ?? Number.NaN)),
        destroyCpuMs: med(rs.map((r) => r.destroyThread?.cpuMs ?? Number.NaN)),
        destroyWaitMs: med(rs.map((r) => r.destroyThread?.waitMs ?? Number.NaN)),
      };
    };
    const s = { raw: side('raw'), virtkit: side('virtkit'), ...(bf ? { before: side('before') } : {}) };
    const ratio = (k: 'virtkit' | 'before', m: 'startMs' | 'destroyMs') =>
      med(rounds.map((r) => (r[k]?.[m] ?? Number.NaN) / r.raw[m]));
    const startRatio = ratio('virtkit', 'startMs');
    const destroyRatio = ratio('virtkit', 'destroyMs');
    const before = bf
      ? {
          checkout: BEFORE,
          startRatio: ratio('before', 'startMs'),
          destroyRatio: ratio('before', 'destroyMs'),
        }
      : undefined;
    json[`burst-${N}`] = { n: N, paused: PAUSED, rounds, summary: s, startRatio, destroyRatio, before };
    md.push(`## ${N} domains started at once${PAUSED ? ' (paused)' : ''}, then destroyed at once`, '');
    md.push(
      '| side | start all (ms) | destroy all (ms) | loop delay p99 / max while starting (ms) | loop delay p99 while destroying (ms) | main thread CPU / waiting for a CPU while starting (ms) | … while destroying (ms) | JS heap per running domain (after GC) | RSS per running domain | peak RSS |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    );
    for (const k of ['raw', 'before', 'virtkit'] as const) {
      const x = s[k];
      if (!x) continue;
      const label = {
        raw: 'raw QEMU (floor)',
        before: 'virtkit before (BENCH_SCALE_BEFORE)',
        virtkit: 'virtkit',
      }[k];
      md.push(
        `| ${label} | ${f1(x.startMs)} | ${f1(x.destroyMs)} | ${f1(x.startLoopP99)} / ${f1(x.startLoopMax)} | ${f1(x.destroyLoopP99)} | ${f1(x.startCpuMs)} / ${f1(x.startWaitMs)} | ${f1(x.destroyCpuMs)} / ${f1(x.destroyWaitMs)} | ${f1(x.heapPerDomainKiB)} KiB | ${f1(x.perDomainKiB)} KiB | ${f1(x.peakRssKiB / 1024)} MiB |`,
      );
    }
    md.push(
      '',
      `Ratio virtkit / raw (median of per-round ratios): start **${f2(startRatio)}×**, destroy **${f2(destroyRatio)}×**.` +
        (before
          ? ` Before (${before.checkout}): start ${f2(before.startRatio)}×, destroy ${f2(before.destroyRatio)}×; sides took turns going first.`
          : ''),
      `Load average per round (before → after): ${rounds.map((r) => `${r.loadBefore} → ${r.loadAfter}`).join('; ')}.`,
      '',
    );
  }

  if (ONLY.has('reconnect') || ONLY.has('list')) {
    const vk = await ScaleHost.virtkit(0, probe.accel);
    if (ONLY.has('reconnect')) {
      const withLibvirt = process.env['BENCH_SCALE_LIBVIRT'] !== '0';
      const lvRoot = withLibvirt ? tempDir('lv-rc') : '';
      const rs: Array<{ vk?: { connectMs: number; resumeMs: number }; lv?: LvAdopt; load: string }> = [];
      for (let r = 0; r < ROUNDS; r++) {
        const round: (typeof rs)[number] = { load: '' };
        const sides = withLibvirt ? (r % 2 === 0 ? ['vk', 'lv'] : ['lv', 'vk']) : ['vk'];
        for (const side of sides) {
          if (side === 'vk') round.vk = await vk.request({ cmd: 'reconnect', n: RECONNECT_N });
          else round.lv = await libvirtAdopt(probe.accel, lvRoot, RECONNECT_N);
        }
        round.load = loadavg();
        rs.push(round);
        log(
          `reconnect round ${r + 1}/${ROUNDS}: virtkit connect ${f1(round.vk?.connectMs)} ms (+ resume all ${f1(round.vk?.resumeMs)}), ` +
            `libvirt open ${f1(round.lv?.openMs)} ms (+ resume all ${f1(round.lv?.resumeMs)}); load ${round.load}`,
        );
      }
      const vkConnect = med(rs.map((r) => r.vk?.connectMs ?? Number.NaN));
      const vkResume = med(rs.map((r) => r.vk?.resumeMs ?? Number.NaN));
      const lvOpen = med(rs.map((r) => r.lv?.openMs ?? Number.NaN));
      const lvResume = med(rs.map((r) => r.lv?.resumeMs ?? Number.NaN));
      json['reconnect'] = {
        n: RECONNECT_N,
        rounds: rs,
        virtkit: { connectMs: vkConnect, resumeMs: vkResume },
      };
      if (withLibvirt)
        json['reconnect'] = {
          ...(json['reconnect'] as object),
          libvirt: { openMs: lvOpen, resumeMs: lvResume },
        };
      md.push(`## A new connection adopting ${RECONNECT_N} running (paused) domains`, '');
      md.push(
        '| driver | open / connect() (ms) | then resume every domain (ms) | total (ms) | per domain (ms) |',
        '|---|---:|---:|---:|---:|',
        `| virtkit (pid, start time and executable verified) | ${f1(vkConnect)} | ${f1(vkResume)} | ${f1(vkConnect + vkResume)} | ${f2((vkConnect + vkResume) / RECONNECT_N)} |`,
      );
      if (withLibvirt)
        md.push(
          `| libvirt (its manager process ended without clean-up; a new one opens the root) | ${f1(lvOpen)} | ${f1(lvResume)} | ${f1(lvOpen + lvResume)} | ${f2((lvOpen + lvResume) / RECONNECT_N)} |`,
        );
      md.push(
        '',
        `virtkit's connect() returns with every domain adopted (monitor connected, state queried); libvirt's open() returns before its reconnect threads finish, so a resume of every domain, which waits for them, is timed after both. Median of ${ROUNDS}; load per round: ${rs.map((r) => r.load).join('; ')}.`,
        '',
      );
    }
    if (ONLY.has('list')) {
      const x = await vk.request<{ ms: number[] }>({
        cmd: 'list',
        n: LIST_N,
        running: LIST_RUNNING,
        reps: 7,
      });
      const s = summarize(x.ms);
      json['list'] = { n: LIST_N, running: LIST_RUNNING, ms: x.ms };
      log(`list: ${f1(s.median)} ms; load ${loadavg()}`);
      md.push(`## listDomains() + getInfo() of each, ${LIST_N} defined, ${LIST_RUNNING} running`, '');
      md.push(`virtkit: **${f1(s.median)} ms** median of ${s.n} (min ${f1(s.min)}, max ${f1(s.max)}).`, '');
    }
    await vk.quit();
  }

  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(join(RESULTS, `${NAME}.json`), `${JSON.stringify(json, null, 2)}\n`);
  writeFileSync(join(RESULTS, `${NAME}.md`), md.join('\n'));
  process.stdout.write(md.join('\n'));
}

let exitCode = 0;
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const)
  process.on(sig, () => void cleanupAll().finally(() => process.exit(130)));
try {
  await main();
} catch (err) {
  exitCode = 1;
  log(`failed: ${(err as Error).stack ?? String(err)}`);
} finally {
  for (const n of await cleanupAll()) log(n);
  const left = markedProcesses();
  if (left.length) {
    exitCode = 1;
    log(`processes of this run still alive after clean-up: ${left.join(' ')}`);
  }
}
process.exit(exitCode);

/*
 * Load for bench/delegated.ts and bench/delegated-ab.ts: holds N connections to virtkit-privd
 * (each has made one call, so it is greeted and known to the helper), BUSY of them calling
 * cgroup.release in a loop, until SIGTERM. argv: socket, N, BUSY, target pid, and optionally
 * `paused`: the loops then wait for SIGUSR1 to start; SIGUSR2 stops them again. Prints READY once
 * all are connected, RUNNING and PAUSED as the loops start and once they have stopped.
 */
import { delegate, type InvocationContext } from '../src/internal/index.js';

const [socketPath, n, busy, pid, startPaused] = [
  process.argv[2] as string,
  Number(process.argv[3]),
  Number(process.argv[4]),
  Number(process.argv[5]),
  process.argv[6] === 'paused',
];
const ctx = (): InvocationContext => ({
  domain: { uuid: '00000000-0000-4000-8000-00000000000d', name: 'load', id: 1 },
  phase: 'release',
  pid,
  signal: new AbortController().signal,
  deadline: Date.now() + 60_000,
});
const clients = Array.from({ length: n }, () => delegate(socketPath));
const call = async (i: number) => clients[i]?.handlers['cgroup.release'](ctx(), { pid, placements: [] });
// Connect in batches: the helper's accept backlog is finite.
for (let i = 0; i < n; i += 50) await Promise.all(clients.slice(i, i + 50).map((_, j) => call(i + j)));
let running = false;
let loops: Promise<void>[] = [];
const start = () => {
  if (running) return;
  running = true;
  loops = Array.from({ length: busy }, async (_, i) => {
    while (running) await call(i);
  });
  process.stdout.write('RUNNING\n');
};
const stop = async () => {
  running = false;
  await Promise.allSettled(loops);
};
if (!startPaused) start();
// Idle connections do not keep a process alive (delegate() unrefs them), nor do signal listeners:
// without this, a load with no loop running would exit here and hold no connection at all.
const alive = setInterval(() => {}, 2 ** 30);
process.stdout.write('READY\n');
process.on('SIGUSR1', start);
process.on('SIGUSR2', async () => {
  await stop();
  process.stdout.write('PAUSED\n');
});
process.once('SIGTERM', async () => {
  await stop();
  for (const c of clients) c.close();
  clearInterval(alive);
  process.exit(0);
});

/*
 * Load for bench/delegated.ts: holds N connections to virtkit-privd (each has made one call, so it
 * is greeted and known to the helper), BUSY of them calling cgroup.release in a loop, until SIGTERM.
 * argv: socket, N, BUSY, target pid. Prints READY once all are connected.
 */
import { delegate, type InvocationContext } from '../src/internal/index.js';

const [socketPath, n, busy, pid] = [
  process.argv[2] as string,
  Number(process.argv[3]),
  Number(process.argv[4]),
  Number(process.argv[5]),
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
let running = true;
const loops = Array.from({ length: busy }, async (_, i) => {
  while (running) await call(i);
});
process.stdout.write('READY\n');
process.once('SIGTERM', async () => {
  running = false;
  await Promise.allSettled(loops);
  for (const c of clients) c.close();
  process.exit(0);
});

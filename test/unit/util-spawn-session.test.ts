import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { canSpawnInSession, pipeCloexec, spawnInSession } from '../../src/util/spawn-session.js';

const dir = mkdtempSync(join(tmpdir(), 'vk-spawn-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Polls until `check` holds (the machine may be loaded), up to 60 s. */
async function until(check: () => boolean): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not reached within 60 s');
    await new Promise((r) => setTimeout(r, 10));
  }
}

function procState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return undefined;
  }
}

describe('spawnInSession (posix_spawn + pidfd)', () => {
  it('is available on this host (Linux >= 5.3, glibc)', () => {
    expect(canSpawnInSession()).toBe(true);
  });

  it('starts the process in a session of its own with exactly the given descriptors, environment and default signals', async () => {
    const out = join(dir, 'report');
    const outFd = openSync(out, 'w', 0o600);
    const [r, w] = pipeCloexec();
    // Low numbers that collide with the child's targets (0..4), in reverse order, must not clobber each other.
    const p = spawnInSession(
      '/bin/sh',
      [
        'virtkit-test',
        '-c',
        'read -r line <&4; echo "line=$line"; echo "env=$ONLY"; ls /proc/self/fd | sort -n | tr "\\n" " "; echo; ' +
          'grep -E "^(SigIgn|SigBlk)" /proc/self/status; cut -d" " -f6 /proc/self/stat; exit 7',
      ],
      { ONLY: 'this', PATH: '/usr/bin:/bin' },
      [null, outFd, outFd, null, r],
    );
    closeSync(outFd);
    closeSync(r);
    writeSync(w, 'hello\n');
    closeSync(w);
    expect(await p.exited).toEqual({ code: 7, signal: null });
    const lines = readFileSync(out, 'utf8').trim().split('\n');
    expect(lines[0]).toBe('line=hello');
    expect(lines[1]).toBe('env=this');
    // 0..4 as given; none of the parent's own descriptors (all close-on-exec) came along. (The
    // test runner itself may leave a descriptor without close-on-exec, so the list is not exact.)
    const fds = lines[2]?.trim().split(' ').map(Number) ?? [];
    expect(fds.slice(0, 5)).toEqual([0, 1, 2, 3, 4]);
    for (const own of [outFd, r, w].filter((fd) => fd > 4)) expect(fds).not.toContain(own);
    // Node ignores SIGPIPE; the child must not inherit that, nor any blocked signal. (Signals 32
    // and 33 belong to libc, which keeps their disposition, as libuv does for a forked child.)
    expect(lines[3]).toMatch(/^SigBlk:\s+0+$/);
    const ignored = BigInt(`0x${lines[4]?.split(/\s+/)[1] ?? 'f'}`);
    expect(ignored & 0x7fff_ffffn).toBe(0n);
    // Session id (field 6) is the child's own pid: setsid ran.
    expect(Number(lines[5])).toBe(p.pid);
  });

  it('reports a death by signal by name, and reaps the process', async () => {
    const p = spawnInSession('/bin/sleep', ['sleep', '600'], {}, [null, null, null]);
    expect(procState(p.pid)).toBeDefined();
    process.kill(p.pid, 'SIGKILL');
    expect(await p.exited).toEqual({ code: null, signal: 'SIGKILL' });
    expect(procState(p.pid)).toBeUndefined();
  });

  it('still reaps a process whose exit it was told to forget', async () => {
    const p = spawnInSession('/bin/sleep', ['sleep', '600'], {}, [null, null, null]);
    let reported = false;
    void p.exited.then(() => {
      reported = true;
    });
    p.forget();
    process.kill(p.pid, 'SIGTERM');
    // No zombie is left behind.
    await until(() => procState(p.pid) === undefined);
    await new Promise((r) => setTimeout(r, 50));
    expect(reported).toBe(false);
  });

  it('fails with the errno when the program cannot be run, leaving nothing behind', () => {
    expect(() => spawnInSession(join(dir, 'missing'), ['missing'], {}, [null, null, null])).toThrow(/ENOENT/);
  });
});

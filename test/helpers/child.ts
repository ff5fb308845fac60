import { type ChildProcess, spawn } from 'node:child_process';

/** Runs a TypeScript file in a child process and resolves with it once it printed `READY <n>`. */
export function runChild(file: string, args: string[]): Promise<{ child: ChildProcess; value: number }> {
  // One process (not the tsx wrapper, which forks): killing it must kill the driver itself.
  const child = spawn(process.execPath, ['--import', 'tsx', file, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  return new Promise((resolve, reject) => {
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /READY (\d+)/.exec(out);
      if (m) resolve({ child, value: Number(m[1]) });
    });
    child.stderr?.on('data', (d: Buffer) => {
      err += d.toString();
    });
    child.on('exit', (code) => reject(new Error(`child exited (${code}) before READY: ${err}`)));
  });
}

/** SIGKILLs a child and waits until it is reaped. */
export async function killChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await gone;
}

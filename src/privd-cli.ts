#!/usr/bin/env node
/*
 * virtkit-privd: the privileged helper as a service. Serves the internal API's privileged
 * operations on a Unix socket to unprivileged drivers that use `delegate()`, under a policy file.
 * Audit lines go to standard error, one JSON object per line. SIGTERM or SIGINT stop it cleanly
 * (the socket file is removed).
 */
import { parseArgs } from 'node:util';
import { VirtError } from './errors.js';
import { createPrivilegedHelper } from './internal/privd/server.js';

const USAGE = `usage: virtkit-privd --socket PATH --policy FILE [--socket-mode MODE]
  --socket PATH       the Unix socket to serve on (a stale one is replaced)
  --policy FILE       the policy (JSON); see README "Deploying the privileged helper"
  --socket-mode MODE  octal mode of the socket file (default 0666; peers are checked by uid anyway)`;

async function main(argv: string[]): Promise<number> {
  let values: { socket?: string; policy?: string; 'socket-mode'?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        socket: { type: 'string' },
        policy: { type: 'string' },
        'socket-mode': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (err) {
    process.stderr.write(`virtkit-privd: ${err instanceof Error ? err.message : String(err)}\n${USAGE}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const mode = values['socket-mode'];
  if (!values.socket || !values.policy || (mode !== undefined && !/^0?[0-7]{3}$/.test(mode))) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  const helper = createPrivilegedHelper({
    socketPath: values.socket,
    policyPath: values.policy,
    ...(mode !== undefined ? { socketMode: Number.parseInt(mode, 8) } : {}),
  });
  await helper.listen();
  process.stderr.write(`virtkit-privd: listening on ${helper.socketPath} (pid ${process.pid})\n`);
  await new Promise<void>((resolve) => {
    const stop = (signal: NodeJS.Signals) => {
      process.stderr.write(`virtkit-privd: ${signal}, stopping\n`);
      resolve();
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  await helper.close();
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    const code = VirtError.is(err) ? ` [${err.code}]` : '';
    process.stderr.write(`virtkit-privd: ${err instanceof Error ? err.message : String(err)}${code}\n`);
    process.exitCode = 1;
  },
);

#!/usr/bin/env node
import './builtin-drivers.js';
import { runCli } from './cli/program.js';

runCli(process.argv.slice(2), {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
}).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`error: INTERNAL_ERROR: ${String(err)}\n`);
    process.exit(1);
  },
);

#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { VirtError } from './errors.js';
import './builtin-drivers.js';
import { connect } from './stable/connect.js';

const USAGE = `usage: virtkit <command> --root DIR [args]
  list                       list domains and their state
  define FILE                define a domain from libvirt XML or a JSON definition
  start NAME [--paused]      start a domain
  destroy NAME               stop a domain at once
  shutdown NAME              ask the guest to power off
  info NAME                  show state, pid and taints`;

async function main(argv: string[]): Promise<number> {
  const rootAt = argv.indexOf('--root');
  const root = rootAt >= 0 ? argv[rootAt + 1] : process.env['VIRTKIT_ROOT'];
  const args = argv.filter((_, i) => i !== rootAt && i !== rootAt + 1 && !argv[i]?.startsWith('--paused'));
  const [command, target] = args;
  if (!command || !root) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  const conn = await connect(`qemu:///embed?root=${root}`);
  try {
    switch (command) {
      case 'list':
        for (const dom of await conn.listDomains()) {
          const info = await dom.getInfo();
          process.stdout.write(`${dom.name}\t${info.state}\t${info.reason}\t${info.pid ?? '-'}\n`);
        }
        return 0;
      case 'define': {
        const text = readFileSync(target ?? '', 'utf8');
        const dom = await conn.defineDomain(text.trimStart().startsWith('<') ? text : JSON.parse(text));
        process.stdout.write(`defined ${dom.name} ${dom.uuid}\n`);
        return 0;
      }
      case 'start':
        await (await conn.lookupDomain(target ?? '')).start({ paused: argv.includes('--paused') });
        return 0;
      case 'destroy':
        await (await conn.lookupDomain(target ?? '')).destroy();
        return 0;
      case 'shutdown':
        await (await conn.lookupDomain(target ?? '')).shutdown({ fallbackToDestroy: true });
        return 0;
      case 'info':
        process.stdout.write(
          `${JSON.stringify(await (await conn.lookupDomain(target ?? '')).getInfo(), (_, v) => (typeof v === 'bigint' ? v.toString() : v), 2)}\n`,
        );
        return 0;
      default:
        process.stderr.write(`${USAGE}\n`);
        return 2;
    }
  } finally {
    await conn.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`virtkit: ${VirtError.is(err) ? `${err.code}: ${err.message}` : String(err)}\n`);
    process.exit(1);
  },
);

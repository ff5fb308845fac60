import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { getSystemErrorMap } from 'node:util';
import { Command } from 'commander';
import { ErrorCode, errorMessage, VirtError } from '../errors.js';
import type { DomainSummaryJson, TlsJson } from '../stable/control/operations.js';
import type { DomainEvent } from '../stable/events.js';
import { packageVersion } from '../stable/package-version.js';
import { attachConsole } from './console.js';
import { type Endpoint, openEndpoint, resolveUri } from './endpoint.js';
import { dominfoText, eventLine, jobText, listTable, stateName } from './format.js';
import { migrate, progressLine } from './migrate.js';
import { qemuMonitorCommand } from './monitor.js';

/** What the command writes to; a test (or another program) can capture it. */
export interface Io {
  out(text: string): void;
  err(text: string): void;
}

interface GlobalOptions {
  connect?: string;
  root?: string;
}

/** Runs `virtkit` with `argv` (without node and the script); resolves to the exit status. */
export async function runCli(argv: readonly string[], io: Io): Promise<number> {
  let endpoint: Endpoint | undefined;
  // An error before the command has run (a domain that does not exist) is reported as JSON too.
  let json = argv.includes('--json');
  // The domain the command names: virsh reports a lookup that failed as "failed to get domain".
  let named: string | undefined;
  // virsh's first error line for the step under way ("Failed to start domain 'x'"), printed before
  // virtkit's code and message; unset while no step that virsh names is under way.
  let failure: string | undefined;
  /** Runs `step` with `line` as the first error line should it fail. */
  const failing = async <T>(line: string, step: () => Promise<T>): Promise<T> => {
    failure = line;
    const result = await step();
    failure = undefined;
    return result;
  };
  /** A file the command reads; virsh's own line when it cannot be read. */
  const readInput = (file: string): string => {
    try {
      return readFileSync(file, 'utf8');
    } catch (err) {
      failure = `Failed to open file '${file}': ${systemErrorText(err)}`;
      throw new VirtError(ErrorCode.SYSTEM_ERROR, `cannot read ${file}: ${errorMessage(err)}`, {
        path: file,
      });
    }
  };
  const program = new Command();
  const open = async (): Promise<Endpoint> => {
    endpoint ??= await openEndpoint(resolveUri(program.opts<GlobalOptions>()));
    return endpoint;
  };
  const print = (value: unknown, human: () => string, asJson: boolean): void => {
    json = asJson;
    io.out(asJson ? `${JSON.stringify(value, null, 2)}\n` : human());
  };

  program
    .name('virtkit')
    .description('Manage the virtual machines of a virtkit root, with virsh’s commands and options.')
    .version(packageVersion(), '-V, --version', 'print the version of virtkit')
    .option(
      '-c, --connect <uri>',
      'connection URI: qemu:///embed?root=/abs/path or test:///default (default: $VIRTKIT_DEFAULT_URI)',
    )
    .option('--root <dir>', 'shorthand for -c qemu:///embed?root=DIR')
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.out(s), writeErr: (s) => io.err(s) })
    .showHelpAfterError('(run virtkit help for the commands, virtkit help COMMAND for one)')
    .addHelpText(
      'after',
      '\nA root held by a running application is reached through its control socket, when it serves one.\nExit status: 0 on success, 1 on failure (the error code is on standard error).',
    );

  program.hook('preAction', (_program, command) => {
    if (command.registeredArguments[0]?.name() === 'domain') named = String(command.processedArgs[0]);
  });

  const domainCommand = (name: string, description: string): Command =>
    program.command(name).description(description).argument('<domain>', 'domain name, id or uuid');

  program
    .command('list')
    .description('list domains (running ones unless told otherwise)')
    .option('--all', 'active and inactive domains')
    .option('--inactive', 'inactive domains only')
    .option('--state-running', 'running domains')
    .option('--state-paused', 'paused domains')
    .option('--state-shutoff', 'shut off domains')
    .option('--state-other', 'domains in other states')
    .option('--name', 'names only')
    .option('--uuid', 'uuids only')
    .option('--table', 'a table (the default)')
    .option('--json', 'JSON: an array of { id, name, uuid, state, reason, persistent }')
    .action(async (o: Record<string, boolean | undefined>) => {
      const wanted: string[] = [];
      if (o['stateRunning']) wanted.push('running');
      if (o['statePaused']) wanted.push('paused');
      if (o['stateShutoff']) wanted.push('shutoff');
      if (o['stateOther']) wanted.push('shutdown', 'crashed');
      const state = o['all'] || wanted.length > 0 ? 'all' : o['inactive'] ? 'inactive' : 'active';
      let domains = await (await open()).call('list', { state });
      if (wanted.length > 0) domains = domains.filter((d) => wanted.includes(d.state));
      print(domains, () => listText(domains, !!o['name'], !!o['uuid'], !!o['table']), !!o['json']);
    });

  domainCommand('dominfo', 'domain information')
    .option(
      '--json',
      'JSON: { id, name, uuid, state, reason, osType, vcpus, maxMemoryKiB, memoryKiB, cpuTimeNs, pid, persistent, autostart, taints }',
    )
    .action(async (domain: string, o: { json?: boolean }) => {
      const info = await (await open()).call('dominfo', { domain });
      print(info, () => dominfoText(info), !!o.json);
    });

  domainCommand('domstate', 'domain state')
    .option('--reason', 'with the reason')
    .option('--json', 'JSON: { state, reason }')
    .action(async (domain: string, o: { reason?: boolean; json?: boolean }) => {
      const info = await (await open()).call('dominfo', { domain });
      print(
        { state: info.state, reason: info.reason },
        () => `${stateName(info.state)}${o.reason ? ` (${info.reason})` : ''}\n\n`,
        !!o.json,
      );
    });

  domainCommand('domid', 'the id of a running domain ("-" when shut off)')
    .option('--json', 'JSON: { id }')
    .action(async (domain: string, o: { json?: boolean }) => {
      const info = await (await open()).call('dominfo', { domain });
      print({ id: info.id }, () => `${info.id ?? '-'}\n\n`, !!o.json);
    });

  domainCommand('domuuid', 'the uuid of a domain')
    .option('--json', 'JSON: { uuid }')
    .action(async (domain: string, o: { json?: boolean }) => {
      const info = await (await open()).call('dominfo', { domain });
      print({ uuid: info.uuid }, () => `${info.uuid}\n\n`, !!o.json);
    });

  domainCommand('domname', 'the name of a domain')
    .option('--json', 'JSON: { name }')
    .action(async (domain: string, o: { json?: boolean }) => {
      const info = await (await open()).call('dominfo', { domain });
      print({ name: info.name }, () => `${info.name}\n\n`, !!o.json);
    });

  domainCommand('dumpxml', 'the domain XML: the live one while running')
    .option('--inactive', 'the persistent definition, also while running')
    .action(async (domain: string, o: { inactive?: boolean }) => {
      const { xml } = await (await open()).call('dumpxml', { domain, inactive: !!o.inactive });
      io.out(`${withNewline(xml)}\n`);
    });

  program
    .command('define')
    .description('define (or update) a domain from libvirt XML or a JSON definition')
    .argument('<file>', 'the XML or JSON file')
    .action(async (file: string) => {
      const text = readInput(file);
      const ep = await open();
      const done = await failing(`Failed to define domain from ${file}`, async () =>
        ep.call('define', readDefinition(file, text)),
      );
      io.out(`Domain '${done.name}' defined from ${file}\n\n`);
    });

  domainCommand('undefine', 'remove the definition of an inactive domain').action(async (domain: string) => {
    const ep = await open();
    await failing(`Failed to undefine domain '${domain}'`, () => ep.call('undefine', { domain }));
    io.out(`Domain '${domain}' has been undefined\n\n`);
  });

  program
    .command('create')
    .description(
      'create a transient domain from XML (or a JSON definition) and start it; it is gone once it stops',
    )
    .argument('<file>', 'the XML or JSON file')
    .option('--paused', 'leave its vCPUs paused')
    .option('--console', 'attach to its serial console once started')
    .action(async (file: string, o: { paused?: boolean; console?: boolean }) => {
      const text = readInput(file);
      const ep = await open();
      const done = await failing(`Failed to create domain from ${file}`, async () =>
        ep.call('create', { ...readDefinition(file, text), paused: !!o.paused }),
      );
      io.out(`Domain '${done.name}' created from ${file}\n\n`);
      if (o.console) await consoleOf(done.uuid, undefined);
    });

  /** Attaches the terminal to a running domain's serial console until Ctrl+] or the domain stops. */
  const consoleOf = async (domain: string, devname: string | undefined): Promise<void> => {
    const ep = await open();
    if ((await ep.call('dominfo', { domain })).id === null) {
      failure = 'The domain is not running';
      throw new VirtError(ErrorCode.OPERATION_INVALID, `domain '${domain}' is not running; start it first`);
    }
    const target = await ep.call('console', devname === undefined ? { domain } : { domain, devname });
    // The root is let go while the console is attached, so other commands can open it meanwhile.
    const held = endpoint;
    endpoint = undefined;
    await held?.close();
    // The guest's bytes go out as they came: a UTF-8 sequence may span two reads.
    await attachConsole(target, {
      input: process.stdin,
      write: (data) => (typeof data === 'string' ? io.out(data) : process.stdout.write(data)),
    });
  };

  domainCommand('start', 'start a defined domain')
    .option('--paused', 'leave its vCPUs paused')
    .option('--console', 'attach to its serial console once started')
    .action(async (domain: string, o: { paused?: boolean; console?: boolean }) => {
      const ep = await open();
      // virsh looks first, and says only this of a domain that runs.
      if ((await ep.call('dominfo', { domain })).id !== null) {
        failure = 'Domain is already active';
        throw new VirtError(ErrorCode.OPERATION_INVALID, `domain '${domain}' is already active`);
      }
      const done = await failing(`Failed to start domain '${domain}'`, () =>
        ep.call('start', { domain, paused: !!o.paused }),
      );
      io.out(`Domain '${done.name}' started\n\n`);
      if (o.console) await consoleOf(done.uuid, undefined);
    });

  domainCommand(
    'console',
    'the serial console of a running domain (a pty or unix serial port); Ctrl+] leaves',
  )
    .option('--devname <name>', 'the serial port: serial0 (default: the first pty or unix one), serial1…')
    .action(async (domain: string, o: { devname?: string }) => {
      await consoleOf(domain, o.devname);
    });

  domainCommand('shutdown', 'ask the guest to power off, and wait until it has')
    .option('--timeout <seconds>', 'how long to wait (default 60)', positiveInt)
    .action(async (domain: string, o: { timeout?: number }) => {
      const args = o.timeout === undefined ? { domain } : { domain, timeoutMs: o.timeout * 1000 };
      const ep = await open();
      await failing(`Failed to shutdown domain '${domain}'`, () => ep.call('shutdown', args));
      io.out(`Domain '${domain}' is being shutdown\n\n`);
    });

  domainCommand('destroy', 'stop a domain at once')
    .option('--graceful', 'SIGTERM only: fail, leaving the domain running, if QEMU does not exit in 10 s')
    .action(async (domain: string, o: { graceful?: boolean }) => {
      const ep = await open();
      await failing(`Failed to destroy domain '${domain}'`, () =>
        ep.call('destroy', { domain, graceful: !!o.graceful }),
      );
      io.out(`Domain '${domain}' destroyed\n\n`);
    });

  domainCommand('suspend', 'pause every vCPU').action(async (domain: string) => {
    const ep = await open();
    await failing(`Failed to suspend domain '${domain}'`, () => ep.call('suspend', { domain }));
    io.out(`Domain '${domain}' suspended\n\n`);
  });

  domainCommand('resume', 'resume a paused domain').action(async (domain: string) => {
    const ep = await open();
    await failing(`Failed to resume domain '${domain}'`, () => ep.call('resume', { domain }));
    io.out(`Domain '${domain}' resumed\n\n`);
  });

  domainCommand('reboot', 'reboot a domain: the guest sees the ACPI power button, then a reset')
    .option('--timeout <seconds>', 'how long to wait for the guest to power off (default 60)', positiveInt)
    .action(async (domain: string, o: { timeout?: number }) => {
      const args = o.timeout === undefined ? { domain } : { domain, timeoutMs: o.timeout * 1000 };
      const ep = await open();
      await failing(`Failed to reboot domain '${domain}'`, () => ep.call('reboot', args));
      io.out(`Domain '${domain}' is being rebooted\n\n`);
    });

  domainCommand('reset', 'reset a domain at once, like its reset button').action(async (domain: string) => {
    const ep = await open();
    await failing(`Failed to reset domain '${domain}'`, () => ep.call('reset', { domain }));
    io.out(`Domain '${domain}' was reset\n\n`);
  });

  for (const [name, verb] of [
    ['attach-device', 'attach'],
    ['detach-device', 'detach'],
  ] as const) {
    domainCommand(name, `${verb} a <disk> or <interface> described by an XML file`)
      .argument('<file>', 'the device XML')
      .option('--live', 'the running domain')
      .option('--config', 'the persistent definition')
      .option('--persistent', 'both (the running domain only when it runs)')
      .option('--current', 'the running domain when it runs, else the definition (the default)')
      .action(
        async (
          domain: string,
          file: string,
          o: { live?: boolean; config?: boolean; persistent?: boolean; current?: boolean },
        ) => {
          const xml = readInput(file);
          const ep = await open();
          let live = !!o.live;
          let config = !!o.config;
          if (o.persistent || (!live && !config)) {
            const active = (await ep.call('dominfo', { domain })).id !== null;
            live = active;
            config = !!o.persistent || !active;
          }
          await failing(`Failed to ${verb} device from ${file}`, () =>
            ep.call(name === 'attach-device' ? 'attachDevice' : 'detachDevice', {
              domain,
              xml,
              live,
              config,
            }),
          );
          io.out(`Device ${verb === 'attach' ? 'attached' : 'detached'} successfully\n\n`);
        },
      );
  }

  domainCommand(
    'setvcpus',
    'set how many vCPUs are online (hot-plug or unplug them, or change the definition)',
  )
    .argument('<count>', 'the number of vCPUs', positiveCount)
    .option('--live', 'the running domain')
    .option('--config', 'the persistent definition')
    .option('--current', 'the running domain when it runs, else the definition (the default)')
    .action(
      async (domain: string, count: number, o: { live?: boolean; config?: boolean; current?: boolean }) => {
        const ep = await open();
        let live = !!o.live;
        let config = !!o.config;
        if (!live && !config) {
          live = (await ep.call('dominfo', { domain })).id !== null;
          config = !live;
        }
        await ep.call('setvcpus', { domain, count, live, config });
        io.out('\n');
      },
    );

  domainCommand('domjobinfo', 'the job under way on a domain')
    .option('--json', 'JSON: { operation, phase, startedAt, elapsedMs, progress, aborting }')
    .action(async (domain: string, o: { json?: boolean }) => {
      const job = await (await open()).call('domjobinfo', { domain });
      print(job, () => jobText(job), !!o.json);
    });

  domainCommand('domjobabort', 'abort the job under way (it rolls back and fails with ABORTED)').action(
    async (domain: string) => {
      await (await open()).call('domjobabort', { domain });
      io.out('\n');
    },
  );

  domainCommand('edit', 'edit the persistent XML with $EDITOR and define it again').action(
    async (domain: string) => {
      const ep = await open();
      const { xml } = await ep.call('dumpxml', { domain, inactive: true });
      const edited = editText(xml);
      if (edited === xml) {
        const { name } = await ep.call('dominfo', { domain });
        io.out(`Domain '${name}' XML configuration not changed.\n\n`);
        return;
      }
      const done = await ep.call('define', { xml: edited });
      io.out(`Domain '${done.name}' XML configuration edited.\n\n`);
    },
  );

  program
    .command('qemu-monitor-command')
    .description(
      'send a QMP command (or, with --hmp, a monitor command line) to QEMU; taints the domain custom-monitor',
    )
    .argument('<domain>', 'domain name, id or uuid')
    .argument('<command...>', 'the QMP command as JSON, or the HMP command line')
    .option('--hmp', 'an HMP command line, sent with human-monitor-command')
    .option('--pretty', 'indent the reply')
    .option('--return-value', 'print only the value QEMU returned')
    .action(
      async (
        domain: string,
        words: string[],
        o: { hmp?: boolean; pretty?: boolean; returnValue?: boolean },
      ) => {
        io.out(await qemuMonitorCommand(await open(), domain, words, o));
      },
    );

  program
    .command('migrate')
    .description(
      'live-migrate a running or paused domain to another root (either may be held by an application)',
    )
    .argument('<domain>', 'domain name, id or uuid')
    .argument('<desturi>', 'the destination: qemu:///embed?root=/other/root')
    .option('--live', 'a live migration (the only kind there is)')
    .option(
      '--listen <address>',
      'where the destination listens: tcp:HOST:PORT or unix:/path (default tcp:127.0.0.1:0)',
    )
    .option('--bandwidth <MiB/s>', 'bandwidth limit of the stream', positiveInt)
    .option('--max-downtime <ms>', 'longest pause of the guest at the switch-over', positiveInt)
    .option('--persistent', 'define the domain at the destination too (else it is transient there)')
    .option('--undefinesource', 'remove its definition from the source once migrated')
    .option('--tls', 'encrypt the stream with TLS; each end checks the other against the CA')
    .option(
      '--tls-dir <dir>',
      'with --tls: the credentials, ca-cert.pem, server-cert.pem, server-key.pem, client-cert.pem, client-key.pem',
    )
    .option(
      '--tls-destination <hostname>',
      "with --tls: the name the destination's certificate carries (default: the host it listens on)",
    )
    .option('--verbose', 'print the progress (always on a terminal)')
    .option('--json', 'JSON: { name, uuid, destination } once migrated')
    .action(
      async (
        domain: string,
        desturi: string,
        o: {
          listen?: string;
          bandwidth?: number;
          maxDowntime?: number;
          verbose?: boolean;
          json?: boolean;
          persistent?: boolean;
          undefinesource?: boolean;
          tls?: boolean;
          tlsDir?: string;
          tlsDestination?: string;
        },
      ) => {
        const flags = { ...o, tls: migrationTls(o) };
        const source = await open();
        const dest = await openEndpoint(desturi);
        const tty = process.stderr.isTTY === true;
        let last = '';
        try {
          const moved = await migrate(source, dest, domain, flags, (p) => {
            const line = progressLine(p);
            if ((tty || o.verbose) && line !== last) io.err(tty ? `\r${line}` : `${line}\n`);
            last = line;
          });
          if (tty && last) io.err('\n');
          print({ ...moved, destination: desturi }, () => '', !!o.json);
        } finally {
          await dest.close();
        }
      },
    );

  program
    .command('capabilities')
    .description('the capabilities of the host and its emulators, as libvirt XML')
    .option('--json', 'JSON: the typed capabilities, with the XML as "xml"')
    .action(async (o: { json?: boolean }) => {
      const caps = await (await open()).call('capabilities', {});
      print(caps, () => `${withNewline(caps.xml)}\n`, !!o.json);
    });

  program
    .command('domcapabilities')
    .description('what virtkit supports with one emulator, as libvirt XML')
    .option('--virttype <type>', 'qemu or kvm')
    .option('--emulatorbin <path>', 'the emulator binary')
    .option('--arch <arch>', 'the architecture')
    .option('--machine <type>', 'the machine type')
    .option('--json', 'JSON: the typed domain capabilities, with the XML as "xml"')
    .action(
      async (o: {
        virttype?: string;
        emulatorbin?: string;
        arch?: string;
        machine?: string;
        json?: boolean;
      }) => {
        const args: Record<string, string> = {};
        if (o.virttype !== undefined) args['virttype'] = o.virttype;
        if (o.emulatorbin !== undefined) args['emulator'] = o.emulatorbin;
        if (o.arch !== undefined) args['arch'] = o.arch;
        if (o.machine !== undefined) args['machine'] = o.machine;
        const caps = await (await open()).call('domcapabilities', args as never);
        print(caps, () => `${withNewline(caps.xml)}\n`, !!o.json);
      },
    );

  program
    .command('version')
    .description('the versions of this command and of the driver it talks to')
    .option('--json', 'JSON: { client, driver, protocol, through }')
    .action(async (o: { json?: boolean }) => {
      const ep = await open();
      const v = await ep.call('version', {});
      const value = { client: packageVersion(), driver: v.virtkit, protocol: v.protocol, through: ep.mode };
      print(
        value,
        () =>
          `Compiled against library: virtkit ${value.client}\nUsing library: virtkit ${value.client}\nRunning driver: virtkit ${value.driver}${ep.mode === 'control-socket' ? ' (through its control socket)' : ''}\n\n`,
        !!o.json,
      );
    });

  program
    .command('event')
    .description('print domain life-cycle events')
    .option('--domain <domain>', 'only events of this domain (name or uuid)')
    .option('--event <name>', 'only this event: lifecycle, or reboot (the guest was reset)')
    .option('--all', 'every event (the default)')
    .option('--loop', 'keep printing until interrupted or the timeout')
    .option('--timeout <seconds>', 'stop after this many seconds', positiveInt)
    .option('--json', 'JSON: one event object per line')
    .action(
      async (o: { domain?: string; event?: string; loop?: boolean; timeout?: number; json?: boolean }) => {
        if (o.event !== undefined && o.event !== 'lifecycle' && o.event !== 'reboot') {
          throw new VirtError(
            ErrorCode.OPERATION_INVALID,
            `unknown event '${o.event}': use lifecycle or reboot`,
          );
        }
        const wanted = (event: DomainEvent): boolean =>
          o.event === undefined || (o.event === 'reboot') === (event.type === 'rebooted');
        json = !!o.json;
        const ep = await open();
        let only: string | undefined;
        if (o.domain !== undefined) {
          named = o.domain;
          // By uuid from here on, so an id or a name given works alike.
          only = (await ep.call('dominfo', { domain: o.domain })).uuid;
        }
        let count = 0;
        let timedOut = false;
        await new Promise<void>((resolve, reject) => {
          const timer =
            o.timeout === undefined
              ? undefined
              : setTimeout(() => {
                  timedOut = true;
                  resolve();
                }, o.timeout * 1000);
          const onSignal = (): void => resolve();
          process.once('SIGINT', onSignal);
          const finish = (): void => {
            clearTimeout(timer);
            process.off('SIGINT', onSignal);
            resolve();
          };
          ep.subscribe(only, (event: DomainEvent) => {
            if (!wanted(event)) return;
            count++;
            io.out(o.json ? `${JSON.stringify(event)}\n` : eventLine(event));
            if (!o.loop) finish();
          }).catch(reject);
        });
        if (!o.json) io.out(`${timedOut ? 'event loop timed out\n' : ''}events received: ${count}\n\n`);
      },
    );

  try {
    await program.parseAsync([...argv], { from: 'user' });
    return 0;
  } catch (err) {
    const code = (err as { exitCode?: unknown }).exitCode;
    if (typeof code === 'number' && (err as { code?: unknown }).code?.toString().startsWith('commander.')) {
      // Commander already printed the usage error (or the help and version, with status 0).
      return code === 0 ? 0 : 1;
    }
    const e = VirtError.is(err) ? err : new VirtError(ErrorCode.INTERNAL_ERROR, errorMessage(err));
    if (json) {
      io.err(`${JSON.stringify({ error: { code: e.code, message: e.message, details: e.details } })}\n`);
    } else {
      // virsh's first line, which scripts match; then virtkit's code and message.
      if (e.code === ErrorCode.NO_DOMAIN && named !== undefined)
        io.err(`error: failed to get domain '${named}'\n`);
      else if (failure !== undefined) io.err(`error: ${failure}\n`);
      io.err(`error: ${e.code}: ${e.message}\n`);
    }
    return 1;
  } finally {
    await endpoint?.close();
  }
}

function listText(
  domains: readonly DomainSummaryJson[],
  name: boolean,
  uuid: boolean,
  asTable: boolean,
): string {
  if (asTable || (!name && !uuid)) return listTable(domains);
  const lines = domains.map((d) => (name && uuid ? `${d.uuid}  ${d.name}` : name ? d.name : d.uuid));
  return `${lines.map((l) => `${l}\n`).join('')}\n`;
}

/** The text of a definition file: libvirt XML, or a JSON definition object. */
function readDefinition(
  file: string,
  text: string,
): { xml: string } | { definition: Record<string, unknown> } {
  if (text.trimStart().startsWith('<')) return { xml: text };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new VirtError(ErrorCode.XML_ERROR, `${file} is neither XML nor JSON: ${errorMessage(err)}`, {
      path: file,
    });
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new VirtError(ErrorCode.XML_ERROR, `${file}: a JSON definition must be an object`, { path: file });
  }
  return { definition: json as Record<string, unknown> };
}

/** Lets the user edit `text` with $VISUAL or $EDITOR (default vi), as virsh edit does. */
function editText(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'virtkit-edit-'));
  try {
    const file = join(dir, 'domain.xml');
    writeFileSync(file, text);
    const editor = process.env['VISUAL'] || process.env['EDITOR'] || 'vi';
    const res = spawnSync('/bin/sh', ['-c', `${editor} "$1"`, 'sh', file], { stdio: 'inherit' });
    if (res.status !== 0) {
      throw new VirtError(
        ErrorCode.OPERATION_FAILED,
        `the editor '${editor}' failed (${res.error ? errorMessage(res.error) : `status ${res.status ?? res.signal}`}); nothing was changed`,
      );
    }
    return readFileSync(file, 'utf8');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The TLS credentials of `migrate --tls --tls-dir DIR [--tls-destination NAME]`. */
function migrationTls(o: { tls?: boolean; tlsDir?: string; tlsDestination?: string }): TlsJson | undefined {
  if (!o.tls) {
    if (o.tlsDir !== undefined || o.tlsDestination !== undefined)
      throw new VirtError(ErrorCode.OPERATION_INVALID, '--tls-dir and --tls-destination go with --tls');
    return undefined;
  }
  if (o.tlsDir === undefined)
    throw new VirtError(
      ErrorCode.OPERATION_INVALID,
      '--tls needs --tls-dir DIR: the directory of ca-cert.pem and the certificates and keys of both ends',
    );
  const dir = resolve(o.tlsDir);
  return o.tlsDestination === undefined ? { dir } : { dir, hostname: o.tlsDestination };
}

function positiveInt(value: string): number {
  if (!/^[1-9][0-9]{0,6}$/.test(value)) {
    throw new VirtError(ErrorCode.OPERATION_INVALID, `'${value}' is not a positive whole number of seconds`);
  }
  return Number(value);
}

function positiveCount(value: string): number {
  if (!/^[1-9][0-9]{0,3}$/.test(value)) {
    throw new VirtError(ErrorCode.OPERATION_INVALID, `'${value}' is not a vCPU count (1, 2, …)`);
  }
  return Number(value);
}

/** What strerror() says of a failed system call, as virsh prints it ("No such file or directory"). */
function systemErrorText(err: unknown): string {
  const errno = (err as NodeJS.ErrnoException).errno;
  const text = errno === undefined ? undefined : getSystemErrorMap().get(errno)?.[1];
  return text ? text.charAt(0).toUpperCase() + text.slice(1) : errorMessage(err);
}

function withNewline(text: string): string {
  return text.endsWith('\n') ? text : `${text}\n`;
}

import { ErrorCode, errorMessage, VirtError } from '../errors.js';
import { openInternal } from '../internal/api.js';
import { resolveDomain } from '../stable/control/operations.js';
import type { Endpoint } from './endpoint.js';

/** Options of `virtkit qemu-monitor-command`, as virsh names them. */
export interface MonitorCommandFlags {
  readonly hmp?: boolean;
  readonly pretty?: boolean;
  readonly returnValue?: boolean;
}

/**
 * `virsh qemu-monitor-command`: one QMP command (or an HMP command line with `--hmp`) through
 * `virtkit/internal`'s passthrough, which taints the domain `custom-monitor`. Only a command that
 * holds the root itself can: the control socket never serves the internal entry.
 */
export async function qemuMonitorCommand(
  endpoint: Endpoint,
  domain: string,
  words: readonly string[],
  flags: MonitorCommandFlags,
): Promise<string> {
  const conn = endpoint.connection;
  if (!conn) {
    throw new VirtError(
      ErrorCode.ACCESS_DENIED,
      'qemu-monitor-command goes through virtkit/internal, which a control socket never serves: run it when no application holds the root',
    );
  }
  const dom = await resolveDomain(conn, domain);
  const text = words.join(' ');
  let command: string;
  let args: Record<string, unknown> | undefined;
  if (flags.hmp) {
    command = 'human-monitor-command';
    args = { 'command-line': text };
  } else {
    ({ command, args } = parseQmp(text));
  }
  // This command ships with this very copy of virtkit: the version it was written against is this one.
  const internal = openInternal(conn, { apiVersion: '1.0' });
  const result = await internal.monitorCommand(dom, command, args);
  if (flags.hmp) return typeof result === 'string' ? result : `${JSON.stringify(result)}\n`;
  const shown = flags.returnValue ? result : { return: result };
  return `${flags.pretty ? JSON.stringify(shown, null, 2) : JSON.stringify(shown)}\n`;
}

function parseQmp(text: string): { command: string; args: Record<string, unknown> | undefined } {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new VirtError(
      ErrorCode.XML_ERROR,
      `not a QMP command ({"execute": …, "arguments": {…}}): ${errorMessage(err)}; use --hmp for a monitor command line`,
    );
  }
  const obj = json as { execute?: unknown; arguments?: unknown };
  if (typeof json !== 'object' || json === null || typeof obj.execute !== 'string') {
    throw new VirtError(ErrorCode.XML_ERROR, 'a QMP command is an object with "execute" (a string)');
  }
  if (obj.arguments !== undefined && (typeof obj.arguments !== 'object' || obj.arguments === null)) {
    throw new VirtError(ErrorCode.XML_ERROR, 'the "arguments" of a QMP command are an object');
  }
  return { command: obj.execute, args: obj.arguments as Record<string, unknown> | undefined };
}

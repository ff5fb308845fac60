import { execFileSync } from 'node:child_process';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { QmpClient } from '../../src/drivers/qemu/qmp/client.js';
import { useProbeRoot } from '../helpers/probe-root.js';

/*
 * Serial and parallel ports on the chardev backends beyond pty, file and unix, on real QEMU (paused
 * TCG): QEMU's own chardev list names each backend, its devices hold them, and the TCP backends
 * really connect (QEMU dials the test's listener; a client dialling QEMU's listener gets its telnet
 * negotiation).
 */

const rig = useProbeRoot();
const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

const doc = (name: string, devices: string) => `<domain type='qemu'>
  <name>${name}</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>${devices}</devices>
</domain>`;

/** Polls `probe` until it returns a value (60 s at most). */
async function until<T>(what: string, probe: () => T | undefined | Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

type Chardev = { label: string; filename: string };
async function chardevs(qmp: QmpClient): Promise<Map<string, string>> {
  const list = (await qmp.execute('query-chardev')) as Chardev[];
  return new Map(list.map((c) => [c.label, c.filename]));
}

const chardevOf = (qmp: QmpClient, id: string) =>
  qmp.execute('qom-get', { path: `/machine/peripheral/${id}`, property: 'chardev' });

describe('chardev backends on real QEMU', () => {
  it('serial ports on tcp (connect and telnet bind), udp and a pipe; parallel ports on unix and file', async () => {
    const accepted: Socket[] = [];
    const server: Server = createServer((s) => accepted.push(s));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(() => {
      for (const s of accepted) s.destroy();
      server.close();
    });
    const tcpPort = (server.address() as { port: number }).port;
    const udp: UdpSocket = createSocket('udp4');
    await new Promise<void>((r) => udp.bind(0, '127.0.0.1', r));
    cleanups.push(() => udp.close());
    const udpPort = udp.address().port;
    const fifo = join(rig.root, 'pipe');
    execFileSync('mkfifo', [`${fifo}.in`, `${fifo}.out`]);
    const unixPath = join(rig.root, 'lpt.sock');

    const { qmp, live } = await rig.startWithProbe(
      doc(
        'chardevs',
        `<serial type='tcp'><source mode='connect' host='127.0.0.1' service='${tcpPort}'/><protocol type='raw'/><target port='0'/></serial>
         <serial type='tcp'><source mode='bind' host='127.0.0.1' service='0'/><protocol type='telnet'/><target port='1'/></serial>
         <serial type='udp'><source mode='bind' host='127.0.0.1' service='0'/><source mode='connect' host='127.0.0.1' service='${udpPort}'/><target port='2'/></serial>
         <serial type='pipe'><source path='${fifo}'/><target port='3'/></serial>
         <parallel type='unix'><source mode='bind' path='${unixPath}'/><target port='0'/></parallel>
         <parallel type='file'><source path='${join(rig.root, 'lpt2.out')}' append='on'/><target port='1'/></parallel>`,
      ),
    );
    expect(live.serials.map((s) => s.type)).toEqual(['tcp', 'tcp', 'udp', 'pipe']);
    expect(live.parallels?.map((s) => s.type)).toEqual(['unix', 'file']);

    // QEMU dialled the test's listener.
    await until('QEMU to connect', () => (accepted.length > 0 ? true : undefined));
    const list = await chardevs(qmp);
    expect(list.get('charserial0')).toMatch(
      new RegExp(`^tcp:127\\.0\\.0\\.1:\\d+ <-> 127\\.0\\.0\\.1:${tcpPort}$`),
    );
    const telnet = list.get('charserial1') ?? '';
    expect(telnet).toMatch(/^disconnected:telnet:127\.0\.0\.1:\d+,server=on$/);
    expect(list.get('charserial2')).toBe('udp');
    expect(list.get('charserial3')).toBe('pipe');
    expect(list.get('charparallel0')).toBe(`disconnected:unix:${unixPath},server=on`);
    expect(list.get('charparallel1')).toBe('file');
    for (const [id, chardev] of [
      ['serial0', 'charserial0'],
      ['serial3', 'charserial3'],
      ['parallel0', 'charparallel0'],
      ['parallel1', 'charparallel1'],
    ])
      expect(await chardevOf(qmp, id as string)).toBe(chardev);

    // A client of the telnet listener is greeted with telnet option negotiation (IAC = 0xff).
    const port = Number(/:(\d+),server=on$/.exec(telnet)?.[1]);
    const client = connect(port, '127.0.0.1');
    cleanups.push(() => client.destroy());
    const chunks: Buffer[] = [];
    client.on('data', (b: Buffer) => chunks.push(b));
    const greeting = await until('the telnet negotiation', () => {
      const all = Buffer.concat(chunks);
      return all.length >= 3 ? all : undefined;
    });
    expect(greeting[0]).toBe(0xff);
    await until('QEMU to see the client', async () =>
      (await chardevs(qmp)).get('charserial1')?.startsWith('telnet:') ? true : undefined,
    );
  });

  it('serial ports on a host terminal device, null and vc', async () => {
    const { qmp } = await rig.startWithProbe(
      doc(
        'tty',
        `<serial type='dev'><source path='/dev/null'/></serial><serial type='null'/><serial type='vc'/>
         <console type='dev'><source path='/dev/null'/><target type='serial' port='0'/></console>`,
      ),
    );
    const list = await chardevs(qmp);
    // QEMU's tty backend calls itself "serial".
    expect(list.get('charserial0')).toBe('serial');
    expect(list.get('charserial1')).toBe('null');
    expect(list.get('charserial2')).toBe('vc');
    expect(await chardevOf(qmp, 'serial2')).toBe('charserial2');
  });
});

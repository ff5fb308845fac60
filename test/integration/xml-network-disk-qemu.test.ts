import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readFileSync, readSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { type AddressInfo, createServer } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { QmpClient } from '../../src/drivers/qemu/qmp/client.js';
import { ErrorCode } from '../../src/errors.js';
import { alive } from '../helpers/env.js';
import { useProbeRoot } from '../helpers/probe-root.js';

/*
 * Network disks (`<disk type='network'>`) on real QEMU (TCG): images served by real qemu-nbd
 * servers, over a UNIX socket and over TCP, and by an HTTP server in this process (QEMU's curl
 * driver, Debian's qemu-block-extra). Each domain is started paused; QMP's query-block shows the
 * node QEMU connected, and QEMU's own qemu-io (through the monitor) reads the pattern the image
 * holds and writes one the server's file then shows.
 */

const rig = useProbeRoot();
const servers: number[] = [];
let http: Server | undefined;

afterEach(async () => {
  for (const pid of servers.splice(0)) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      // already gone
    }
  }
  await new Promise<void>((done) => (http ? http.close(() => done()) : done()));
  http = undefined;
});

const MiB = 1024 * 1024;

/** A raw image whose first 64 KiB hold `byte`. */
function image(name: string, byte: number): string {
  const path = join(rig.root, name);
  const data = Buffer.alloc(MiB);
  data.fill(byte, 0, 64 * 1024);
  writeFileSync(path, data);
  return path;
}

/**
 * Starts qemu-nbd on `image`; `--fork` returns only once the server listens (or failed to).
 * Returns the TCP port it listens on, or undefined for a UNIX socket.
 */
async function nbdServer(image: string, exportName: string, socket?: string): Promise<number | undefined> {
  const pidFile = join(rig.root, `${exportName}.pid`);
  const common = [
    '--fork',
    '--persistent',
    '--shared=4',
    '-f',
    'raw',
    '-x',
    exportName,
    `--pid-file=${pidFile}`,
  ];
  const start = (listen: string[]): void => {
    execFileSync('qemu-nbd', [...common, ...listen, image], { stdio: 'pipe' });
    servers.push(Number(readFileSync(pidFile, 'utf8').trim()));
  };
  if (socket !== undefined) {
    start(['-k', socket]);
    return undefined;
  }
  // A port free a moment ago may be taken by then: another try with another port.
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    try {
      start(['-b', '127.0.0.1', '-p', String(port)]);
      return port;
    } catch (err) {
      if (attempt >= 4) throw err;
    }
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** An HTTP server with byte ranges (what QEMU's curl driver needs) serving `path` at `/disk.img`. */
async function httpServer(path: string): Promise<number> {
  const data = readFileSync(path);
  const server = createHttpServer((req, res) => {
    if (req.url !== '/disk.img') {
      res.writeHead(404).end();
      return;
    }
    const range = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    if (!range) {
      res.writeHead(200, { 'Content-Length': data.length, 'Accept-Ranges': 'bytes' });
      res.end(req.method === 'HEAD' ? undefined : data);
      return;
    }
    const from = Number(range[1]);
    const to = Math.min(Number(range[2]), data.length - 1);
    res.writeHead(206, {
      'Content-Length': to - from + 1,
      'Content-Range': `bytes ${from}-${to}/${data.length}`,
      'Accept-Ranges': 'bytes',
    });
    res.end(data.subarray(from, to + 1));
  });
  http = server;
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  return (server.address() as AddressInfo).port;
}

const domain = (name: string, disks: string): string => `<domain type='qemu'>
  <name>${name}</name>
  <memory unit='MiB'>128</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
${disks}
  </devices>
</domain>`;

interface Block {
  qdev?: string;
  inserted?: { file: string; ro: boolean; drv: string; 'node-name': string };
}

/**
 * QEMU's qemu-io on the block backend of the IDE/SATA device `id`, through the monitor. Its
 * output goes to QEMU's stdout, not the monitor: a test sees its effect in the server's image.
 */
async function qemuIo(qmp: QmpClient, id: string, command: string): Promise<void> {
  const out = await qmp.execute('human-monitor-command', { 'command-line': `qemu-io -d ${id} "${command}"` });
  expect(out).toBe('');
}

/**
 * Copies block node `node` into the new raw file `target` with a backup job of QEMU, waiting for
 * the job to conclude: every byte is read through the node, so from the server behind it.
 */
async function copyOut(qmp: QmpClient, node: string, target: string): Promise<Buffer> {
  const id = `copy-${node}`;
  await qmp.execute('drive-backup', {
    'job-id': id,
    device: node,
    target,
    sync: 'full',
    format: 'raw',
    'auto-dismiss': false,
  });
  const deadline = Date.now() + 60_000;
  for (;;) {
    const jobs = await qmp.execute<Array<{ id: string; status: string; error?: string }>>('query-jobs');
    const job = jobs.find((j) => j.id === id);
    if (job?.status === 'concluded') {
      expect(job.error).toBeUndefined();
      break;
    }
    if (Date.now() > deadline) throw new Error(`backup job ${id} still ${job?.status} after 60 s`);
    await new Promise((r) => setTimeout(r, 100));
  }
  await qmp.execute('job-dismiss', { id });
  return readFileSync(target);
}

function byteAt(path: string, offset: number): number {
  const fd = openSync(path, 'r');
  try {
    const one = Buffer.alloc(1);
    readSync(fd, one, 0, 1, offset);
    return one[0] as number;
  } finally {
    closeSync(fd);
  }
}

describe('network disks on real QEMU', () => {
  it('nbd over a UNIX socket and over TCP: QEMU connects, reads the images and writes to one', async () => {
    const unixImage = image('unix.raw', 0x76);
    const tcpImage = image('tcp.raw', 0x5a);
    const socket = join(rig.root, 'nbd.sock');
    await nbdServer(unixImage, 'first', socket);
    const port = await nbdServer(tcpImage, 'second');
    const { qmp, live } = await rig.startWithProbe(
      domain(
        'network-nbd',
        `    <disk type='network' device='disk'>
      <driver name='qemu' type='raw'/>
      <source protocol='nbd' name='first'>
        <host transport='unix' socket='${socket}'/>
      </source>
      <target dev='sda' bus='sata'/>
    </disk>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw'/>
      <source protocol='nbd' name='second'>
        <host name='127.0.0.1' port='${port}'/>
      </source>
      <target dev='vda' bus='virtio'/>
      <readonly/>
    </disk>`,
      ),
    );
    expect(live.disks.map((d) => [d.type, d.network, d.source])).toEqual([
      ['network', { protocol: 'nbd', name: 'first', hosts: [{ transport: 'unix', socket }] }, undefined],
      [
        'network',
        { protocol: 'nbd', name: 'second', hosts: [{ transport: 'tcp', name: '127.0.0.1', port }] },
        undefined,
      ],
    ]);
    const [sda, vda] = live.disks.map((d) => d.alias as string) as [string, string];
    const blocks = await qmp.execute<Block[]>('query-block');
    const of = (id: string) =>
      blocks.find((b) => b.qdev === id || b.qdev === `/machine/peripheral/${id}/virtio-backend`)?.inserted;
    expect(of(sda)).toMatchObject({ drv: 'raw', ro: false, file: `nbd+unix:///first?socket=${socket}` });
    expect(of(vda)).toMatchObject({ drv: 'raw', ro: true, file: `nbd://127.0.0.1:${port}/second` });

    // Every byte read through each node comes from its server's image.
    expect(await copyOut(qmp, of(vda)?.['node-name'] as string, join(rig.root, 'vda.copy'))).toEqual(
      readFileSync(tcpImage),
    );
    expect(await copyOut(qmp, of(sda)?.['node-name'] as string, join(rig.root, 'sda.copy'))).toEqual(
      readFileSync(unixImage),
    );
    // A write through the guest's drive lands in the server's file.
    expect(byteAt(unixImage, 128 * 1024)).toBe(0);
    await qemuIo(qmp, sda, 'write -P 0x33 131072 4096');
    await qemuIo(qmp, sda, 'flush');
    expect(byteAt(unixImage, 128 * 1024)).toBe(0x33);
    expect(byteAt(unixImage, 128 * 1024 + 4095)).toBe(0x33);
  }, 120_000);

  it("http through QEMU's curl driver, and an nbd disk hot-plugged into the running domain", async () => {
    const served = image('served.raw', 0x42);
    const port = await httpServer(served);
    const { qmp, live } = await rig.startWithProbe(
      domain(
        'network-http',
        `    <disk type='network' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source protocol='http' name='/disk.img'>
        <host name='127.0.0.1' port='${port}'/>
        <timeout seconds='60'/>
      </source>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <controller type='pci' model='pcie-root-port'/>`,
      ),
    );
    const cd = live.disks[0]?.alias as string;
    const blocks = await qmp.execute<Block[]>('query-block');
    const inserted = blocks.find((b) => b.qdev === cd)?.inserted;
    expect(inserted).toMatchObject({
      ro: true,
      file: expect.stringContaining(`http://127.0.0.1:${port}/disk.img`),
    });
    expect(await copyOut(qmp, inserted?.['node-name'] as string, join(rig.root, 'cd.copy'))).toEqual(
      readFileSync(served),
    );

    const hot = image('hot.raw', 0x17);
    const socket = join(rig.root, 'hot.sock');
    await nbdServer(hot, 'hot', socket);
    const dom = await rig.conn.lookupDomain('network-http');
    await dom.attachDevice(
      `<disk type='network' device='disk'><driver name='qemu' type='raw'/><source protocol='nbd' name='hot'><host transport='unix' socket='${socket}'/></source><target dev='vdb' bus='virtio'/></disk>`,
      { live: true },
    );
    const plugged = dom.getDefinition().disks.find((d) => d.target.dev === 'vdb');
    expect(plugged?.network).toEqual({
      protocol: 'nbd',
      name: 'hot',
      hosts: [{ transport: 'unix', socket }],
    });
    const after = await qmp.execute<Block[]>('query-block');
    const hotNode = after.find(
      (b) => b.qdev === `/machine/peripheral/${plugged?.alias}/virtio-backend`,
    )?.inserted;
    expect(hotNode?.file).toBe(`nbd+unix:///hot?socket=${socket}`);
    expect(await copyOut(qmp, hotNode?.['node-name'] as string, join(rig.root, 'hot.copy'))).toEqual(
      readFileSync(hot),
    );
    expect(servers.every(alive)).toBe(true);
  }, 120_000);

  it('refuses secrets, TLS and protocols it cannot serve, with the path', async () => {
    const refused = async (disk: string, code: ErrorCode, path: string) => {
      await expect(rig.conn.defineDomain(domain('network-refused', disk))).rejects.toMatchObject({
        code,
        details: expect.objectContaining({ path }),
      });
    };
    const host = "<host name='192.0.2.1'/>";
    const target = "<target dev='vda' bus='virtio'/>";
    await refused(
      `<disk type='network'><auth username='u'><secret type='iscsi' usage='x'/></auth><source protocol='iscsi' name='iqn.2020-01.org.example:t/1'>${host}</source>${target}</disk>`,
      ErrorCode.CONFIG_UNSUPPORTED,
      '/domain/devices/disk/auth',
    );
    await refused(
      `<disk type='network'><source protocol='iscsi' name='iqn.2020-01.org.example:t/1'>${host}<auth username='u'><secret type='iscsi' usage='x'/></auth></source>${target}</disk>`,
      ErrorCode.CONFIG_UNSUPPORTED,
      '/domain/devices/disk/source/auth',
    );
    await refused(
      `<disk type='network'><source protocol='nbd' tls='yes'>${host}</source>${target}</disk>`,
      ErrorCode.CONFIG_UNSUPPORTED,
      '/domain/devices/disk/source/@tls',
    );
    await refused(
      `<disk type='network'><source protocol='sheepdog' name='v'>${host}</source>${target}</disk>`,
      ErrorCode.CONFIG_UNSUPPORTED,
      '/domain/devices/disk/source/@protocol',
    );
    await refused(
      `<disk type='network'><source protocol='http' name='a.img'><host transport='unix' socket='/s'/></source>${target}</disk>`,
      ErrorCode.XML_ERROR,
      '/domain/devices/disk/source/host/@transport',
    );
    await refused(
      `<disk type='network'><source protocol='iscsi'>${host}</source>${target}</disk>`,
      ErrorCode.XML_ERROR,
      '/domain/devices/disk/source/@name',
    );
    expect(await rig.conn.listDomains({ state: 'all' })).toEqual([]);
  });
});

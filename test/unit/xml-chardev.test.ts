import { describe, expect, it } from 'vitest';
import { buildCommandLine } from '../../src/drivers/qemu/command-line.js';
import { ErrorCode } from '../../src/errors.js';
import { resolveDefinition } from '../../src/stable/definition/validate.js';
import { formatDomainXml, parseDomainXml } from '../../src/stable/index.js';
import { thrownVirtError } from '../helpers/errors.js';

/*
 * Chardev backends of <serial> and <parallel> (and the <console> alias of serial 0): parsed into
 * the typed definition, formatted back to the same definition, and given the -chardev arguments
 * libvirt's qemuBuildChardevStr writes.
 */

const uuid = '1b4e28ba-2fa1-11d2-883f-0016d3cca427';
const doc = (devices: string) =>
  `<domain type='qemu'><name>d</name><uuid>${uuid}</uuid><memory unit='MiB'>64</memory><devices>${devices}</devices></domain>`;
const resolve = (xml: string) => resolveDefinition(parseDomainXml(xml));
const ctx = {
  monitorFd: 3,
  consolePath: '/r/log/d.console.log',
  homeDir: '/r/lib',
  diskFds: [],
  tapFds: [],
  nowMs: 0,
};
const chardevs = (xml: string) => {
  const args = buildCommandLine(resolve(xml), ctx).argv;
  return args.filter((_, i) => args[i - 1] === '-chardev' && !args[i]?.includes('charmonitor'));
};
const roundTrips = (xml: string) => {
  const def = resolve(xml);
  expect(resolve(formatDomainXml(def))).toStrictEqual(def);
  return def;
};

describe('serial chardev backends', () => {
  it.each([
    [
      'tcp connect (libvirt default mode), raw',
      "<serial type='tcp'><source host='127.0.0.1' service='9999'/><protocol type='raw'/></serial>",
      { type: 'tcp', mode: 'connect', host: '127.0.0.1', service: 9999, protocol: 'raw' },
      'socket,id=charserial0,host=127.0.0.1,port=9999',
    ],
    [
      'tcp bind with telnet',
      "<serial type='tcp'><source mode='bind' host='::1' service='4555' tls='no'/><protocol type='telnet'/></serial>",
      { type: 'tcp', mode: 'bind', host: '::1', service: 4555, protocol: 'telnet' },
      'socket,id=charserial0,host=::1,port=4555,telnet=on,server=on,wait=off',
    ],
    [
      'udp with a local address',
      "<serial type='udp'><source mode='bind' host='127.0.0.1' service='1111'/><source mode='connect' host='127.0.0.1' service='2222'/></serial>",
      { type: 'udp', host: '127.0.0.1', service: 2222, bindHost: '127.0.0.1', bindService: 1111 },
      'udp,id=charserial0,host=127.0.0.1,port=2222,localaddr=127.0.0.1,localport=1111',
    ],
    [
      'udp without a local address',
      "<serial type='udp'><source service='2222'/></serial>",
      { type: 'udp', service: 2222 },
      'udp,id=charserial0,port=2222',
    ],
    [
      'host device',
      "<serial type='dev'><source path='/dev/ttyS2,x'/></serial>",
      { type: 'dev', path: '/dev/ttyS2,x' },
      'tty,id=charserial0,path=/dev/ttyS2,,x',
    ],
    [
      'pipe',
      "<serial type='pipe'><source path='/tmp/p'/></serial>",
      { type: 'pipe', path: '/tmp/p' },
      'pipe,id=charserial0,path=/tmp/p',
    ],
    ['null', "<serial type='null'/>", { type: 'null' }, 'null,id=charserial0'],
    ['vc', "<serial type='vc'/>", { type: 'vc' }, 'vc,id=charserial0'],
    [
      'file appending, with a log',
      "<serial type='file'><source path='/tmp/s.log' append='on'/><log file='/tmp/l.log' append='on'/></serial>",
      { type: 'file', path: '/tmp/s.log', append: true, log: { file: '/tmp/l.log', append: true } },
      'file,id=charserial0,path=/tmp/s.log,append=on,logfile=/tmp/l.log,logappend=on',
    ],
    [
      'pty with a log',
      "<serial type='pty'><log file='/tmp/l.log'/></serial>",
      { type: 'pty', log: { file: '/tmp/l.log', append: false } },
      'pty,id=charserial0,logfile=/tmp/l.log,logappend=off',
    ],
  ])('%s', (_what, body, source, chardev) => {
    const def = roundTrips(doc(body));
    expect(def.serials).toEqual([source]);
    expect(chardevs(doc(body))).toEqual([chardev]);
  });

  it('a console of the same type folds into serial 0 and is formatted back with it', () => {
    const src = "<source mode='connect' host='127.0.0.1' service='9999'/><protocol type='raw'/>";
    const def = roundTrips(
      doc(`<serial type='tcp'>${src}</serial><console type='tcp'>${src}<target port='0'/></console>`),
    );
    expect(def.serials).toHaveLength(1);
    expect(formatDomainXml(def)).toContain(
      "<console type='tcp'>\n      <source mode='connect' host='127.0.0.1' service='9999'/>\n      <protocol type='raw'/>",
    );
  });
});

describe('parallel ports', () => {
  it('are isa-parallel devices on their chardevs, a host device through parport', () => {
    const body =
      "<parallel type='dev'><source path='/dev/parport0'/><target port='0'/></parallel>" +
      "<parallel type='unix'><source mode='bind' path='/tmp/pp.sock'/><protocol type='raw'/><target port='1'/></parallel>" +
      "<parallel type='file'/>";
    const def = roundTrips(doc(body));
    expect(def.parallels).toEqual([
      { type: 'dev', path: '/dev/parport0' },
      { type: 'unix', mode: 'bind', path: '/tmp/pp.sock' },
      { type: 'file' },
    ]);
    const cl = buildCommandLine(def, ctx);
    expect(chardevs(doc(body))).toEqual([
      'parport,id=charparallel0,path=/dev/parport0',
      'socket,id=charparallel1,path=/tmp/pp.sock,server=on,wait=off',
      'file,id=charparallel2,path=/r/log/d.parallel2.log',
    ]);
    expect(cl.argv).toContain('{"driver":"isa-parallel","chardev":"charparallel1","id":"parallel1"}');
    // The live definition names the file QEMU writes.
    expect(cl.live.parallels?.[2]).toEqual({ type: 'file', path: '/r/log/d.parallel2.log' });
  });
});

describe('refusals name the place', () => {
  it.each([
    ["<serial type='stdio'/>", ErrorCode.CONFIG_UNSUPPORTED, '/domain/devices/serial/@type'],
    ["<serial type='tcp'/>", ErrorCode.XML_ERROR, '/domain/devices/serial'],
    [
      "<serial type='tcp'><source host='h'/></serial>",
      ErrorCode.XML_ERROR,
      '/domain/devices/serial/source/@service',
    ],
    [
      "<serial type='tcp'><source host='h' service='70000'/></serial>",
      ErrorCode.XML_ERROR,
      '/domain/devices/serial/source/@service',
    ],
    [
      "<serial type='tcp'><source host='h' service='1'/><protocol type='telnets'/></serial>",
      ErrorCode.CONFIG_UNSUPPORTED,
      '/domain/devices/serial/protocol/@type',
    ],
    [
      "<serial type='udp'><source mode='bind' service='1'/></serial>",
      ErrorCode.XML_ERROR,
      '/domain/devices/serial/source',
    ],
    ["<serial type='dev'/>", ErrorCode.XML_ERROR, '/domain/devices/serial'],
    [
      "<serial type='dev'><source path='tty'/></serial>",
      ErrorCode.XML_ERROR,
      '/domain/devices/serial/source/@path',
    ],
    [
      "<serial type='null'><source path='/x'/></serial>",
      ErrorCode.CONFIG_UNSUPPORTED,
      '/domain/devices/serial/source/@path',
    ],
    [
      "<serial type='unix'><source path='/x'/><protocol type='telnet'/></serial>",
      ErrorCode.CONFIG_UNSUPPORTED,
      '/domain/devices/serial/protocol/@type',
    ],
    [
      "<parallel type='pty'><target port='1'/></parallel>",
      ErrorCode.CONFIG_UNSUPPORTED,
      '/domain/devices/parallel/target/@port',
    ],
    [
      "<parallel type='null'/><parallel type='null'/><parallel type='null'/><parallel type='null'/>",
      ErrorCode.XML_ERROR,
      '/domain/devices',
    ],
  ])('%s', (body, code, path) => {
    expect(thrownVirtError(() => resolve(doc(body)))).toMatchObject({ code, details: { path } });
  });
});

import type { CharSource } from '../../../stable/definition/schema-chardev.js';

/*
 * `-chardev` arguments for a serial or parallel port's backend, as libvirt's qemuBuildChardevStr
 * writes them: listening sockets never wait for a client, a log goes through QEMU's `logfile`.
 */

/** QEMU's option syntax doubles commas inside values. */
const esc = (value: string): string => value.replaceAll(',', ',,');

/**
 * The `-chardev` value of backend `src` with id `id`. `defaultFile` is where a file backend without
 * a path writes; `parallel` picks QEMU's `parport` instead of `tty` for a host device.
 */
export function chardevArg(id: string, src: CharSource, defaultFile: string, parallel = false): string {
  let arg: string;
  switch (src.type) {
    case 'file':
      arg = `file,id=${id},path=${esc(src.path ?? defaultFile)}`;
      if (src.append !== undefined) arg += `,append=${src.append ? 'on' : 'off'}`;
      break;
    case 'pty':
      arg = `pty,id=${id}`;
      break;
    case 'unix':
      arg = `socket,id=${id},path=${esc(src.path)}${src.mode === 'bind' ? ',server=on,wait=off' : ''}`;
      break;
    case 'dev':
      arg = `${parallel ? 'parport' : 'tty'},id=${id},path=${esc(src.path)}`;
      break;
    case 'pipe':
      arg = `pipe,id=${id},path=${esc(src.path)}`;
      break;
    case 'null':
    case 'vc':
      arg = `${src.type},id=${id}`;
      break;
    case 'tcp':
      arg = `socket,id=${id},host=${esc(src.host)},port=${src.service}`;
      if (src.protocol === 'telnet') arg += ',telnet=on';
      if (src.mode === 'bind') arg += ',server=on,wait=off';
      break;
    case 'udp':
      // Without a host QEMU sends to localhost.
      arg = `udp,id=${id}${src.host === undefined ? '' : `,host=${esc(src.host)}`},port=${src.service}`;
      if (src.bindHost !== undefined) arg += `,localaddr=${esc(src.bindHost)}`;
      if (src.bindService !== undefined) arg += `,localport=${src.bindService}`;
      break;
  }
  if (src.log) arg += `,logfile=${esc(src.log.file)},logappend=${src.log.append ? 'on' : 'off'}`;
  return arg;
}

import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * A CA and, signed by it, a server certificate for 127.0.0.1 and localhost and a client
 * certificate, in `dir`, which is returned.
 */
export function makeCredentials(dir: string, ca: string): string {
  mkdirSync(dir, { recursive: true });
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  ssl(
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    '2',
    '-subj',
    `/CN=${ca}`,
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
    '-keyout',
    'ca-key.pem',
    '-out',
    'ca-cert.pem',
  );
  for (const [end, usage] of [
    ['server', 'serverAuth'],
    ['client', 'clientAuth'],
  ] as const) {
    writeFileSync(
      join(dir, `${end}.ext`),
      [
        'basicConstraints=critical,CA:FALSE',
        'keyUsage=critical,digitalSignature,keyEncipherment',
        `extendedKeyUsage=${usage}`,
        'subjectAltName=IP:127.0.0.1,DNS:localhost',
      ].join('\n'),
    );
    ssl(
      'req',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-subj',
      `/CN=${end}`,
      '-keyout',
      `${end}-key.pem`,
      '-out',
      `${end}.csr`,
    );
    ssl(
      'x509',
      '-req',
      '-in',
      `${end}.csr`,
      '-CA',
      'ca-cert.pem',
      '-CAkey',
      'ca-key.pem',
      '-CAcreateserial',
      '-days',
      '2',
      '-extfile',
      `${end}.ext`,
      '-out',
      `${end}-cert.pem`,
    );
  }
  return dir;
}

import { z } from 'zod';

/*
 * The source of a network disk (libvirt's `<disk type='network'>`): the image is on a server that
 * QEMU itself connects to, so no descriptor is handed over for it (storage.openFile does not apply).
 * The protocols are those QEMU 7.2 on Debian has drivers for: nbd (built in), iscsi and the curl
 * family (Debian's qemu-block-extra package). Secrets (`<auth>`, cookies) are not supported: virtkit
 * has no secret store, and a password on QEMU's command line is readable by every local user.
 */

/** The protocols of a network disk. */
export const networkDiskProtocols = ['nbd', 'iscsi', 'http', 'https', 'ftp', 'ftps'] as const;

const host = z.strictObject({
  /** `unix` (nbd only) names a socket instead of a host name. */
  transport: z.enum(['tcp', 'unix']).default('tcp'),
  /** Host name or IP address (tcp). */
  name: z.string().min(1).optional(),
  /** TCP port; without one, the protocol's own (nbd 10809, iscsi 3260, http 80…). */
  port: z.number().int().min(1).max(65535).optional(),
  /** Absolute path of the server's UNIX socket (unix). */
  socket: z.string().startsWith('/', 'an absolute path').optional(),
});

/** A network disk's source, as libvirt's `<source protocol name query>` with its `<host>`. */
export const networkDiskSource = z
  .strictObject({
    protocol: z.enum(networkDiskProtocols),
    /**
     * nbd: the export name (optional); iscsi: the target IQN, optionally followed by `/LUN`;
     * http(s), ftp(s): the path of the image on the server.
     */
    name: z.string().min(1).optional(),
    /** http(s), ftp(s): the URL's query string, without `?`. */
    query: z.string().optional(),
    /** The server: exactly one. */
    hosts: z.array(host).length(1, 'exactly one <host>'),
    /** iscsi: the initiator IQN QEMU logs in with. */
    initiator: z.string().min(1).optional(),
    /** http(s), ftp(s): the request timeout in seconds. */
    timeoutSeconds: z.number().int().min(1).optional(),
    /** http(s), ftp(s): bytes read ahead per request, a multiple of 512 (QEMU's rule). */
    readaheadBytes: z.number().int().min(512).multipleOf(512, 'a multiple of 512').optional(),
    /** https, ftps: whether the server's certificate is verified (the default). */
    sslVerify: z.boolean().optional(),
  })
  .superRefine((src, ctx) => {
    const curl = src.protocol !== 'nbd' && src.protocol !== 'iscsi';
    src.hosts.forEach((h, i) => {
      if (h.transport === 'unix') {
        if (src.protocol !== 'nbd')
          ctx.addIssue({
            code: 'custom',
            path: ['hosts', i, 'transport'],
            message: 'only nbd has a unix transport',
          });
        if (h.socket === undefined)
          ctx.addIssue({
            code: 'custom',
            path: ['hosts', i, 'socket'],
            message: 'a unix host needs a socket',
          });
        if (h.name !== undefined || h.port !== undefined)
          ctx.addIssue({
            code: 'custom',
            path: ['hosts', i],
            message: 'a unix host has a socket, not a name or port',
          });
      } else {
        if (h.name === undefined)
          ctx.addIssue({ code: 'custom', path: ['hosts', i, 'name'], message: 'a tcp host needs a name' });
        if (h.socket !== undefined)
          ctx.addIssue({ code: 'custom', path: ['hosts', i, 'socket'], message: 'a tcp host has no socket' });
      }
    });
    if (src.protocol !== 'nbd' && src.name === undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['name'],
        message: `a ${src.protocol} source needs a name (${src.protocol === 'iscsi' ? 'the target IQN' : 'the image path'})`,
      });
    if (src.protocol === 'iscsi' && src.name !== undefined && !/^[^/]+(\/\d+)?$/.test(src.name))
      ctx.addIssue({
        code: 'custom',
        path: ['name'],
        message: 'an iscsi name is a target IQN, optionally /LUN',
      });
    if (src.initiator !== undefined && src.protocol !== 'iscsi')
      ctx.addIssue({ code: 'custom', path: ['initiator'], message: 'only iscsi has an initiator' });
    if (!curl) {
      for (const key of ['query', 'timeoutSeconds', 'readaheadBytes', 'sslVerify'] as const)
        if (src[key] !== undefined)
          ctx.addIssue({ code: 'custom', path: [key], message: `only http(s) and ftp(s) have ${key}` });
    } else if (src.sslVerify !== undefined && src.protocol !== 'https' && src.protocol !== 'ftps') {
      ctx.addIssue({ code: 'custom', path: ['sslVerify'], message: 'only https and ftps have sslVerify' });
    }
  });

/** A network disk's source. */
export type NetworkDiskSource = z.infer<typeof networkDiskSource>;

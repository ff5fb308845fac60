import { z } from 'zod';

/*
 * The host side of a character device (libvirt's `<serial type=…>`, `<parallel type=…>` with their
 * `<source>`, `<protocol>` and `<log>`): one of QEMU's chardev backends. Field names follow libvirt's
 * XML. A backend QEMU cannot provide here (spice, vdagent, dbus) is not among them.
 */

const absolute = z.string().startsWith('/', 'an absolute path').max(4096);

/** A file QEMU copies everything the guest writes to (libvirt's `<log file append>`). */
const log = z
  .strictObject({
    file: absolute,
    /** Append to an existing file instead of truncating it at start. */
    append: z.boolean().default(false),
  })
  .optional();

/** A TCP or UDP port (libvirt's `service`); 0 lets the kernel pick one (a listener's is then in query-chardev). */
const service = z.number().int().min(0).max(65535);
const host = z.string().min(1).max(255);

/** The chardev backend of a serial or parallel port. */
export const charSource = z.discriminatedUnion('type', [
  /** Written to a file; without a path, `<root>/log/<name>.console.log`. */
  z.strictObject({
    type: z.literal('file'),
    path: absolute.optional(),
    /** Append to the file instead of truncating it at start. */
    append: z.boolean().optional(),
    log,
  }),
  /**
   * A pseudo-terminal QEMU allocates at start (`virtkit console` attaches to it). `path` is output
   * only: the live definition of a running domain carries the pty it got; a start ignores it.
   */
  z.strictObject({ type: z.literal('pty'), path: absolute.optional(), log }),
  /**
   * A UNIX socket: QEMU listens on `path` (`bind`, removed again when the domain stops) or connects
   * to a listener there (`connect`, which must exist when the domain starts).
   */
  z.strictObject({
    type: z.literal('unix'),
    mode: z.enum(['bind', 'connect']).default('bind'),
    path: z.string().startsWith('/', 'an absolute path').max(107, 'at most 107 bytes (a UNIX socket path)'),
    log,
  }),
  /** A host terminal device such as `/dev/ttyS0` (QEMU's `tty`; `parport` for a parallel port). */
  z.strictObject({ type: z.literal('dev'), path: absolute, log }),
  /** A FIFO: `path.in` and `path.out` when both exist, else `path` both ways (QEMU's `pipe`). */
  z.strictObject({ type: z.literal('pipe'), path: absolute, log }),
  /** Output discarded, no input. */
  z.strictObject({ type: z.literal('null'), log }),
  /** QEMU's virtual console (a text console of QEMU's display; nothing is shown without one). */
  z.strictObject({ type: z.literal('vc'), log }),
  /** A TCP socket QEMU listens on (`bind`) or connects to (`connect`), raw or with telnet negotiation. */
  z.strictObject({
    type: z.literal('tcp'),
    mode: z.enum(['bind', 'connect']).default('connect'),
    host,
    service,
    protocol: z.enum(['raw', 'telnet']).default('raw'),
    log,
  }),
  /** UDP datagrams to `host`:`service`, sent from `bindHost`:`bindService` (QEMU's `localaddr`, `localport`). */
  z.strictObject({
    type: z.literal('udp'),
    host: host.optional(),
    service,
    bindHost: host.optional(),
    bindService: service.optional(),
    log,
  }),
]);

/** A chardev backend as the resolved definition holds it. */
export type CharSource = z.output<typeof charSource>;

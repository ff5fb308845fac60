import { ErrorCode, VirtError } from '../errors.js';
import type { HandlerOptions } from '../privileged/handler-table.js';
import type { OperationHandler, OperationName } from '../privileged/operations.js';
import { type InternalSeam, seamOf } from '../privileged/seam.js';
import {
  checkInternalVersion,
  INTERNAL_API_VERSION,
  type InternalApiVersion,
} from '../privileged/version.js';
import type { Connection } from '../stable/connection.js';
import {
  type AttachedDomain,
  type AttachOptions,
  attach,
  type MonitorCommandOptions,
  type MonitorEvent,
  type MonitorEventsOptions,
  type MonitorTarget,
  monitorCommand,
  monitorEvents,
} from './passthrough.js';

/**
 * Options of {@link openInternal}.
 *
 * @public
 */
export interface OpenInternalOptions {
  /** The internal API version your code was written against, as a literal: `'1.0'`. */
  readonly apiVersion: InternalApiVersion;
}

/**
 * The handle a pinned consumer registers privileged-operation handlers through.
 *
 * @public
 */
export interface InternalApi {
  /** The internal API version the handshake agreed on. */
  readonly apiVersion: InternalApiVersion;
  /**
   * Registers the handler of one operation. Throws `HANDLER_ALREADY_REGISTERED` for a second one
   * and `HANDLERS_SEALED` once the driver has started a domain.
   */
  setHandler<Op extends OperationName>(op: Op, handler: OperationHandler<Op>, options?: HandlerOptions): void;
  /** True when a handler is registered for `op`. */
  hasHandler(op: OperationName): boolean;
  /** True once the driver has started a domain and the handlers are fixed. */
  readonly sealed: boolean;
  /**
   * Sends one raw QMP command to a running domain's QEMU, like `virsh qemu-monitor-command`, and
   * resolves with QEMU's `return` value. The domain is tainted `custom-monitor` from then on (in
   * `getInfo().taints`, kept across reconnect) and the command is written to the domain's log.
   * Commands that change what the driver tracks (`stop`, `cont`, `quit`, `device_del`) are allowed:
   * the driver follows the events they cause, so its state stays QEMU's; a `device_add` with an
   * `id` is read back from QEMU into the live definition when the definition can represent it
   * (otherwise logged). A command that can change the domain takes the domain's job, as libvirt's
   * `qemu-monitor-command` does (`QEMU_JOB_MODIFY`; job operation `monitor-command`): it waits for
   * the job under way, and a `destroy()` or `abortJob()` ends it. Queries (`query-*`, `x-query-*`,
   * `qom-get`, `qom-list`, `qom-list-types`, `qom-list-properties`, `device-list-properties`) never
   * wait for a job, so they also serve to look at a domain whose job is stuck.
   *
   * @param domain - a `Domain` of this connection
   * @param command - the QMP command name, e.g. `query-status`
   * @param args - the command's `arguments`
   * @returns QEMU's reply (`return`), untrusted: QEMU may have run guest code
   * @throws `VirtError` `ABORTED` when `signal` aborts the command's job (or its wait for one);
   *   `OPERATION_FAILED` with `details.qmpClass` when QEMU answers with an
   *   error; `OPERATION_INVALID` when the domain is not running; `XML_ERROR` (`details.field`) for a
   *   malformed command name or arguments; `OPERATION_TIMEOUT`; `NO_SUPPORT` on the test driver
   */
  monitorCommand(
    domain: MonitorTarget,
    command: string,
    args?: Record<string, unknown>,
    options?: MonitorCommandOptions,
  ): Promise<unknown>;
  /**
   * QEMU's raw QMP events of a running domain, from this call on, as an async iterator that ends
   * when the domain stops, the connection closes or `signal` aborts. Taints the domain
   * `custom-monitor`, as {@link InternalApi.monitorCommand} does.
   *
   * @throws `VirtError` `OPERATION_INVALID` when the domain is not running; `NO_SUPPORT` on the test driver
   */
  monitorEvents(domain: MonitorTarget, options?: MonitorEventsOptions): AsyncIterableIterator<MonitorEvent>;
  /**
   * Adopts a QEMU started outside virtkit, like `virsh qemu-attach`: checks that `pid` runs a
   * `qemu-system-*` binary and that `monitor` is its QMP socket (the listener's peer credentials,
   * or the process holding that listening socket), builds a transient domain from QMP (name, uuid,
   * kvm or qemu, memory, vCPUs with their verified thread ids, the virtio disks and the virtio, e1000,
   * e1000e or rtl8139 NICs the definition can represent, with QEMU's ids as aliases; other devices are logged),
   * taints it `external-launch`, and manages it from then on like any other: events,
   * suspend/resume, shutdown, destroy, reconnect by a later driver. It disappears (`undefined`
   * event) once its QEMU exits. Limits: no privileged operation was applied to it (no memlock, placement or
   * scheduling); the socket must be free, as QEMU serves one QMP client at a time; a destroy
   * signals QEMU's process group when QEMU leads one.
   *
   * @returns the new domain, a `Domain` of the connection (its `started` event has the reason `attached`)
   * @throws `VirtError` `OPERATION_INVALID` (`details.pid`) when the pid is not a QEMU or the socket
   *   is not its monitor; `SYSTEM_ERROR` when the socket cannot be connected; `DOMAIN_EXISTS` when
   *   the name or uuid is taken; `XML_ERROR` (`details.field`) for malformed options; `NO_SUPPORT`
   *   on the test driver; `OPERATION_INVALID` on an API obtained by a plugin (no connection)
   */
  attach(options: AttachOptions): Promise<AttachedDomain>;
}

export { seamOf };

/** Wraps a seam as the consumer-facing API; `source` names the registrant in errors and logs. */
export function internalApiFor(seam: InternalSeam, source: string, connection?: Connection): InternalApi {
  return {
    apiVersion: INTERNAL_API_VERSION,
    setHandler(op, handler, options) {
      seam.handlers.set(op, handler, options, source);
    },
    hasHandler: (op) => seam.handlers.get(op) !== undefined,
    get sealed() {
      return seam.handlers.sealed;
    },
    monitorCommand: (domain, command, args, options = {}) =>
      monitorCommand(seam, domain, command, args, options),
    monitorEvents: (domain, options = {}) => monitorEvents(seam, domain, options),
    async attach(options) {
      if (!connection) {
        throw new VirtError(
          ErrorCode.OPERATION_INVALID,
          "attach needs the API of openInternal(conn), not a plugin's",
        );
      }
      const { uuid } = await attach(seam, options);
      return connection.lookupDomain(uuid);
    },
  };
}

/**
 * Opens the internal API of a connection after the version handshake. Fails at once with
 * `INTERNAL_VERSION_MISMATCH` when `apiVersion` is not the version this virtkit implements.
 *
 * @public
 */
export function openInternal(connection: object, options: OpenInternalOptions): InternalApi {
  checkInternalVersion((options as { apiVersion?: unknown } | undefined)?.apiVersion);
  return internalApiFor(seamOf(connection), 'setHandler', connection as Connection);
}

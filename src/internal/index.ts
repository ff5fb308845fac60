/**
 * virtkit/internal: the deliberately unstable API for pinned consumers. It may change in any
 * release; a consumer states the version it was written against and fails at once on another.
 * See docs of {@link openInternal} and the "Internal" sections of CHANGELOG.md.
 *
 * @packageDocumentation
 */

export type { HandlerOptions } from '../privileged/handler-table.js';
export {
  type DomainIdentity,
  type HandlerReturn,
  type InvocationContext,
  OPERATIONS,
  type OperationArgs,
  type OperationHandler,
  type OperationName,
  type OperationResult,
  operationSchemas,
  PHASES,
  type Phase,
} from '../privileged/operations.js';
export {
  SIMULATED_PID_BASE,
  type SimulatedHost,
  type SimulatedProcess,
  type SimulatedThread,
  simulatedHost,
} from '../privileged/simulation.js';
export { INTERNAL_API_VERSION, type InternalApiVersion } from '../privileged/version.js';
export { type InternalApi, type OpenInternalOptions, openInternal } from './api.js';
export type {
  AttachedDomain,
  AttachOptions,
  MonitorCommandOptions,
  MonitorEvent,
  MonitorEventsOptions,
  MonitorTarget,
} from './passthrough.js';
export type { VirtkitPlugin } from './plugins.js';
export { type Delegate, type DelegateOptions, delegate } from './privd/delegate.js';
export type { PrivilegedHelperLimits, PrivilegedHelperPolicy } from './privd/policy.js';
export {
  createPrivilegedHelper,
  type PrivilegedHelper,
  type PrivilegedHelperOptions,
} from './privd/server.js';

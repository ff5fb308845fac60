// The exports of the stable API. The package entry is src/index.ts, which also registers the
// built-in drivers with connect (this layer never imports a driver).

export { ErrorCode, VirtError, type VirtErrorDetails } from '../errors.js';
export type {
  Capabilities,
  DomainCapabilities,
  DomainCapabilitiesOptions,
  GuestCapabilities,
  GuestMachine,
  HostCapabilities,
  HostCpuCell,
  HostPages,
} from './capabilities.js';
export { type ConnectOptions, connect } from './connect.js';
export { Connection, type ListDomainsOptions } from './connection.js';
export type {
  ControllerDefinition,
  DiskDefinition,
  DomainDefinition,
  DomainDefinitionInput,
  InterfaceDefinition,
  MemoryDeviceDefinition,
  PciAddress,
  SchedulerPolicy,
} from './definition/schema.js';
export { domainDefinitionSchema } from './definition/schema.js';
export { formatDomainXml, parseDomainXml } from './definition/xml.js';
export type { DetachDeviceOptions, DeviceChangeOptions, DeviceDefinition, DeviceMatch } from './devices.js';
export { type DefinitionOptions, Domain, IncomingMigration, type MigrationDestination } from './domain.js';
export type {
  ControlSocketSettings,
  DestroyOptions,
  DomainRef,
  Driver,
  OutgoingMigration,
  RebootOptions,
  ShutdownOptions,
  StartOptions,
} from './driver.js';
export type {
  CrashedReason,
  DomainEvent,
  DomainEventType,
  DomainFigures,
  DomainInfo,
  DomainState,
  DomainStatus,
  PausedReason,
  RunningReason,
  ShutdownReason,
  ShutoffReason,
  StoppedReason,
} from './events.js';
export type { JobInfo, JobOperation, OperationOptions } from './jobs.js';
export type {
  MigratePerformOptions,
  MigratePrepareOptions,
  MigrateToOptions,
  MigrationConfirmOptions,
  MigrationEndOptions,
  MigrationIncomingCookie,
  MigrationOffer,
  MigrationOfferCookie,
  MigrationProgress,
  MigrationTlsOptions,
  PreparedIncoming,
  ResolvedOffer,
} from './migration.js';
export {
  diagnosticsChannels,
  type HandlerMessage,
  type JobMessage,
  type QmpCommandMessage,
  type QmpEventMessage,
  type TracedDomain,
  type TracedOutcome,
} from './tracing.js';

// Public surface of the domain: pure deciders (one folder per aggregate) and the command services
// that orchestrate them through an EventStore. Nothing here touches HTTP, NATS or SQL directly.
export { DOMAIN_ERRORS, RuleViolationError, type DomainErrorCode } from './errors.js';
export type { Decider } from './decider.js';

export { sequenceDecider, type AllocateId, type SequenceCommand, type SequenceState } from './sequence/sequence.decider.js';
export { allocateId, type AllocatedId } from './sequence/sequence.commands.js';

export { userDecider, type CreateUser, type UserCommand, type UserState } from './user/user.decider.js';
export { createUser, loadUser, userStream, type CreateUserInput, type CreateUserResult } from './user/user.commands.js';

export {
  clientDecider,
  type ClientCommand,
  type ClientState,
  type ClientType,
  type DeleteClient,
  type DisableClient,
  type EnableClient,
  type ExpireClient,
  type KickClient,
  type RegisterClient,
  type RotateClientAuthCode,
} from './client/client.decider.js';
export {
  clientSessionDecider,
  type ClientSessionCommand,
  type ClientSessionState,
  type RecordClientConnected,
  type RecordClientDisconnected,
} from './client/client-session.decider.js';
export {
  AUTH_CODE_PREFIX,
  CLIENT_SESSION_AGGREGATE,
  clientSessionStream,
  clientStream,
  createManagedClient,
  deleteClient,
  disableClient,
  enableClient,
  expireAnonymousClient,
  kickClient,
  loadClient,
  recordClientConnected,
  recordClientDisconnected,
  registerAnonymousClient,
  rotateClientAuthCode,
  type ClientCommandResult,
  type CreateManagedClientInput,
  type CreateManagedClientResult,
  type RegisterAnonymousClientInput,
} from './client/client.commands.js';

export {
  mappingDecider,
  validateMappingShape,
  type CreateMapping,
  type DeleteMapping,
  type MappingCommand,
  type MappingSpec,
  type MappingState,
} from './mapping/mapping.decider.js';
export {
  cleanAgentText,
  mappingStatusDecider,
  type MappingStatusState,
  type RecordMappingAgentStatus,
} from './mapping/mapping-status.decider.js';
export {
  createMapping,
  deleteMapping,
  loadMapping,
  mappingStatusStream,
  mappingStream,
  recordMappingAgentStatus,
  type CreateMappingInput,
  type CreateMappingResult,
} from './mapping/mapping.commands.js';

export { portDecider, type PortCommand, type PortState, type ReleasePublicPort, type ReservePublicPort } from './port/port.decider.js';
export { portStream, releasePublicPort, reserveFirstFreePort, reservePublicPort, type PortRange } from './port/port.commands.js';

export {
  localPortDecider,
  type LocalPortCommand,
  type LocalPortState,
  type ReleaseLocalPort,
  type ReserveLocalPort,
} from './localport/localport.decider.js';
export { localPortStream, releaseLocalPort, reserveLocalPort, type LocalPortInput } from './localport/localport.commands.js';

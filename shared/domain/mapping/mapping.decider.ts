import { MAPPING_LIMITS, type DomainEvent, type EventData, type TypedStoredEvent } from '../../contracts/events.js';
import type { Decider } from '../decider.js';
import { DomainError, NotFoundError } from '../../platform/errors.js';
import { DOMAIN_ERRORS, RuleViolationError } from '../errors.js';

/** Stream `mapping.<mapping_id>`. */
export type MappingSpec = EventData<'MappingCreated'>;

export type CreateMapping = {
  readonly type: 'CreateMapping';
  /**
   * `enabled` and `secret_generation` are decided here (a new mapping starts enabled, at secret
   * generation 1), everything else comes from the caller. No secret: it is derived (shared/platform/mapping-secrets.ts).
   */
  readonly data: Omit<MappingSpec, 'enabled' | 'protocol' | 'secret_generation'> & { readonly protocol: string };
};
export type DeleteMapping = { readonly type: 'DeleteMapping'; readonly data: { readonly mapping_id: number } };
/** A new secret generation (the current one plus 1) for an active mapping. */
export type RotateMappingSecret = { readonly type: 'RotateMappingSecret'; readonly data: { readonly mapping_id: number } };
/** New values for the fields a mapping may change after creation; absent fields stay. */
export type UpdateMapping = {
  readonly type: 'UpdateMapping';
  readonly data: { readonly mapping_id: number; readonly enabled?: boolean; readonly target_host?: string; readonly target_port?: number };
};
export type MappingCommand = CreateMapping | DeleteMapping | RotateMappingSecret | UpdateMapping;

export type MappingState =
  | { readonly status: 'absent' }
  | { readonly status: 'active'; readonly mapping: MappingSpec }
  | { readonly status: 'deleted'; readonly mapping: MappingSpec };

function isPort(n: number | null): boolean {
  return n !== null && Number.isInteger(n) && n >= 1 && n <= 65535;
}

/**
 * Shape rules for a new mapping, independent of any state (so command services can check them
 * before allocating ids or ports). The one home of the rules between fields: the API's zod schema
 * checks each field alone (400), these answer RuleViolationError → 422 TNX_MAPPING_INVALID naming
 * the field. Two kinds exist for tcp:
 * - client-to-client: source_client_id + local_port, no public_port;
 * - public: public_port, no source client and no local listener.
 */
export function validateMappingShape(d: CreateMapping['data']): void {
  const invalid = (message: string, field: string): never => {
    throw new RuleViolationError(DOMAIN_ERRORS.mappingInvalid, message, field);
  };
  if (d.protocol !== 'tcp') {
    throw new RuleViolationError(DOMAIN_ERRORS.mappingUnsupportedProtocol, `protocol ${d.protocol} is not supported yet`, 'protocol');
  }
  if (d.target_host.length === 0) invalid('target_host must not be empty', 'target_host');
  if (!isPort(d.target_port)) invalid('target_port must be 1-65535', 'target_port');
  for (const field of ['idle_timeout', 'max_connections', 'max_pending_opens'] as const) {
    const v = d[field];
    const { min, max } = MAPPING_LIMITS[field];
    if (v !== undefined && (!Number.isInteger(v) || v < min || v > max)) invalid(`${field} must be an integer within ${min}-${max}`, field);
  }
  if (d.source_client_id !== null) {
    if (d.source_client_id === d.target_client_id) invalid('source and target client must differ', 'target_client_id');
    if (d.local_port === null) invalid('a client-to-client mapping needs local_port', 'local_port');
    if (!isPort(d.local_port)) invalid('local_port must be 1-65535', 'local_port');
    if (d.public_port !== null) invalid('a client-to-client mapping has no public_port', 'public_port');
    if (d.local_host !== null && d.local_host.length === 0) invalid('local_host must not be empty', 'local_host');
  } else {
    if (d.public_port === null) invalid('a public mapping needs public_port (or a source client)', 'public_port');
    if (!isPort(d.public_port)) invalid('public_port must be 1-65535', 'public_port');
    if (d.local_port !== null) invalid('a public mapping has no local_port', 'local_port');
    if (d.local_host !== null) invalid('a public mapping has no local_host', 'local_host');
  }
}

export const mappingDecider: Decider<MappingState, MappingCommand> = {
  initialState: () => ({ status: 'absent' }),
  evolve: (state, event: TypedStoredEvent): MappingState => {
    switch (event.type) {
      case 'MappingCreated':
        return { status: 'active', mapping: event.data };
      case 'MappingDeleted':
        return state.status === 'absent' ? state : { status: 'deleted', mapping: state.mapping };
      case 'MappingSecretRotated':
        return state.status === 'active' ? { status: 'active', mapping: { ...state.mapping, secret_generation: event.data.secret_generation } } : state;
      case 'MappingUpdated': {
        if (state.status !== 'active') return state;
        const { enabled, target_host, target_port } = event.data;
        return { status: 'active', mapping: { ...state.mapping, enabled, target_host, target_port } };
      }
      default:
        return state;
    }
  },
  decide: (command, state): DomainEvent[] => {
    switch (command.type) {
      case 'CreateMapping': {
        // A deleted mapping's id is never reused: its events stay in the audit trail.
        if (state.status !== 'absent') {
          throw new DomainError(DOMAIN_ERRORS.mappingAlreadyExists, `mapping ${command.data.mapping_id} already exists`);
        }
        validateMappingShape(command.data);
        return [{ type: 'MappingCreated', data: { ...command.data, protocol: 'tcp', enabled: true, secret_generation: 1 } }];
      }
      case 'DeleteMapping': {
        if (state.status !== 'active') {
          throw new NotFoundError(DOMAIN_ERRORS.mappingNotFound, `mapping ${command.data.mapping_id} not found`);
        }
        return [{ type: 'MappingDeleted', data: { mapping_id: command.data.mapping_id } }];
      }
      case 'RotateMappingSecret': {
        if (state.status !== 'active') {
          throw new NotFoundError(DOMAIN_ERRORS.mappingNotFound, `mapping ${command.data.mapping_id} not found`);
        }
        return [{ type: 'MappingSecretRotated', data: { mapping_id: command.data.mapping_id, secret_generation: state.mapping.secret_generation + 1 } }];
      }
      case 'UpdateMapping': {
        if (state.status !== 'active') {
          throw new NotFoundError(DOMAIN_ERRORS.mappingNotFound, `mapping ${command.data.mapping_id} not found`);
        }
        const m = state.mapping;
        const next = {
          mapping_id: m.mapping_id,
          enabled: command.data.enabled ?? m.enabled,
          target_host: command.data.target_host ?? m.target_host,
          target_port: command.data.target_port ?? m.target_port,
        };
        if (next.target_host.length === 0) throw new RuleViolationError(DOMAIN_ERRORS.mappingInvalid, 'target_host must not be empty', 'target_host');
        if (!isPort(next.target_port)) throw new RuleViolationError(DOMAIN_ERRORS.mappingInvalid, 'target_port must be 1-65535', 'target_port');
        if (next.enabled === m.enabled && next.target_host === m.target_host && next.target_port === m.target_port) return [];
        return [{ type: 'MappingUpdated', data: next }];
      }
    }
  },
};

import type { DomainEvent, TypedStoredEvent } from '../../contracts/events.js';
import { isAnonymousClientId, isManagedClientId } from '../../contracts/ids.js';
import type { Decider } from '../decider.js';
import { DomainError, NotFoundError } from '../../platform/errors.js';
import { DOMAIN_ERRORS, RuleViolationError } from '../errors.js';

/**
 * Stream `client.<client_id>`: identity, ownership and credentials (enabled, auth code hash,
 * revocations). Session facts (connect/disconnect) live
 * in `client-session.<client_id>` (client-session.decider.ts) so this stream stays small and a
 * reconnect storm never contends with management commands.
 */
export type ClientType = 'managed' | 'anonymous';

export type RegisterClient = {
  readonly type: 'RegisterClient';
  readonly data: {
    readonly client_id: number;
    readonly client_type: ClientType;
    readonly user_id: number | null;
    readonly client_name: string;
    readonly client_desc?: string;
    readonly auth_code_hash: string;
  };
};
/** The revocations and their undo (enable); each names only the client. */
export type DisableClient = { readonly type: 'DisableClient'; readonly data: { readonly client_id: number } };
export type EnableClient = { readonly type: 'EnableClient'; readonly data: { readonly client_id: number } };
export type RotateClientAuthCode = {
  readonly type: 'RotateClientAuthCode';
  /** hashSecret() of the new code, made by the command service (the decider stays pure). */
  readonly data: { readonly client_id: number; readonly auth_code_hash: string };
};
export type KickClient = { readonly type: 'KickClient'; readonly data: { readonly client_id: number } };
export type DeleteClient = { readonly type: 'DeleteClient'; readonly data: { readonly client_id: number } };
/** A new display name; renaming to the current name decides nothing. */
export type RenameClient = { readonly type: 'RenameClient'; readonly data: { readonly client_id: number; readonly client_name: string } };
/**
 * An anonymous client inactive for the TTL is removed (the expiry sweeper decides "inactive" from
 * the client's session stream, which this aggregate does not hold; the decider checks the rest).
 */
export type ExpireClient = {
  readonly type: 'ExpireClient';
  readonly data: { readonly client_id: number; readonly inactive_since: string; readonly ttl_seconds: number };
};
export type ClientCommand = RegisterClient | DisableClient | EnableClient | RotateClientAuthCode | KickClient | DeleteClient | RenameClient | ExpireClient;

export type ClientState =
  /** `deleted`: the client existed; its id stays taken. `userId`: its owner then (cascades finish with it). */
  | { readonly exists: false; readonly deleted?: true; readonly userId?: number | null }
  | {
      readonly exists: true;
      readonly clientId: number;
      readonly clientType: ClientType;
      readonly userId: number | null;
      readonly clientName: string;
      readonly enabled: boolean;
    };

export const clientDecider: Decider<ClientState, ClientCommand> = {
  initialState: () => ({ exists: false }),
  evolve: (state, event: TypedStoredEvent): ClientState => {
    switch (event.type) {
      case 'ClientRegistered':
        return {
          exists: true,
          clientId: event.data.client_id,
          clientType: event.data.client_type,
          userId: event.data.user_id,
          clientName: event.data.client_name,
          enabled: true,
        };
      case 'ClientDisabled':
        return state.exists ? { ...state, enabled: false } : state;
      case 'ClientEnabled':
        return state.exists ? { ...state, enabled: true } : state;
      case 'ClientRenamed':
        return state.exists ? { ...state, clientName: event.data.client_name } : state;
      case 'ClientDeleted':
      case 'ClientExpired':
        return { exists: false, deleted: true, userId: state.exists ? state.userId : null };
      default:
        return state;
    }
  },
  decide: (command, state): DomainEvent[] => {
    if (command.type !== 'RegisterClient') return decideOnExisting(command, state);
    const d = command.data;
    if (state.exists) throw new DomainError(DOMAIN_ERRORS.clientAlreadyExists, `client ${d.client_id} already exists`);
    if (state.deleted) throw new DomainError(DOMAIN_ERRORS.clientAlreadyExists, `client ${d.client_id} was deleted; its id is not reused`);
    if (d.client_type === 'managed') {
      if (!isManagedClientId(d.client_id)) {
        throw new RuleViolationError(DOMAIN_ERRORS.clientInvalid, `${d.client_id} is not a managed client id`, 'client_id');
      }
      if (d.user_id === null) throw new RuleViolationError(DOMAIN_ERRORS.clientInvalid, 'a managed client needs an owner', 'user_id');
    } else {
      if (!isAnonymousClientId(d.client_id)) {
        throw new RuleViolationError(DOMAIN_ERRORS.clientInvalid, `${d.client_id} is not an anonymous client id`, 'client_id');
      }
      if (d.user_id !== null) throw new RuleViolationError(DOMAIN_ERRORS.clientInvalid, 'an anonymous client has no owner', 'user_id');
    }
    if (d.auth_code_hash.length === 0) {
      throw new RuleViolationError(DOMAIN_ERRORS.clientInvalid, 'auth code hash must not be empty', 'auth_code_hash');
    }
    return [
      {
        type: 'ClientRegistered',
        data: {
          client_id: d.client_id,
          client_type: d.client_type,
          user_id: d.user_id,
          client_name: d.client_name,
          ...(d.client_desc === undefined ? {} : { client_desc: d.client_desc }),
          auth_code_hash: d.auth_code_hash,
        },
      },
    ];
  },
};

/**
 * Commands on a registered client. Disabling a disabled client or enabling an enabled one decides
 * nothing (a retried request changes nothing twice); a kick or a rotation always happens.
 */
function decideOnExisting(command: Exclude<ClientCommand, RegisterClient>, state: ClientState): DomainEvent[] {
  const client_id = command.data.client_id;
  if (!state.exists) throw new NotFoundError(DOMAIN_ERRORS.clientNotFound, `client ${client_id} not found`);
  switch (command.type) {
    case 'DisableClient':
      return state.enabled ? [{ type: 'ClientDisabled', data: { client_id } }] : [];
    case 'EnableClient':
      return state.enabled ? [] : [{ type: 'ClientEnabled', data: { client_id } }];
    case 'RotateClientAuthCode':
      if (command.data.auth_code_hash.length === 0) {
        throw new RuleViolationError(DOMAIN_ERRORS.clientInvalid, 'auth code hash must not be empty', 'auth_code_hash');
      }
      return [{ type: 'ClientAuthCodeRotated', data: { client_id, auth_code_hash: command.data.auth_code_hash } }];
    case 'KickClient':
      return [{ type: 'ClientKicked', data: { client_id } }];
    case 'DeleteClient':
      return [{ type: 'ClientDeleted', data: { client_id } }];
    case 'ExpireClient': {
      const { inactive_since, ttl_seconds } = command.data;
      if (state.clientType !== 'anonymous') {
        throw new RuleViolationError(DOMAIN_ERRORS.clientInvalid, `client ${client_id} is managed; only anonymous clients expire`, 'client_id');
      }
      if (!Number.isInteger(ttl_seconds) || ttl_seconds <= 0) {
        throw new RuleViolationError(DOMAIN_ERRORS.clientInvalid, 'ttl_seconds must be a positive integer', 'ttl_seconds');
      }
      if (Number.isNaN(Date.parse(inactive_since))) {
        throw new RuleViolationError(DOMAIN_ERRORS.clientInvalid, 'inactive_since must be an ISO 8601 time', 'inactive_since');
      }
      return [{ type: 'ClientExpired', data: { client_id, inactive_since, ttl_seconds } }];
    }
    case 'RenameClient': {
      const name = command.data.client_name;
      if (name.length === 0) throw new RuleViolationError(DOMAIN_ERRORS.clientInvalid, 'client_name must not be empty', 'client_name');
      return name === state.clientName ? [] : [{ type: 'ClientRenamed', data: { client_id, client_name: name } }];
    }
  }
}

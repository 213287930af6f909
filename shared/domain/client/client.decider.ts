import type { DomainEvent, TypedStoredEvent } from '../../contracts/events.js';
import { isAnonymousClientId, isManagedClientId } from '../../contracts/ids.js';
import type { Decider } from '../decider.js';
import { DomainError } from '../../platform/errors.js';
import { DOMAIN_ERRORS, RuleViolationError } from '../errors.js';

/**
 * Stream `client.<client_id>`: identity and ownership only. Session facts (connect/disconnect) live
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
export type ClientCommand = RegisterClient;

export type ClientState =
  | { readonly exists: false }
  | {
      readonly exists: true;
      readonly clientId: number;
      readonly clientType: ClientType;
      readonly userId: number | null;
      readonly clientName: string;
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
        };
      default:
        return state;
    }
  },
  decide: (command, state): DomainEvent[] => {
    const d = command.data;
    if (state.exists) throw new DomainError(DOMAIN_ERRORS.clientAlreadyExists, `client ${d.client_id} already exists`);
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

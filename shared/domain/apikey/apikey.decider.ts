import type { DomainEvent, TypedStoredEvent } from '../../contracts/events.js';
import type { Decider } from '../decider.js';
import { DomainError, NotFoundError } from '../../platform/errors.js';
import { DOMAIN_ERRORS } from '../errors.js';

/** Stream `apikey.<apikey_id>`: one admin API key; its state is a function of the last event. */
export type ApiKeyState =
  | { readonly status: 'none' }
  | { readonly status: 'active' | 'revoked'; readonly keyId: string; readonly name: string; readonly keyHash: string; readonly createdAt: string };

export type CreateApiKey = {
  readonly type: 'CreateApiKey';
  readonly data: { readonly apikey_id: string; readonly name: string; readonly key_hash: string };
};
export type RevokeApiKey = { readonly type: 'RevokeApiKey'; readonly data: { readonly apikey_id: string; readonly reason?: string } };
export type ApiKeyCommand = CreateApiKey | RevokeApiKey;

export const apiKeyDecider: Decider<ApiKeyState, ApiKeyCommand> = {
  initialState: () => ({ status: 'none' }),
  evolve: (state, event: TypedStoredEvent): ApiKeyState => {
    if (event.type === 'ApiKeyCreated') {
      return { status: 'active', keyId: event.data.apikey_id, name: event.data.name, keyHash: event.data.key_hash, createdAt: event.occurred_at };
    }
    if (event.type === 'ApiKeyRevoked' && state.status !== 'none') return { ...state, status: 'revoked' };
    return state;
  },
  decide: (command, state): DomainEvent[] => {
    if (command.type === 'CreateApiKey') {
      // Ids are random (64 bits): a collision is refused, never an overwrite of another key.
      if (state.status !== 'none') throw new DomainError(DOMAIN_ERRORS.apiKeyExists, `API key ${command.data.apikey_id} already exists`);
      return [{ type: 'ApiKeyCreated', data: command.data }];
    }
    if (state.status === 'none') throw new NotFoundError(DOMAIN_ERRORS.apiKeyNotFound, `no API key ${command.data.apikey_id}`);
    if (state.status === 'revoked') return [];
    const { apikey_id, reason } = command.data;
    return [{ type: 'ApiKeyRevoked', data: reason === undefined ? { apikey_id } : { apikey_id, reason } }];
  },
};

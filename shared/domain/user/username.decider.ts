import { createHash } from 'node:crypto';
import type { DomainEvent, TypedStoredEvent } from '../../contracts/events.js';
import type { Decider } from '../decider.js';
import { DomainError } from '../../platform/errors.js';
import { DOMAIN_ERRORS } from '../errors.js';

/**
 * Stream `username.<key>`: who holds a username. `key` is a hash of the lower-cased name, so
 * `John` and `john` are one aggregate (and any character the API admits makes a valid stream
 * name). The state is a function of the last event.
 */
export function usernameKey(username: string): string {
  return createHash('sha256').update(username.toLowerCase(), 'utf8').digest('hex').slice(0, 32);
}

export interface UsernameState {
  readonly heldBy: number | null;
}

/**
 * `vacantHolder`: the command service found that the current holder's user does not exist (its
 * create crashed between the claim and UserCreated); only then may another user take the name.
 */
export type ClaimUsername = {
  readonly type: 'ClaimUsername';
  readonly data: { readonly username: string; readonly user_id: number; readonly vacantHolder?: number };
};
export type ReleaseUsername = { readonly type: 'ReleaseUsername'; readonly data: { readonly username: string; readonly user_id: number } };
export type UsernameCommand = ClaimUsername | ReleaseUsername;

export const usernameDecider: Decider<UsernameState, UsernameCommand> = {
  initialState: () => ({ heldBy: null }),
  evolve: (state, event: TypedStoredEvent): UsernameState => {
    if (event.type === 'UsernameClaimed') return { heldBy: event.data.user_id };
    if (event.type === 'UsernameReleased' && state.heldBy === event.data.user_id) return { heldBy: null };
    return state;
  },
  decide: (command, state): DomainEvent[] => {
    if (command.type === 'ReleaseUsername') {
      // Only the holder releases; anything else is a repeated release (nothing to do).
      return state.heldBy === command.data.user_id ? [{ type: 'UsernameReleased', data: command.data }] : [];
    }
    const { username, user_id, vacantHolder } = command.data;
    if (state.heldBy === user_id) return [];
    if (state.heldBy !== null && state.heldBy !== vacantHolder) {
      throw new DomainError(DOMAIN_ERRORS.usernameTaken, `username ${JSON.stringify(username)} is taken (usernames are unique regardless of case)`, {
        details: { field: 'username' },
      });
    }
    return [{ type: 'UsernameClaimed', data: { username, user_id } }];
  },
};

import type { DomainEvent, TypedStoredEvent } from '../../contracts/events.js';
import { ID_RANGES } from '../../contracts/ids.js';
import type { Decider } from '../decider.js';
import { DomainError, NotFoundError } from '../../platform/errors.js';
import { DOMAIN_ERRORS, RuleViolationError } from '../errors.js';

/** Stream `user.<user_id>`. */
export type CreateUser = {
  readonly type: 'CreateUser';
  readonly data: { readonly user_id: number; readonly username: string; readonly email: string };
};
export type UpdateUser = {
  readonly type: 'UpdateUser';
  readonly data: { readonly user_id: number; readonly username?: string; readonly email?: string };
};
export type DeleteUser = { readonly type: 'DeleteUser'; readonly data: { readonly user_id: number } };
export type UserCommand = CreateUser | UpdateUser | DeleteUser;

export type UserState =
  /** `deleted`: the user existed (its username then, for cascades); its id stays taken. */
  | { readonly exists: false; readonly deleted?: true; readonly username?: string }
  | {
      readonly exists: true;
      readonly userId: number;
      readonly username: string;
      readonly email: string;
      readonly status: 'active' | 'disabled';
    };

export const userDecider: Decider<UserState, UserCommand> = {
  initialState: () => ({ exists: false }),
  evolve: (state, event: TypedStoredEvent): UserState => {
    switch (event.type) {
      case 'UserCreated':
        return { exists: true, userId: event.data.user_id, username: event.data.username, email: event.data.email, status: event.data.status };
      case 'UserUpdated':
        return state.exists ? { ...state, username: event.data.username, email: event.data.email } : state;
      case 'UserDeleted':
        return state.exists ? { exists: false, deleted: true, username: state.username } : state;
      default:
        return state;
    }
  },
  decide: (command, state): DomainEvent[] => {
    if (command.type !== 'CreateUser') {
      const { user_id } = command.data;
      if (!state.exists) throw new NotFoundError(DOMAIN_ERRORS.userNotFound, `user ${user_id} not found`);
      if (command.type === 'DeleteUser') return [{ type: 'UserDeleted', data: { user_id } }];
      const username = command.data.username ?? state.username;
      const email = command.data.email ?? state.email;
      if (!email.includes('@')) throw new RuleViolationError(DOMAIN_ERRORS.userInvalid, 'email must be an address', 'email');
      if (username === state.username && email === state.email) return [];
      return [{ type: 'UserUpdated', data: { user_id, username, email } }];
    }
    const { user_id, username, email } = command.data;
    if ((state as { deleted?: true }).deleted) throw new DomainError(DOMAIN_ERRORS.userAlreadyExists, `user ${user_id} was deleted; its id is not reused`);
    if (state.exists) throw new DomainError(DOMAIN_ERRORS.userAlreadyExists, `user ${user_id} already exists`);
    if (!Number.isInteger(user_id) || user_id < ID_RANGES.user.min || user_id > ID_RANGES.user.max) {
      throw new RuleViolationError(DOMAIN_ERRORS.userInvalid, `user id ${user_id} is outside the user id range`, 'user_id');
    }
    if (username.length === 0) throw new RuleViolationError(DOMAIN_ERRORS.userInvalid, 'username must not be empty', 'username');
    if (!email.includes('@')) throw new RuleViolationError(DOMAIN_ERRORS.userInvalid, 'email must be an address', 'email');
    return [{ type: 'UserCreated', data: { user_id, username, email, status: 'active' } }];
  },
};

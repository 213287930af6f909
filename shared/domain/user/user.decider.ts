import type { DomainEvent, TypedStoredEvent } from '../../contracts/events.js';
import { ID_RANGES } from '../../contracts/ids.js';
import type { Decider } from '../decider.js';
import { DomainError } from '../../platform/errors.js';
import { DOMAIN_ERRORS, RuleViolationError } from '../errors.js';

/** Stream `user.<user_id>`. */
export type CreateUser = {
  readonly type: 'CreateUser';
  readonly data: { readonly user_id: number; readonly username: string; readonly email: string };
};
export type UserCommand = CreateUser;

export type UserState =
  | { readonly exists: false }
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
      default:
        return state;
    }
  },
  decide: (command, state): DomainEvent[] => {
    const { user_id, username, email } = command.data;
    if (state.exists) throw new DomainError(DOMAIN_ERRORS.userAlreadyExists, `user ${user_id} already exists`);
    if (!Number.isInteger(user_id) || user_id < ID_RANGES.user.min || user_id > ID_RANGES.user.max) {
      throw new RuleViolationError(DOMAIN_ERRORS.userInvalid, `user id ${user_id} is outside the user id range`, 'user_id');
    }
    if (username.length === 0) throw new RuleViolationError(DOMAIN_ERRORS.userInvalid, 'username must not be empty', 'username');
    if (!email.includes('@')) throw new RuleViolationError(DOMAIN_ERRORS.userInvalid, 'email must be an address', 'email');
    return [{ type: 'UserCreated', data: { user_id, username, email, status: 'active' } }];
  },
};

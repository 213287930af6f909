import { streamName } from '../../contracts/envelope.js';
import { AGGREGATES } from '../../contracts/events.js';
import { SEQUENCES } from '../../contracts/ids.js';
import { handleCommand, loadAggregate, type CommandMetadata } from '../../eventstore/command.js';
import type { EventStore } from '../../eventstore/types.js';
import { allocateId } from '../sequence/sequence.commands.js';
import { userDecider, type UserState } from './user.decider.js';

export interface CreateUserInput {
  username: string;
  email: string;
}

export interface CreateUserResult {
  userId: number;
  /** Global position of UserCreated: wait for the projection to reach it before reading. */
  position: number;
}

export function userStream(userId: number): string {
  return streamName(AGGREGATES.user, userId);
}

/** Allocates the next user id, then records UserCreated (a crash in between leaves a harmless id gap). */
export async function createUser(store: EventStore, input: CreateUserInput, meta: CommandMetadata): Promise<CreateUserResult> {
  const { id } = await allocateId(store, SEQUENCES.user, meta);
  const res = await handleCommand(
    store,
    userStream(id),
    userDecider,
    { type: 'CreateUser', data: { user_id: id, username: input.username, email: input.email } },
    meta,
  );
  return { userId: id, position: res.position };
}

export async function loadUser(store: EventStore, userId: number): Promise<UserState> {
  return (await loadAggregate(store, userStream(userId), userDecider)).state;
}

import { streamName } from '../../contracts/envelope.js';
import { AGGREGATES } from '../../contracts/events.js';
import { SEQUENCES } from '../../contracts/ids.js';
import { handleCommand, loadAggregate, type CommandMetadata } from '../../eventstore/command.js';
import type { EventStore } from '../../eventstore/types.js';
import { allocateId } from '../sequence/sequence.commands.js';
import { userDecider, type UserState } from './user.decider.js';
import { usernameDecider, usernameKey } from './username.decider.js';
import { setQuota } from '../account/account.commands.js';
import { TIERS, type Quota } from '../account/account.decider.js';
import { DomainError } from '../../platform/errors.js';
import { DOMAIN_ERRORS } from '../errors.js';

export interface CreateUserInput {
  username: string;
  email: string;
  /** The user's quota (POST /users `tier`, else the server's default tier); default unlimited. */
  quota?: Quota;
}

export interface CreateUserResult {
  userId: number;
  /** Global position of UserCreated: wait for the projection to reach it before reading. */
  position: number;
}

export function userStream(userId: number): string {
  return streamName(AGGREGATES.user, userId);
}

export function usernameStream(username: string): string {
  return streamName(AGGREGATES.username, usernameKey(username));
}

/** How old a claim of a user that does not exist must be before another create may take the name. */
const VACANT_CLAIM_AFTER_MS = 5 * 60_000;

/**
 * Claims `username` for `userId` on its own aggregate. A name held by a user id that never came to
 * exist (a create that crashed after its claim, at least VACANT_CLAIM_AFTER_MS ago) is taken over;
 * a live holder, or a create still in flight, is a 409.
 */
async function claimUsername(store: EventStore, username: string, userId: number, meta: CommandMetadata): Promise<void> {
  const stream = usernameStream(username);
  try {
    await handleCommand(store, stream, usernameDecider, { type: 'ClaimUsername', data: { username, user_id: userId } }, meta, { lastEventOnly: true });
  } catch (err) {
    if ((err as { code?: unknown }).code !== DOMAIN_ERRORS.usernameTaken) throw err;
    const { event } = await store.readLastEvent(stream);
    const holder = event?.type === 'UsernameClaimed' ? (event.data as { user_id: number }).user_id : null;
    // A create in flight has claimed but not yet recorded its user: only an old claim is vacant.
    const old = event !== null && Date.now() - Date.parse(event.occurred_at) > VACANT_CLAIM_AFTER_MS;
    if (holder === null || !old || (await loadUser(store, holder)).exists) throw err;
    const state = { heldBy: holder };
    await handleCommand(
      store,
      stream,
      usernameDecider,
      { type: 'ClaimUsername', data: { username, user_id: userId, vacantHolder: state.heldBy } },
      meta,
      { lastEventOnly: true },
    );
  }
}

/**
 * Allocates the next user id, claims the username (unique regardless of case), records
 * UserCreated, then opens the user's account with its quota. A crash after the allocation leaves
 * an id gap; after the claim, a name another create may take over; before the quota, an account
 * that starts on the server's default tier when first used.
 */
export async function createUser(store: EventStore, input: CreateUserInput, meta: CommandMetadata): Promise<CreateUserResult> {
  const { id } = await allocateId(store, SEQUENCES.user, meta);
  await claimUsername(store, input.username, id, meta);
  const res = await handleCommand(
    store,
    userStream(id),
    userDecider,
    { type: 'CreateUser', data: { user_id: id, username: input.username, email: input.email } },
    meta,
  );
  if (!res.event) throw new DomainError(DOMAIN_ERRORS.userAlreadyExists, `user ${id} already exists`);
  await setQuota(store, { userId: id, quota: input.quota ?? TIERS.unlimited }, { ...meta, causationId: res.event.id });
  return { userId: id, position: res.position };
}

export async function loadUser(store: EventStore, userId: number): Promise<UserState> {
  return (await loadAggregate(store, userStream(userId), userDecider)).state;
}

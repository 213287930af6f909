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
import { DomainError, NotFoundError } from '../../platform/errors.js';
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
    await handleCommand(
      store,
      stream,
      usernameDecider,
      { type: 'ClaimUsername', data: { username, user_id: userId, vacantHolder: holder } },
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

async function releaseUsername(store: EventStore, username: string, userId: number, meta: CommandMetadata): Promise<{ position: number }> {
  const res = await handleCommand(
    store,
    usernameStream(username),
    usernameDecider,
    { type: 'ReleaseUsername', data: { username, user_id: userId } },
    meta,
    { lastEventOnly: true },
  );
  return { position: res.position };
}

/**
 * PATCH /users/{id}. A new username is claimed first (409 if taken), then UserUpdated, then the
 * old name is released (caused by UserUpdated). A crash before the release keeps the old name
 * held by this user; the same rename again finishes it.
 */
export async function updateUser(
  store: EventStore,
  input: { userId: number; username?: string; email?: string; expectedVersion?: number },
  meta: CommandMetadata,
): Promise<{ position: number }> {
  const before = await loadUser(store, input.userId);
  if (!before.exists) throw new NotFoundError(DOMAIN_ERRORS.userNotFound, `user ${input.userId} not found`);
  const renamed = input.username !== undefined && input.username.toLowerCase() !== before.username.toLowerCase();
  if (renamed) await claimUsername(store, input.username!, input.userId, meta);
  const res = await handleCommand(
    store,
    userStream(input.userId),
    userDecider,
    {
      type: 'UpdateUser',
      data: { user_id: input.userId, ...(input.username === undefined ? {} : { username: input.username }), ...(input.email === undefined ? {} : { email: input.email }) },
    },
    meta,
    { expectedVersion: input.expectedVersion },
  );
  let position = res.position;
  if (renamed) {
    const cause = res.event ? { causationId: res.event.id } : {};
    position = Math.max(position, (await releaseUsername(store, before.username, input.userId, { ...meta, ...cause })).position);
  }
  return { position };
}

/** Records UserDeleted and frees the username; the clients and mappings go in cascades.ts. */
export async function deleteUserRecord(
  store: EventStore,
  input: { userId: number; expectedVersion?: number },
  meta: CommandMetadata,
): Promise<{ position: number; eventId: string | undefined; username: string | undefined }> {
  const res = await handleCommand(
    store,
    userStream(input.userId),
    userDecider,
    { type: 'DeleteUser', data: { user_id: input.userId } },
    meta,
    { expectedVersion: input.expectedVersion },
  );
  const state = res.state;
  const username = !state.exists && state.deleted ? state.username : undefined;
  let position = res.position;
  if (username !== undefined) {
    position = Math.max(position, (await releaseUsername(store, username, input.userId, { ...meta, ...(res.event ? { causationId: res.event.id } : {}) })).position);
  }
  return { position, eventId: res.event?.id, username };
}

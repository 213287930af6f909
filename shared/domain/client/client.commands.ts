import { randomInt } from 'node:crypto';
import { streamName } from '../../contracts/envelope.js';
import { AGGREGATES } from '../../contracts/events.js';
import { ID_RANGES, SEQUENCES } from '../../contracts/ids.js';
import { commandSecret, handleCommand, loadAggregate, type CommandMetadata } from '../../eventstore/command.js';
import { WrongExpectedRevisionError } from '../../eventstore/errors.js';
import type { EventStore } from '../../eventstore/types.js';
import { hashSecret, randomToken } from '../../platform/secrets.js';
import { NotFoundError } from '../../platform/errors.js';
import { decideAndAppend } from '../append.js';
import { DOMAIN_ERRORS, RuleViolationError } from '../errors.js';
import { allocateId } from '../sequence/sequence.commands.js';
import { loadUser } from '../user/user.commands.js';
import { clientDecider, type ClientCommand, type ClientState, type RegisterClient } from './client.decider.js';
import { clientSessionDecider } from './client-session.decider.js';
import { freeSlot, takeSlot } from '../account/account.commands.js';
import { TIERS, type Quota } from '../account/account.decider.js';

/** Aggregate type of the session-fact streams (`client-session.<client_id>`). */
export const CLIENT_SESSION_AGGREGATE = 'client-session';

/** Prefix of generated auth codes: recognisable in leaked-secret scanners and support tickets. */
export const AUTH_CODE_PREFIX = 'tnxc_';

export function clientStream(clientId: number): string {
  return streamName(AGGREGATES.client, clientId);
}

export function clientSessionStream(clientId: number): string {
  return streamName(CLIENT_SESSION_AGGREGATE, clientId);
}

export async function loadClient(store: EventStore, clientId: number): Promise<ClientState> {
  return (await loadAggregate(store, clientStream(clientId), clientDecider)).state;
}

export interface CreateManagedClientInput {
  userId: number;
  clientName: string;
  clientDesc?: string;
  /** The quota of a user whose account has no event yet (the server's default tier); default unlimited. */
  defaultQuota?: Quota;
}

export interface CreateManagedClientResult {
  clientId: number;
  /** The only time the auth code exists in clear: only its scrypt hash is stored. */
  authCode: string;
  position: number;
}

/**
 * Registers a managed client for an existing user. The id comes from the managed-client sequence;
 * a crash between allocation and registration leaves an unused id (acceptable gap).
 */
export async function createManagedClient(
  store: EventStore,
  input: CreateManagedClientInput,
  meta: CommandMetadata,
): Promise<CreateManagedClientResult> {
  const owner = await loadUser(store, input.userId);
  if (!owner.exists) throw new RuleViolationError(DOMAIN_ERRORS.userNotFound, `user ${input.userId} does not exist`, 'user_id');
  const authCode = await commandSecret(meta, 'auth_code', () => randomToken(AUTH_CODE_PREFIX));
  const authCodeHash = await hashSecret(authCode);
  const { id } = await allocateId(store, SEQUENCES.managedClient, meta);
  // The quota is decided on the user's account aggregate: parallel creates cannot overshoot it.
  await takeSlot(store, { userId: input.userId, kind: 'client', id, defaultQuota: input.defaultQuota ?? TIERS.unlimited }, meta);
  let res;
  try {
    res = await handleCommand(
      store,
      clientStream(id),
      clientDecider,
      {
        type: 'RegisterClient',
        data: {
          client_id: id,
          client_type: 'managed',
          user_id: input.userId,
          client_name: input.clientName,
          ...(input.clientDesc === undefined ? {} : { client_desc: input.clientDesc }),
          auth_code_hash: authCodeHash,
        },
      },
      meta,
    );
  } catch (err) {
    // Compensation, best effort (the original failure is what the caller sees): give the slot back
    // unless the registration was stored after all (a timed-out append).
    await loadClient(store, id)
      .then((state) => (state.exists ? undefined : freeSlot(store, { userId: input.userId, kind: 'client', id }, meta)))
      .catch(() => undefined);
    throw err;
  }
  return { clientId: id, authCode, position: res.position };
}

/** What a client command did: `changed` is false when it decided nothing (already so). */
export interface ClientCommandResult {
  changed: boolean;
  /** Envelope id of the appended event, when one was (causation of cascades). */
  eventId?: string;
  /** Position of the appended event, or of the stream's last event when nothing changed. */
  position: number;
}

/** What a client command may require: the version the caller last saw (If-Match). */
export interface ClientCommandInput {
  clientId: number;
  expectedVersion?: number;
}

async function onClient(
  store: EventStore,
  command: Exclude<ClientCommand, RegisterClient>,
  meta: CommandMetadata,
  expectedVersion?: number,
): Promise<ClientCommandResult> {
  const res = await handleCommand(store, clientStream(command.data.client_id), clientDecider, command, meta, { expectedVersion });
  return { changed: res.event !== null, position: res.position };
}

/**
 * Disable, enable, kick and delete a client. Disabling, kicking and deleting (like rotating the
 * auth code) revoke its session tokens and end its live session at every edge; only an auth code
 * login of an enabled client starts a new one.
 */
export function disableClient(store: EventStore, input: ClientCommandInput, meta: CommandMetadata): Promise<ClientCommandResult> {
  return onClient(store, { type: 'DisableClient', data: { client_id: input.clientId } }, meta, input.expectedVersion);
}
export function enableClient(store: EventStore, input: ClientCommandInput, meta: CommandMetadata): Promise<ClientCommandResult> {
  return onClient(store, { type: 'EnableClient', data: { client_id: input.clientId } }, meta, input.expectedVersion);
}
export function kickClient(store: EventStore, input: ClientCommandInput, meta: CommandMetadata): Promise<ClientCommandResult> {
  return onClient(store, { type: 'KickClient', data: { client_id: input.clientId } }, meta, input.expectedVersion);
}
/**
 * Deletes a client, then (a cascade, caused by ClientDeleted) frees its slot in its user's quota.
 * A crash in between leaves the slot taken; deleting the client again finishes that before
 * answering "not found" as usual.
 */
export async function deleteClient(store: EventStore, input: ClientCommandInput, meta: CommandMetadata): Promise<ClientCommandResult> {
  let res;
  try {
    res = await handleCommand(store, clientStream(input.clientId), clientDecider, { type: 'DeleteClient', data: { client_id: input.clientId } }, meta, {
      expectedVersion: input.expectedVersion,
    });
  } catch (err) {
    if (err instanceof NotFoundError) {
      const state = await loadClient(store, input.clientId);
      if (!state.exists && state.deleted && state.userId) await freeSlot(store, { userId: state.userId, kind: 'client', id: input.clientId }, meta);
    }
    throw err;
  }
  const deleted = res.state;
  let position = res.position;
  if (!deleted.exists && deleted.userId) {
    const causation = res.event ? { causationId: res.event.id } : {};
    position = Math.max(position, (await freeSlot(store, { userId: deleted.userId, kind: 'client', id: input.clientId }, { ...meta, ...causation })).position);
  }
  return { changed: res.event !== null, position, ...(res.event ? { eventId: res.event.id } : {}) };
}

export function renameClient(store: EventStore, input: ClientCommandInput & { clientName: string }, meta: CommandMetadata): Promise<ClientCommandResult> {
  return onClient(store, { type: 'RenameClient', data: { client_id: input.clientId, client_name: input.clientName } }, meta, input.expectedVersion);
}

/** Issues a new auth code for the client; the old one stops working. The new code is returned once. */
export async function rotateClientAuthCode(
  store: EventStore,
  input: { clientId: number },
  meta: CommandMetadata,
): Promise<{ authCode: string; position: number }> {
  const authCode = await commandSecret(meta, 'auth_code', () => randomToken(AUTH_CODE_PREFIX));
  const { position } = await onClient(
    store,
    { type: 'RotateClientAuthCode', data: { client_id: input.clientId, auth_code_hash: await hashSecret(authCode) } },
    meta,
  );
  return { authCode, position };
}

/** With 10^8 anonymous ids a collision is rare; several in a row means something is wrong. */
const ANONYMOUS_ID_ATTEMPTS = 8;

export interface RegisterAnonymousClientInput {
  /** hashSecret() of the auth code the edge generated and handed to the agent. */
  authCodeHash: string;
  clientName?: string;
}

/**
 * Registers an anonymous client under a random id in 200000000–299999999. The append is
 * create-if-absent ('no_stream'); on a collision another random id is tried.
 */
export async function registerAnonymousClient(
  store: EventStore,
  input: RegisterAnonymousClientInput,
  meta: CommandMetadata,
): Promise<{ clientId: number; position: number }> {
  for (let attempt = 0; attempt < ANONYMOUS_ID_ATTEMPTS; attempt++) {
    const clientId = randomInt(ID_RANGES.anonymousClient.min, ID_RANGES.anonymousClient.max + 1);
    try {
      const res = await decideAndAppend(
        store,
        clientStream(clientId),
        clientDecider,
        clientDecider.initialState(),
        {
          type: 'RegisterClient',
          data: {
            client_id: clientId,
            client_type: 'anonymous',
            user_id: null,
            client_name: input.clientName ?? `anonymous-${clientId}`,
            auth_code_hash: input.authCodeHash,
          },
        },
        meta,
        'no_stream',
      );
      if (!res) throw new Error('client decider decided nothing for RegisterClient');
      return { clientId, position: res.position };
    } catch (err) {
      if (err instanceof WrongExpectedRevisionError) continue;
      throw err;
    }
  }
  throw new RuleViolationError(DOMAIN_ERRORS.anonymousIdsExhausted, `no free anonymous client id after ${ANONYMOUS_ID_ATTEMPTS} random picks`);
}

/** Session facts go to `client-session.<id>` with no revision check (see client-session.decider.ts). */
async function appendSessionFact(
  store: EventStore,
  clientId: number,
  command: Parameters<typeof clientSessionDecider.decide>[0],
  meta: CommandMetadata,
): Promise<{ position: number }> {
  const stream = clientSessionStream(clientId);
  const res = await decideAndAppend(store, stream, clientSessionDecider, clientSessionDecider.initialState(), command, meta, 'any');
  if (!res) throw new Error(`client-session decider decided nothing for ${command.type}`);
  return res;
}

/** Records that an edge accepted a control session for the client. */
export function recordClientConnected(
  store: EventStore,
  input: { clientId: number; nodeId: string; sessionId: string; remoteAddr: string },
  meta: CommandMetadata,
): Promise<{ position: number }> {
  return appendSessionFact(store, input.clientId, {
    type: 'RecordClientConnected',
    data: { client_id: input.clientId, node_id: input.nodeId, session_id: input.sessionId, remote_addr: input.remoteAddr },
  }, meta);
}

/** Records that a control session ended (closed, replaced by a re-login, timed out, node drained). */
export function recordClientDisconnected(
  store: EventStore,
  input: { clientId: number; nodeId: string; sessionId: string; reason: string },
  meta: CommandMetadata,
): Promise<{ position: number }> {
  return appendSessionFact(store, input.clientId, {
    type: 'RecordClientDisconnected',
    data: { client_id: input.clientId, node_id: input.nodeId, session_id: input.sessionId, reason: input.reason },
  }, meta);
}

export interface ExpireAnonymousClientInput {
  clientId: number;
  /** How long the client must have been inactive (`--anonymous-ttl`), in whole seconds. */
  ttlSeconds: number;
  /** The sweeper's clock; default now. */
  now?: Date;
}

export type ExpireAnonymousClientResult =
  | { expired: true; position: number; eventId: string; inactiveSince: string; causationId: string }
  /** online: its session stream ends with a connect; active: inactive for less than the TTL; gone: no such client (any more). */
  | { expired: false; reason: 'online' | 'active' | 'gone' };

/**
 * The expiry process manager's command (services/projector/expiry.ts): records ClientExpired for
 * an anonymous client whose last activity is older than the TTL. Activity is read from the event
 * log, not from a read model: the last event of the client's session stream (a ClientDisconnected:
 * inactive since then; a ClientConnected: online, never expired), or, for a client that never
 * connected, its ClientRegistered. That event is the causation of ClientExpired. A second sweeper
 * racing for the same client finds it gone (the decider refuses an expired client as not found).
 *
 * An agent that logs in between the read of its session stream and the append is logged out again
 * by the expiry (its edges see the client deleted), like any deleted client's; after 30 idle days
 * that race is a theoretical one.
 */
export async function expireAnonymousClient(
  store: EventStore,
  input: ExpireAnonymousClientInput,
  meta: CommandMetadata,
): Promise<ExpireAnonymousClientResult> {
  const now = (input.now ?? new Date()).getTime();
  const { event: lastSession } = await store.readLastEvent(clientSessionStream(input.clientId));
  if (lastSession?.type === 'ClientConnected') return { expired: false, reason: 'online' };
  const since = lastSession ?? (await store.readStream(clientStream(input.clientId), { limit: 1 })).events[0];
  if (!since) return { expired: false, reason: 'gone' };
  if (now - Date.parse(since.occurred_at) < input.ttlSeconds * 1000) return { expired: false, reason: 'active' };
  try {
    const res = await handleCommand(
      store,
      clientStream(input.clientId),
      clientDecider,
      { type: 'ExpireClient', data: { client_id: input.clientId, inactive_since: since.occurred_at, ttl_seconds: input.ttlSeconds } },
      { ...meta, causationId: since.id },
    );
    if (!res.event) return { expired: false, reason: 'gone' };
    return { expired: true, position: res.position, eventId: res.event.id, inactiveSince: since.occurred_at, causationId: since.id };
  } catch (err) {
    if (err instanceof NotFoundError) return { expired: false, reason: 'gone' };
    throw err;
  }
}

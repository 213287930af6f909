import type { CommandMetadata } from '../eventstore/command.js';
import type { EventStore } from '../eventstore/types.js';
import { loadAccount } from './account/account.commands.js';
import { deleteClient, loadClient } from './client/client.commands.js';
import { DOMAIN_ERRORS } from './errors.js';
import { deleteMapping, loadMapping } from './mapping/mapping.commands.js';
import { deleteUserRecord, loadUser } from './user/user.commands.js';

/**
 * DELETE /clients/{id}: records ClientDeleted (which ends the agent's session and revokes its
 * session tokens at every edge), frees its quota slot, then deletes every mapping the client is
 * the source or the target of: a mapping without one of its ends can never carry a tunnel. Each
 * cascaded event names ClientDeleted as its causation. The user's mappings are found on its
 * account aggregate, not in a read model. A crash part-way leaves some mappings; deleting the
 * client again (a 404 as usual) finishes the cascade first.
 */
export async function deleteClientAndItsMappings(
  store: EventStore,
  input: { clientId: number; expectedVersion?: number },
  meta: CommandMetadata,
): Promise<{ position: number; deletedMappings: number[] }> {
  let position: number;
  let causationId: string | undefined;
  try {
    const res = await deleteClient(store, input, meta);
    position = res.position;
    causationId = res.eventId;
  } catch (err) {
    if ((err as { code?: unknown }).code === DOMAIN_ERRORS.clientNotFound) await cascade(store, input.clientId, meta).catch(() => undefined);
    throw err;
  }
  const done = await cascade(store, input.clientId, causationId ? { ...meta, causationId } : meta);
  return { position: Math.max(position, done.position), deletedMappings: done.deleted };
}

async function cascade(store: EventStore, clientId: number, meta: CommandMetadata): Promise<{ position: number; deleted: number[] }> {
  const state = await loadClient(store, clientId);
  const userId = state.exists ? state.userId : (state.userId ?? null);
  if (userId === null) return { position: 0, deleted: [] };
  const account = await loadAccount(store, userId);
  let position = 0;
  const deleted: number[] = [];
  for (const mappingId of account.mappings) {
    const m = await loadMapping(store, mappingId);
    if (m.status !== 'active') continue;
    if (m.mapping.source_client_id !== clientId && m.mapping.target_client_id !== clientId) continue;
    try {
      position = Math.max(position, (await deleteMapping(store, { mappingId }, meta)).position);
      deleted.push(mappingId);
    } catch (err) {
      // Deleted meanwhile by someone else: that is the outcome we want.
      if ((err as { code?: unknown }).code !== DOMAIN_ERRORS.mappingNotFound) throw err;
    }
  }
  return { position, deleted };
}

/**
 * DELETE /users/{id}: UserDeleted (the username is freed with it), then, caused by it, every
 * client of the user (each with its own cascade: its mappings) and any mapping left. Found on
 * the user's account aggregate. A crash part-way leaves some; deleting the user again (a 404 as
 * usual) finishes first.
 */
export async function deleteUserAndEverything(
  store: EventStore,
  input: { userId: number; expectedVersion?: number },
  meta: CommandMetadata,
): Promise<{ position: number }> {
  let position: number;
  let cascadeMeta = meta;
  try {
    const res = await deleteUserRecord(store, input, meta);
    position = res.position;
    if (res.eventId) cascadeMeta = { ...meta, causationId: res.eventId };
  } catch (err) {
    if ((err as { code?: unknown }).code === DOMAIN_ERRORS.userNotFound && isDeleted(await loadUser(store, input.userId))) {
      await userCascade(store, input.userId, meta);
    }
    throw err;
  }
  return { position: Math.max(position, await userCascade(store, input.userId, cascadeMeta)) };
}

async function userCascade(store: EventStore, userId: number, meta: CommandMetadata): Promise<number> {
  let position = 0;
  const account = await loadAccount(store, userId);
  for (const clientId of account.clients) {
    try {
      position = Math.max(position, (await deleteClientAndItsMappings(store, { clientId }, meta)).position);
    } catch (err) {
      if ((err as { code?: unknown }).code !== DOMAIN_ERRORS.clientNotFound) throw err;
    }
  }
  for (const mappingId of (await loadAccount(store, userId)).mappings) {
    try {
      position = Math.max(position, (await deleteMapping(store, { mappingId }, meta)).position);
    } catch (err) {
      if ((err as { code?: unknown }).code !== DOMAIN_ERRORS.mappingNotFound) throw err;
    }
  }
  return position;
}

function isDeleted(state: { exists: boolean; deleted?: true }): boolean {
  return !state.exists && state.deleted === true;
}

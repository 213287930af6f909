import { createHash, randomBytes } from 'node:crypto';
import { streamName } from '../../contracts/envelope.js';
import { AGGREGATES, API_KEY_ID } from '../../contracts/events.js';
import { handleCommand, type CommandMetadata } from '../../eventstore/command.js';
import type { EventStore } from '../../eventstore/types.js';
import { apiKeyDecider } from './apikey.decider.js';

/**
 * Admin API keys kept in the event log: `tnx_<apikey_id>_<secret>`, apikey_id 16 hex digits (public: it
 * names the key in listings and as the actor of every event the key issues), secret 32 random bytes
 * in base64url. Only the SHA-256 of the whole key is recorded.
 */
export const API_KEY_PATTERN = /^tnx_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;

export function apiKeyStream(keyId: string): string {
  return streamName(AGGREGATES.apiKey, keyId);
}

export function hashApiKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

/** The key id of a presented key in the `tnx_` format, or null. */
export function parseApiKeyId(key: string): string | null {
  return API_KEY_PATTERN.exec(key)?.[1] ?? null;
}

function newKeyId(): string {
  for (;;) {
    const id = randomBytes(8).toString('hex');
    // An all-digit id would read as a decimal aggregate id in `<aggregate>:<id>` references.
    if (!/^[0-9]+$/.test(id) && API_KEY_ID.test(id)) return id;
  }
}

export interface CreatedApiKey {
  keyId: string;
  /** The key itself: shown once, never stored. */
  key: string;
  position: number;
}

export async function createApiKey(store: EventStore, input: { name: string }, meta: CommandMetadata): Promise<CreatedApiKey> {
  const keyId = newKeyId();
  const key = `tnx_${keyId}_${randomBytes(32).toString('base64url')}`;
  const res = await handleCommand(
    store,
    apiKeyStream(keyId),
    apiKeyDecider,
    { type: 'CreateApiKey', data: { apikey_id: keyId, name: input.name, key_hash: hashApiKey(key) } },
    meta,
  );
  return { keyId, key, position: res.position };
}

/** Revokes a key (NotFound if there is none); revoking a revoked key appends nothing. */
export async function revokeApiKey(
  store: EventStore,
  input: { keyId: string; reason?: string },
  meta: CommandMetadata,
): Promise<{ position: number; revoked: boolean }> {
  const res = await handleCommand(
    store,
    apiKeyStream(input.keyId),
    apiKeyDecider,
    { type: 'RevokeApiKey', data: input.reason === undefined ? { apikey_id: input.keyId } : { apikey_id: input.keyId, reason: input.reason } },
    meta,
  );
  return { position: res.position, revoked: res.event !== null };
}

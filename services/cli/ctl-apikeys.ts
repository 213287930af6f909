import type { Actor } from '../../shared/contracts/envelope.js';
import { API_KEY_ID } from '../../shared/contracts/events.js';
import type { Db } from '../../shared/db/connect.js';
import { createApiKey, revokeApiKey } from '../../shared/domain/apikey/apikey.commands.js';
import type { EventStore } from '../../shared/eventstore/types.js';
import { readCheckpoint } from '../projector/checkpoints.js';
import { READ_MODEL_PROJECTION } from '../projector/readModels.js';
import { CtlError } from './ctl-errors.js';

// `tunnox ctl apikeys create|list|revoke`: admin API keys kept in the event log. The API accepts a
// key as soon as its ApiKeyCreated is stored and refuses it within a second of its ApiKeyRevoked
// (services/api/apikeys.ts); the list is the `api_keys` read model.

export interface CreatedKey {
  apikey_id: string;
  name: string;
  /** Shown once: only its SHA-256 is recorded. */
  key: string;
  position: number;
}

export async function ctlCreateApiKey(store: EventStore, name: string, actor: Actor): Promise<CreatedKey> {
  const created = await createApiKey(store, { name }, { actor });
  return { apikey_id: created.keyId, name, key: created.key, position: created.position };
}

export async function ctlRevokeApiKey(
  store: EventStore,
  keyId: string,
  reason: string,
  actor: Actor,
): Promise<{ apikey_id: string; revoked: boolean; position: number }> {
  if (!API_KEY_ID.test(keyId)) throw new CtlError('TNX_CTL_BAD_ARGUMENT', `${JSON.stringify(keyId)} is not an API key id (16 hex digits, as \`apikeys list\` shows)`);
  const res = await revokeApiKey(store, { keyId, reason }, { actor });
  return { apikey_id: keyId, revoked: res.revoked, position: res.position };
}

export interface ListedKey {
  apikey_id: string;
  name: string;
  status: 'active' | 'revoked';
  created_by: string;
  created_at: string;
  revoked_at: string | null;
  revoke_reason: string | null;
}

export interface KeyList {
  keys: ListedKey[];
  /** Log events the read models have not projected yet (keys made since then are missing). */
  behind: number;
}

export async function ctlListApiKeys(store: EventStore, db: Db, opts: { all: boolean }): Promise<KeyList> {
  let q = db.selectFrom('api_keys').selectAll().orderBy('created_at').orderBy('apikey_id');
  if (!opts.all) q = q.where('status', '=', 'active');
  const rows = await q.execute();
  const [checkpoint, head] = await Promise.all([readCheckpoint(db, READ_MODEL_PROJECTION), store.headPosition()]);
  return {
    keys: rows.map((r) => ({
      apikey_id: r.apikey_id,
      name: r.name,
      status: r.status,
      created_by: r.created_by,
      created_at: new Date(r.created_at).toISOString(),
      revoked_at: r.revoked_at === null ? null : new Date(r.revoked_at).toISOString(),
      revoke_reason: r.revoke_reason,
    })),
    behind: Math.max(0, head - checkpoint),
  };
}

export function formatKeyList(list: KeyList): string[] {
  const lines = list.keys.map(
    (k) => `${k.apikey_id}  ${k.status.padEnd(7)}  ${k.created_at}  ${k.name}${k.status === 'revoked' ? `  (revoked ${k.revoked_at}${k.revoke_reason ? `: ${k.revoke_reason}` : ''})` : ''}`,
  );
  if (lines.length === 0) lines.push('no API keys (tunnox ctl apikeys create --name NAME)');
  return lines;
}

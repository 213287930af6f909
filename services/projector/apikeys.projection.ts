import type { Projection } from './projection.js';

/** `api_keys`: the admin API keys of `tunnox ctl apikeys list` (no key or digest, see migration 0007). */
export const apiKeysProjection: Projection = {
  name: 'api_keys',
  version: 1,
  handlers: {
    async ApiKeyCreated(tx, event) {
      const d = event.data;
      await tx
        .insertInto('api_keys')
        .values({
          apikey_id: d.apikey_id,
          name: d.name,
          status: 'active',
          created_by: `${event.actor.kind}:${event.actor.id}`,
          created_at: event.occurred_at,
          revoked_at: null,
          revoke_reason: null,
          version: event.version,
        })
        .onConflict((oc) => oc.column('apikey_id').doNothing())
        .execute();
    },
    async ApiKeyRevoked(tx, event) {
      await tx
        .updateTable('api_keys')
        .set({ status: 'revoked', revoked_at: event.occurred_at, revoke_reason: event.data.reason ?? null, version: event.version })
        .where('apikey_id', '=', event.data.apikey_id)
        .execute();
    },
  },
};

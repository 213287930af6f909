import type { StoredEvent } from '../../shared/contracts/envelope.js';
import type { ClientUpdate } from '../../shared/db/schema.js';
import type { DbTx } from '../../shared/db/connect.js';
import type { Projection, ProjectionContext } from './projection.js';

/**
 * Clients and their online state. Session facts live in `client-session.<id>` streams, separate
 * from the client aggregate, so they never touch `version` or `updated_at` (those follow the
 * client aggregate's own events).
 */
export const clientsProjection: Projection = {
  name: 'clients',
  version: 2,
  handlers: {
    async ClientRegistered(tx, event) {
      const d = event.data;
      await tx
        .insertInto('clients')
        .values({
          client_id: d.client_id,
          client_type: d.client_type,
          user_id: d.user_id,
          client_name: d.client_name,
          auth_code_hash: d.auth_code_hash,
          status: 'offline',
          node_id: null,
          session_id: null,
          last_seen_at: null,
          config_version: event.position,
          version: event.version,
          created_at: event.occurred_at,
          updated_at: event.occurred_at,
        })
        .onConflict((oc) => oc.column('client_id').doNothing())
        .execute();
    },

    // Credentials. Each moves config_version (what the edges' feeds watch) to the event's position;
    // the revocations also set auth_epoch to the event's stream version, which only grows, so a
    // session token issued before any of them carries an epoch the client no longer has.
    async ClientDisabled(tx, event, ctx) {
      await updateCredentials(tx, event, ctx, { enabled: false, auth_epoch: event.version });
    },
    async ClientEnabled(tx, event, ctx) {
      await updateCredentials(tx, event, ctx, { enabled: true });
    },
    async ClientAuthCodeRotated(tx, event, ctx) {
      await updateCredentials(tx, event, ctx, { auth_code_hash: event.data.auth_code_hash, auth_epoch: event.version });
    },
    async ClientRenamed(tx, event) {
      // Not a credential: config_version (what edge feeds watch) stays.
      await tx
        .updateTable('clients')
        .set({ client_name: event.data.client_name, version: event.version, updated_at: event.occurred_at })
        .where('client_id', '=', event.data.client_id)
        .where('deleted_at', 'is', null)
        .execute();
    },
    async ClientKicked(tx, event, ctx) {
      await updateCredentials(tx, event, ctx, { auth_epoch: event.version });
    },
    async ClientDeleted(tx, event, ctx) {
      await updateCredentials(tx, event, ctx, { auth_epoch: event.version, deleted_at: event.occurred_at });
    },
    async ClientExpired(tx, event, ctx) {
      // A tombstone like a deleted client's (the edges' feeds must see the client go, and its id
      // stays taken), without the credential: nothing can ever log in with it again.
      await updateCredentials(tx, event, ctx, { auth_epoch: event.version, deleted_at: event.occurred_at, auth_code_hash: EXPIRED_HASH });
    },

    async ClientConnected(tx, event, ctx) {
      const d = event.data;
      // The latest connect wins: events arrive in position order, so a replacing session's
      // connect always comes after the session it replaces.
      const res = await tx
        .updateTable('clients')
        .set({ status: 'online', node_id: d.node_id, session_id: d.session_id, last_seen_at: event.occurred_at })
        .where('client_id', '=', d.client_id)
        .executeTakeFirst();
      if (res.numUpdatedRows === 0n) {
        ctx.logger.warn({ clientId: d.client_id, position: event.position }, 'ClientConnected for an unknown client; ignored');
      }
    },

    async ClientDisconnected(tx, event, ctx) {
      const d = event.data;
      // Only the session that is current may take the client offline: a late disconnect of a
      // replaced session must not hide the session that replaced it.
      const res = await tx
        .updateTable('clients')
        .set({ status: 'offline', node_id: null, session_id: null, last_seen_at: event.occurred_at })
        .where('client_id', '=', d.client_id)
        .where('session_id', '=', d.session_id)
        .executeTakeFirst();
      if (res.numUpdatedRows === 0n) {
        ctx.logger.debug(
          { clientId: d.client_id, sessionId: d.session_id, position: event.position },
          'ClientDisconnected for a session that is not current; ignored',
        );
      }
    },
  },
};

/** What an expired client's row holds instead of its auth code hash: no scrypt hash, so it never verifies. */
export const EXPIRED_HASH = 'expired';

/** Applies a credential change to a live (not deleted) client row; a replay writes the same values. */
async function updateCredentials(
  tx: DbTx,
  event: StoredEvent<string, { client_id: number }>,
  ctx: ProjectionContext,
  set: Pick<ClientUpdate, 'enabled' | 'auth_code_hash' | 'auth_epoch' | 'deleted_at'>,
): Promise<void> {
  const res = await tx
    .updateTable('clients')
    .set({ ...set, config_version: event.position, version: event.version, updated_at: event.occurred_at })
    .where('client_id', '=', event.data.client_id)
    .where('deleted_at', 'is', null)
    .executeTakeFirst();
  if (res.numUpdatedRows === 0n) {
    ctx.logger.warn({ clientId: event.data.client_id, position: event.position, type: event.type }, 'credential change for an unknown or deleted client; ignored');
  }
}

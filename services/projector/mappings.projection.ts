import { sql } from 'kysely';
import type { DbTx } from '../../shared/db/connect.js';
import type { Projection, ProjectionContext } from './projection.js';

/**
 * Mappings, plus the config version of every client a mapping involves: a client's pushed config
 * is the set of mappings it takes part in, so each change moves its `config_version` to the
 * event's position. The version only ever grows (GREATEST) so a replay over live rows never moves
 * it backwards.
 */
async function touchClientConfigs(
  tx: DbTx,
  ctx: ProjectionContext,
  position: number,
  clientIds: readonly (number | null)[],
): Promise<void> {
  const ids = [...new Set(clientIds.filter((id): id is number => id !== null))];
  if (ids.length === 0) return;
  await tx
    .updateTable('clients')
    .set({ config_version: sql<number>`greatest(config_version, ${position})` })
    .where('client_id', 'in', ids)
    .execute();
  for (const clientId of ids) ctx.notify({ kind: 'client-config', clientId, version: position });
}

export const mappingsProjection: Projection = {
  name: 'mappings',
  version: 1,
  handlers: {
    async MappingCreated(tx, event, ctx) {
      const d = event.data;
      await tx
        .insertInto('mappings')
        .values({
          mapping_id: d.mapping_id,
          user_id: d.user_id,
          protocol: d.protocol,
          source_client_id: d.source_client_id,
          target_client_id: d.target_client_id,
          target_host: d.target_host,
          target_port: d.target_port,
          local_host: d.local_host,
          local_port: d.local_port,
          public_port: d.public_port,
          secret_key: d.secret_key,
          enabled: d.enabled,
          status: d.enabled ? 'active' : 'disabled',
          version: event.version,
          created_at: event.occurred_at,
          updated_at: event.occurred_at,
        })
        .onConflict((oc) => oc.column('mapping_id').doNothing())
        .execute();
      await touchClientConfigs(tx, ctx, event.position, [d.source_client_id, d.target_client_id]);
      if (d.public_port !== null) ctx.notify({ kind: 'public-mappings', version: event.position });
    },

    async MappingDeleted(tx, event, ctx) {
      const row = await tx
        .deleteFrom('mappings')
        .where('mapping_id', '=', event.data.mapping_id)
        .returning(['source_client_id', 'target_client_id', 'public_port'])
        .executeTakeFirst();
      if (!row) {
        ctx.logger.warn({ mappingId: event.data.mapping_id, position: event.position }, 'MappingDeleted for an unknown mapping; ignored');
        return;
      }
      await touchClientConfigs(tx, ctx, event.position, [row.source_client_id, row.target_client_id]);
      if (row.public_port !== null) ctx.notify({ kind: 'public-mappings', version: event.position });
    },
  },
};

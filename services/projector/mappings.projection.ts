import { sql } from 'kysely';
import type { DbTx } from '../../shared/db/connect.js';
import type { AgentSideStatus, MappingStatus } from '../../shared/db/schema.js';
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

/** The columns the derived status is computed from. */
export interface MappingStatusInputs {
  enabled: boolean;
  source_client_id: number | null;
  local_port: number | null;
  source_status: AgentSideStatus | null;
  source_error: string | null;
  target_status: AgentSideStatus | null;
  target_error: string | null;
}

/**
 * The API's mapping status. A mapping needs its target agent, and its source agent when it has a
 * local port to listen on (a public mapping's source side is the edge's own listener). Any side
 * in error → error (naming the side); all needed sides active → active; otherwise pending (an
 * agent that has not reported yet, or whose session ended).
 */
export function deriveMappingStatus(m: MappingStatusInputs): { status: MappingStatus; error: string | null } {
  if (!m.enabled) return { status: 'disabled', error: null };
  const needsSource = m.source_client_id !== null && m.local_port !== null;
  const errors: string[] = [];
  if (needsSource && m.source_status === 'error') errors.push(`source: ${m.source_error ?? 'error'}`);
  if (m.target_status === 'error') errors.push(`target: ${m.target_error ?? 'error'}`);
  if (errors.length > 0) return { status: 'error', error: errors.join('; ') };
  if ((!needsSource || m.source_status === 'active') && m.target_status === 'active') return { status: 'active', error: null };
  return { status: 'pending', error: null };
}

const STATUS_INPUTS = ['mapping_id', 'enabled', 'source_client_id', 'local_port', 'source_status', 'source_error', 'target_status', 'target_error'] as const;

async function storeDerivedStatus(tx: DbTx, row: MappingStatusInputs & { mapping_id: number }): Promise<void> {
  const { status, error } = deriveMappingStatus(row);
  await tx.updateTable('mappings').set({ status, error }).where('mapping_id', '=', row.mapping_id).execute();
}

export const mappingsProjection: Projection = {
  name: 'mappings',
  // 2: status is pending/active/error from agent reports (was active/disabled).
  // 3: secret_generation instead of the secret itself (migration 0006).
  version: 3,
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
          secret_generation: d.secret_generation,
          idle_timeout: d.idle_timeout ?? null,
          max_connections: d.max_connections ?? null,
          max_pending_opens: d.max_pending_opens ?? null,
          enabled: d.enabled,
          // No agent has reported on a new mapping yet.
          status: d.enabled ? 'pending' : 'disabled',
          error: null,
          source_status: null,
          source_error: null,
          source_session_id: null,
          target_status: null,
          target_error: null,
          target_session_id: null,
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

    async MappingSecretRotated(tx, event, ctx) {
      const row = await tx
        .updateTable('mappings')
        .set({ secret_generation: event.data.secret_generation, version: event.version, updated_at: event.occurred_at })
        .where('mapping_id', '=', event.data.mapping_id)
        .returning(['source_client_id', 'target_client_id'])
        .executeTakeFirst();
      if (!row) {
        ctx.logger.warn({ mappingId: event.data.mapping_id, position: event.position }, 'MappingSecretRotated for an unknown mapping; ignored');
        return;
      }
      // Both agents get the new secret in their next config push.
      await touchClientConfigs(tx, ctx, event.position, [row.source_client_id, row.target_client_id]);
    },

    async MappingUpdated(tx, event, ctx) {
      const d = event.data;
      const row = await tx
        .updateTable('mappings')
        .set({ enabled: d.enabled, target_host: d.target_host, target_port: d.target_port, version: event.version, updated_at: event.occurred_at })
        .where('mapping_id', '=', d.mapping_id)
        .returning([...STATUS_INPUTS, 'target_client_id', 'public_port'])
        .executeTakeFirst();
      if (!row) {
        ctx.logger.warn({ mappingId: d.mapping_id, position: event.position }, 'MappingUpdated for an unknown mapping; ignored');
        return;
      }
      await storeDerivedStatus(tx, row);
      // Both agents get the change in their next config push (a disabled mapping leaves their config).
      await touchClientConfigs(tx, ctx, event.position, [row.source_client_id, row.target_client_id]);
      if (row.public_port !== null) ctx.notify({ kind: 'public-mappings', version: event.position });
    },

    async MappingAgentStatusReported(tx, event, ctx) {
      const d = event.data;
      const side =
        d.role === 'source'
          ? { source_status: d.status, source_error: d.error ?? null, source_session_id: d.session_id }
          : { target_status: d.status, target_error: d.error ?? null, target_session_id: d.session_id };
      // Only the client on that side of the mapping speaks for it.
      const row = await tx
        .updateTable('mappings')
        .set(side)
        .where('mapping_id', '=', d.mapping_id)
        .where(d.role === 'source' ? 'source_client_id' : 'target_client_id', '=', d.client_id)
        .returning(STATUS_INPUTS)
        .executeTakeFirst();
      if (!row) {
        // Typically a report that crossed the mapping's deletion: a fact, ignored, never an error.
        ctx.logger.debug({ mappingId: d.mapping_id, clientId: d.client_id, role: d.role, position: event.position }, 'status report for an unknown mapping side; ignored');
        return;
      }
      await storeDerivedStatus(tx, row);
    },

    async ClientDisconnected(tx, event) {
      // The session that reported a side is gone: nothing is known about that side until the
      // agent's next session reports again. A replaced session's late disconnect matches nothing.
      const sid = event.data.session_id;
      const sources = await tx
        .updateTable('mappings')
        .set({ source_status: null, source_error: null, source_session_id: null })
        .where('source_session_id', '=', sid)
        .returning(STATUS_INPUTS)
        .execute();
      const targets = await tx
        .updateTable('mappings')
        .set({ target_status: null, target_error: null, target_session_id: null })
        .where('target_session_id', '=', sid)
        .returning(STATUS_INPUTS)
        .execute();
      const latest = new Map([...sources, ...targets].map((r) => [r.mapping_id, r]));
      for (const r of targets) latest.set(r.mapping_id, r);
      for (const row of latest.values()) await storeDerivedStatus(tx, row);
    },
  },
};

import type { Db } from '../../shared/db/connect.js';
import type { MappingRow } from '../../shared/db/schema.js';
import type { AgentMapping } from '../../shared/wire/messages.js';

/** The edge only reads the read models; every write goes through domain commands (events). */

export interface ClientAuthRow {
  client_id: number;
  client_type: 'managed' | 'anonymous';
  auth_code_hash: string;
}

export async function loadClientAuth(db: Db, clientId: number): Promise<ClientAuthRow | undefined> {
  return db
    .selectFrom('clients')
    .select(['client_id', 'client_type', 'auth_code_hash'])
    .where('client_id', '=', clientId)
    .executeTakeFirst();
}

export interface ClientConfig {
  version: number;
  mappings: AgentMapping[];
}

/**
 * A client's side of every enabled mapping it takes part in. The version is read BEFORE the
 * mappings: the mappings are then at least as new as the version they are labelled with, so a
 * later notice with a higher version is never wrongly skipped.
 */
export async function loadClientConfig(db: Db, clientId: number): Promise<ClientConfig> {
  const client = await db.selectFrom('clients').select('config_version').where('client_id', '=', clientId).executeTakeFirst();
  const rows = await db
    .selectFrom('mappings')
    .selectAll()
    .where('enabled', '=', true)
    .where((eb) => eb.or([eb('source_client_id', '=', clientId), eb('target_client_id', '=', clientId)]))
    .orderBy('mapping_id')
    .execute();
  const mappings: AgentMapping[] = [];
  for (const row of rows) {
    if (row.source_client_id === clientId && row.local_port !== null) {
      mappings.push({
        mapping_id: row.mapping_id,
        protocol: row.protocol,
        role: 'source',
        local_host: row.local_host ?? '127.0.0.1',
        local_port: row.local_port,
        secret_key: row.secret_key,
      });
    }
    if (row.target_client_id === clientId) {
      mappings.push({
        mapping_id: row.mapping_id,
        protocol: row.protocol,
        role: 'target',
        target_host: row.target_host,
        target_port: row.target_port,
        secret_key: row.secret_key,
      });
    }
  }
  return { version: client?.config_version ?? 0, mappings };
}

export async function loadMapping(db: Db, mappingId: number): Promise<MappingRow | undefined> {
  return db.selectFrom('mappings').selectAll().where('mapping_id', '=', mappingId).executeTakeFirst();
}

/** Enabled mappings whose visitors arrive at an edge port. */
export async function loadPublicMappings(db: Db): Promise<MappingRow[]> {
  return db.selectFrom('mappings').selectAll().where('public_port', 'is not', null).where('enabled', '=', true).orderBy('mapping_id').execute();
}

import { sql, type Kysely } from 'kysely';

// Mapping secrets are derived (HKDF of the master key, mapping id and generation;
// shared/platform/mapping-secrets.ts), never stored. This strips the ones earlier releases stored:
// - the mappings read model loses secret_key and gains secret_generation (1 for every existing
//   mapping: generation 1 is what their MappingCreated v1 events upcast to);
// - the PostgreSQL event log (standalone mode; empty in JetStream mode) is rewritten in place:
//   each MappingCreated of schema version 1 becomes version 2, secret_key dropped, generation 1,
//   everything else (id, position, stream version, metadata) unchanged. This is the one exception to
//   "events are immutable"; the JetStream log is append-only and is copied instead
//   (`tunnox ctl events copy`, docs/operations.md);
// - state-stream messages still waiting in the outbox lose their secret_key.
// The stored secrets stop working at once: edges push every agent its mapping's derived secret.
// PostgreSQL keeps the old row versions until they are vacuumed; docs/operations.md says to run
// VACUUM FULL on these tables after upgrading.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('mappings').addColumn('secret_generation', 'integer', (c) => c.notNull().defaultTo(1)).execute();
  await db.schema.alterTable('mappings').dropColumn('secret_key').execute();
  await stripStoredSecrets(db);
}

/**
 * The log and outbox part of `up`, on its own: idempotent (a rewritten envelope is version 2 and
 * matches nothing), and the same transformation as withoutStoredSecret (shared/contracts/events.ts).
 * Returns how many events were rewritten.
 */
export async function stripStoredSecrets(db: Kysely<any>): Promise<number> {
  const events = await sql`
    update tnx_events
    set envelope = jsonb_set(
      jsonb_set(envelope #- '{data,secret_key}', '{data,secret_generation}', '1'::jsonb),
      '{schema_version}', '2'::jsonb)
    where type = 'MappingCreated' and envelope->'schema_version' = '1'::jsonb`.execute(db);
  await sql`
    update state_outbox
    set payload = (payload::jsonb #- '{state,secret_key}')::text
    where payload::jsonb->'state' ? 'secret_key'`.execute(db);
  return Number(events.numAffectedRows ?? 0);
}

// No way back to the stored secrets (they are gone): down restores the column with secrets
// derived nowhere, so an older build would refuse every tunnel until its mappings are recreated.
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('mappings').addColumn('secret_key', 'text', (c) => c.notNull().defaultTo('')).execute();
  await db.schema.alterTable('mappings').dropColumn('secret_generation').execute();
}

import type { Kysely } from 'kysely';

// A mapping's flood limits (MappingCreated.idle_timeout, max_connections, max_pending_opens): null
// when the mapping did not set one (never / the edge's default). Older mappings have none.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .alterTable('mappings')
    .addColumn('idle_timeout', 'integer')
    .addColumn('max_connections', 'integer')
    .addColumn('max_pending_opens', 'integer')
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('mappings').dropColumn('idle_timeout').dropColumn('max_connections').dropColumn('max_pending_opens').execute();
}

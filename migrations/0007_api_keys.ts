import type { Kysely } from 'kysely';

// Read model of the admin API keys made by `tunnox ctl apikeys create` (projected from ApiKeyCreated
// and ApiKeyRevoked): what `tunnox ctl apikeys list` shows. It holds no key and no digest; the API
// authenticates keys against the event log itself (services/api/apikeys.ts).
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('api_keys')
    .addColumn('apikey_id', 'text', (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('created_by', 'text', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull())
    .addColumn('revoked_at', 'timestamptz')
    .addColumn('revoke_reason', 'text')
    .addColumn('version', 'integer', (c) => c.notNull())
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('api_keys').execute();
}

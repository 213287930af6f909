import { sql, type Kysely } from 'kysely';

// The Management API's Idempotency-Key records (services/api/idempotency.ts). Operational state of
// the API, not a read model: the projector never writes it and a projection rebuild leaves it alone.
// Nothing in it is readable without the caller's key: `id` is a hash of (API key id, key), the
// response body and any secret the command generated are encrypted with a key derived from the
// Idempotency-Key itself.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('api_idempotency')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('fingerprint', 'text', (c) => c.notNull())
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('lease_until', 'timestamptz', (c) => c.notNull())
    .addColumn('secrets', 'text')
    .addColumn('status', 'integer')
    .addColumn('headers', 'text')
    .addColumn('body', 'text')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema.createIndex('api_idempotency_created_at').on('api_idempotency').column('created_at').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('api_idempotency').execute();
}

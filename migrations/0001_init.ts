import { sql, type Kysely } from 'kysely';

// Read models and the PostgreSQL event log. Shared by standalone and cluster modes.
export async function up(db: Kysely<any>): Promise<void> {
  // Append-only event log used by the PostgreSQL event store (standalone mode). In JetStream mode
  // it stays empty. Appends are serialized (advisory lock) so positions commit in order.
  await db.schema
    .createTable('tnx_events')
    .addColumn('position', 'bigserial', (c) => c.primaryKey())
    .addColumn('stream', 'text', (c) => c.notNull())
    .addColumn('version', 'integer', (c) => c.notNull())
    .addColumn('event_id', 'uuid', (c) => c.notNull().unique())
    .addColumn('type', 'text', (c) => c.notNull())
    .addColumn('envelope', 'jsonb', (c) => c.notNull())
    .addColumn('recorded_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addUniqueConstraint('tnx_events_stream_version_uq', ['stream', 'version'])
    .execute();

  await db.schema
    .createTable('projection_checkpoints')
    .addColumn('name', 'text', (c) => c.primaryKey())
    .addColumn('position', 'bigint', (c) => c.notNull())
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  await db.schema
    .createTable('users')
    .addColumn('user_id', 'bigint', (c) => c.primaryKey())
    .addColumn('username', 'text', (c) => c.notNull())
    .addColumn('email', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('version', 'integer', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull())
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('clients')
    .addColumn('client_id', 'bigint', (c) => c.primaryKey())
    .addColumn('client_type', 'text', (c) => c.notNull())
    .addColumn('user_id', 'bigint')
    .addColumn('client_name', 'text', (c) => c.notNull())
    .addColumn('auth_code_hash', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('node_id', 'text')
    .addColumn('session_id', 'text')
    .addColumn('last_seen_at', 'timestamptz')
    .addColumn('config_version', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('version', 'integer', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull())
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('clients_user_id_idx').on('clients').column('user_id').execute();

  await db.schema
    .createTable('mappings')
    .addColumn('mapping_id', 'bigint', (c) => c.primaryKey())
    .addColumn('user_id', 'bigint', (c) => c.notNull())
    .addColumn('protocol', 'text', (c) => c.notNull())
    .addColumn('source_client_id', 'bigint')
    .addColumn('target_client_id', 'bigint', (c) => c.notNull())
    .addColumn('target_host', 'text', (c) => c.notNull())
    .addColumn('target_port', 'integer', (c) => c.notNull())
    .addColumn('local_host', 'text')
    .addColumn('local_port', 'integer')
    .addColumn('public_port', 'integer')
    .addColumn('secret_key', 'text', (c) => c.notNull())
    .addColumn('enabled', 'boolean', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('version', 'integer', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull())
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('mappings_user_id_idx').on('mappings').column('user_id').execute();
  await db.schema.createIndex('mappings_source_client_idx').on('mappings').column('source_client_id').execute();
  await db.schema.createIndex('mappings_target_client_idx').on('mappings').column('target_client_id').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const table of ['mappings', 'clients', 'users', 'projection_checkpoints', 'tnx_events']) {
    await db.schema.dropTable(table).ifExists().execute();
  }
}

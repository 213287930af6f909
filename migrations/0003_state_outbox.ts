import { sql, type Kysely } from 'kysely';

// The projector's outbox for the config-update (state) stream: written in the same transaction as
// the read models and the checkpoint, published to JetStream after commit, deleted once published.
// Whatever a crash left here is published when the projector starts again.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('state_outbox')
    .addColumn('id', 'bigserial', (c) => c.primaryKey())
    .addColumn('payload', 'text', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('state_outbox').execute();
}

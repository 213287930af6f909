import { type Kysely } from 'kysely';

// What an edge must know to admit a client beyond its auth code hash: whether it is enabled, its
// auth epoch (the client stream version of its last revocation: disabled, auth code rotated,
// kicked or deleted; 0 before any), which session tokens are checked against, and whether it was
// deleted. A deleted client keeps its row (deleted_at set) so the standalone edge feed, which
// reads changed rows, sees the deletion; the API treats such a row as absent.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .alterTable('clients')
    .addColumn('enabled', 'boolean', (c) => c.notNull().defaultTo(true))
    .addColumn('auth_epoch', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('deleted_at', 'timestamptz')
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.deleteFrom('clients').where('deleted_at', 'is not', null).execute();
  await db.schema.alterTable('clients').dropColumn('enabled').dropColumn('auth_epoch').dropColumn('deleted_at').execute();
}

import type { Db } from '../../../../shared/db/connect.js';

/** Every column except auth_code_hash (the hash never leaves the database through the API); deleted clients are absent. */
export function findClient(db: Db, clientId: number) {
  return db
    .selectFrom('clients')
    .select(['client_id', 'client_type', 'user_id', 'client_name', 'status', 'node_id', 'last_seen_at', 'enabled', 'version', 'created_at', 'updated_at'])
    .where('client_id', '=', clientId)
    .where('deleted_at', 'is', null)
    .executeTakeFirst();
}
export type ClientReadRow = NonNullable<Awaited<ReturnType<typeof findClient>>>;

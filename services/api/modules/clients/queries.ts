import type { Db } from '../../../../shared/db/connect.js';

/** Every column except auth_code_hash (the hash never leaves the database through the API); deleted clients are absent. */
const COLUMNS = ['client_id', 'client_type', 'user_id', 'client_name', 'status', 'node_id', 'last_seen_at', 'enabled', 'version', 'created_at', 'updated_at'] as const;

export function findClient(db: Db, clientId: number) {
  return db.selectFrom('clients').select(COLUMNS).where('client_id', '=', clientId).where('deleted_at', 'is', null).executeTakeFirst();
}

export interface ClientFilter {
  userId?: number | undefined;
  status?: 'online' | 'offline' | undefined;
  type?: 'managed' | 'anonymous' | undefined;
}

/** One page of clients in id order, after `after` (exclusive), limit + 1 rows; deleted ones are absent. */
export function listClients(db: Db, q: ClientFilter & { after: number; limit: number }) {
  let query = db.selectFrom('clients').select(COLUMNS).where('deleted_at', 'is', null).where('client_id', '>', q.after);
  if (q.userId !== undefined) query = query.where('user_id', '=', q.userId);
  if (q.status !== undefined) query = query.where('status', '=', q.status);
  if (q.type !== undefined) query = query.where('client_type', '=', q.type);
  return query.orderBy('client_id').limit(q.limit + 1).execute();
}
export type ClientReadRow = NonNullable<Awaited<ReturnType<typeof findClient>>>;

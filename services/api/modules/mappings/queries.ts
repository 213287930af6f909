import type { Db } from '../../../../shared/db/connect.js';
import type { MappingStatus } from '../../../../shared/db/schema.js';

/** Every column except secret_key: agents receive it pushed over their control connection only. */
const COLUMNS = [
  'mapping_id',
  'user_id',
  'protocol',
  'source_client_id',
  'target_client_id',
  'target_host',
  'target_port',
  'local_host',
  'local_port',
  'public_port',
  'idle_timeout',
  'max_connections',
  'max_pending_opens',
  'enabled',
  'status',
  'error',
  'version',
  'created_at',
  'updated_at',
] as const;

export function findMapping(db: Db, mappingId: number) {
  return db.selectFrom('mappings').select(COLUMNS).where('mapping_id', '=', mappingId).executeTakeFirst();
}

export interface MappingFilter {
  userId?: number | undefined;
  /** Source or target. */
  clientId?: number | undefined;
  status?: MappingStatus | undefined;
}

/** One page of mappings in id order, after `after` (exclusive), limit + 1 rows. */
export function listMappings(db: Db, q: MappingFilter & { after: number; limit: number }) {
  let query = db.selectFrom('mappings').select(COLUMNS).where('mapping_id', '>', q.after);
  if (q.userId !== undefined) query = query.where('user_id', '=', q.userId);
  if (q.clientId !== undefined) {
    const id = q.clientId;
    query = query.where((eb) => eb.or([eb('source_client_id', '=', id), eb('target_client_id', '=', id)]));
  }
  if (q.status !== undefined) query = query.where('status', '=', q.status);
  return query.orderBy('mapping_id').limit(q.limit + 1).execute();
}
export type MappingReadRow = NonNullable<Awaited<ReturnType<typeof findMapping>>>;

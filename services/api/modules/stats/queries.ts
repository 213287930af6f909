import { sql } from 'kysely';
import type { Db } from '../../../../shared/db/connect.js';

// Counts over the read models, one query per table (FILTER aggregates), for GET .../stats.

export interface ClientCounts {
  total: number;
  online: number;
  offline: number;
  managed: number;
  anonymous: number;
  disabled: number;
}

export interface MappingCounts {
  total: number;
  public: number;
  client_to_client: number;
  enabled: number;
  disabled: number;
  by_status: { pending: number; active: number; error: number; disabled: number };
}

const n = (v: unknown): number => Number(v ?? 0);

export async function clientCounts(db: Db, where: { userId?: number } = {}): Promise<ClientCounts> {
  let q = db
    .selectFrom('clients')
    .select([
      sql<string>`count(*)`.as('total'),
      sql<string>`count(*) filter (where status = 'online')`.as('online'),
      sql<string>`count(*) filter (where client_type = 'managed')`.as('managed'),
      sql<string>`count(*) filter (where not enabled)`.as('disabled'),
    ])
    .where('deleted_at', 'is', null);
  if (where.userId !== undefined) q = q.where('user_id', '=', where.userId);
  const r = await q.executeTakeFirstOrThrow();
  const total = n(r.total);
  return { total, online: n(r.online), offline: total - n(r.online), managed: n(r.managed), anonymous: total - n(r.managed), disabled: n(r.disabled) };
}

export async function mappingCounts(db: Db, where: { userId?: number; clientId?: number; role?: 'source' | 'target' } = {}): Promise<MappingCounts> {
  let q = db.selectFrom('mappings').select([
    sql<string>`count(*)`.as('total'),
    sql<string>`count(*) filter (where public_port is not null)`.as('public'),
    sql<string>`count(*) filter (where enabled)`.as('enabled'),
    sql<string>`count(*) filter (where status = 'pending')`.as('pending'),
    sql<string>`count(*) filter (where status = 'active')`.as('active'),
    sql<string>`count(*) filter (where status = 'error')`.as('error'),
    sql<string>`count(*) filter (where status = 'disabled')`.as('status_disabled'),
  ]);
  if (where.userId !== undefined) q = q.where('user_id', '=', where.userId);
  if (where.clientId !== undefined) {
    const id = where.clientId;
    if (where.role === 'source') q = q.where('source_client_id', '=', id);
    else if (where.role === 'target') q = q.where('target_client_id', '=', id);
    else q = q.where((eb) => eb.or([eb('source_client_id', '=', id), eb('target_client_id', '=', id)]));
  }
  const r = await q.executeTakeFirstOrThrow();
  const total = n(r.total);
  return {
    total,
    public: n(r.public),
    client_to_client: total - n(r.public),
    enabled: n(r.enabled),
    disabled: total - n(r.enabled),
    by_status: { pending: n(r.pending), active: n(r.active), error: n(r.error), disabled: n(r.status_disabled) },
  };
}

export async function userCount(db: Db): Promise<number> {
  const r = await db.selectFrom('users').select(sql<string>`count(*)`.as('total')).executeTakeFirstOrThrow();
  return n(r.total);
}

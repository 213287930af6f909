import { sql, type RawBuilder } from 'kysely';
import { isSecretField, REDACTED } from '../../shared/contracts/audit.js';
import type { StoredEvent } from '../../shared/contracts/envelope.js';
import type { Db, DbTx } from '../../shared/db/connect.js';
import type { EventStore } from '../../shared/eventstore/types.js';
import type { Logger } from '../../shared/platform/logger.js';
import { TunnoxError } from '../../shared/platform/errors.js';
import { lockCheckpoint } from './checkpoints.js';
import type { ProjectionContext } from './projection.js';
import { READ_MODEL_PROJECTION, READ_MODEL_PROJECTIONS, READ_MODEL_TABLES } from './readModels.js';
import { applyEvent, findOperatorSkip, parseForProjection } from './runner.js';

/*
 * `tunnox ctl projections rebuild`: replays the whole log into shadow copies of the read-model
 * tables, compares them row by row with the live ones, and optionally swaps the differences in.
 *
 * Shadow tables live in their own schema (SHADOW_SCHEMA) with the live tables' names and shapes
 * (CREATE TABLE ... LIKE ... INCLUDING ALL). The replay runs the live projections' own handlers
 * with search_path set to that schema alone, so the handlers' unqualified table names resolve to
 * the shadow copies, and a handler touching a table that has no shadow fails ("relation does not
 * exist") instead of writing a live table.
 *
 * Consistency with a running projector: the bulk of the replay (up to the live checkpoint C0 read
 * at the start) runs without any lock. Then ONE transaction takes the read-model checkpoint's row
 * lock (what every projector event transaction takes first, so a running projector waits), replays
 * the events the live projector committed meanwhile (C0, C1], compares at C1 and, when swapping,
 * replaces the differing live rows, and commits: the checkpoint stays C1 and the swapped tables are
 * exactly the replay up to C1. The projector then goes on at C1 + 1.
 */

export const SHADOW_SCHEMA = 'tnx_rebuild';
/** Session advisory lock: one rebuild at a time per database. */
export const REBUILD_LOCK_KEY = 0x746e7852; // "tnxR"

export class RebuildError extends TunnoxError {}

export interface RowDifference {
  table: string;
  /** Primary key columns and values, e.g. { mapping_id: 1001 }. */
  key: Record<string, unknown>;
  kind: 'changed' | 'only_live' | 'only_rebuilt';
  /** For `changed`: the columns that differ, with both values (secret-like columns redacted). */
  columns?: Array<{ column: string; live: unknown; rebuilt: unknown }>;
}

export interface TableReport {
  table: string;
  live_rows: number;
  rebuilt_rows: number;
  differing_rows: number;
}

export interface RebuildReport {
  /** The checkpoint both sides were compared at (the read-model projection's). */
  position: number;
  /** The log's head when they were compared: above `position` when the projector is behind (or halted). */
  head: number;
  /** Events replayed into the shadow tables. */
  events: number;
  /** Operator-skipped positions the replay passed. */
  skipped: number[];
  identical: boolean;
  tables: TableReport[];
  /** Up to maxDifferences of them, by table then key. */
  differences: RowDifference[];
  /** True when differences were listed only in part. */
  truncated: boolean;
  /** Set with swap: what the swap replaced (rows deleted from live and inserted from the rebuild). */
  swapped: { deleted: number; inserted: number; tables: string[] } | null;
  /** Clients and mappings whose rows the swap changed (their state must reach the edges). */
  changed_entities: { clients: number[]; mappings: number[] };
}

export interface RebuildOptions {
  store: EventStore;
  db: Db;
  logger: Logger;
  /** Replace the live rows that differ by the rebuilt ones, in the comparing transaction. */
  swap: boolean;
  /** Inside the swap transaction, after the rows changed (cluster: the state outbox). */
  onSwapped?: (tx: DbTx, changed: RebuildReport['changed_entities'], position: number) => Promise<void>;
  maxDifferences?: number;
  batchSize?: number;
}

/** The event a replay failed on, carried out of its (rolled back) transaction. */
class ReplayFailure extends Error {
  constructor(
    readonly event: StoredEvent,
    override readonly cause: unknown,
  ) {
    super(`replay failed at position ${event.position}`);
  }
}

interface TableInfo {
  table: string;
  /** Schema of the live table (as the projector's unqualified name resolves it). */
  schema: string;
  columns: string[];
  key: string[];
}

const q = (schema: string, table: string): RawBuilder<unknown> => sql.table(`${schema}.${table}`);

export async function rebuildAndCompare(opts: RebuildOptions): Promise<RebuildReport> {
  const log = opts.logger.child({ projection: READ_MODEL_PROJECTION, shadow: SHADOW_SCHEMA });
  // One pinned connection: the session advisory lock and the shadow schema's life belong to it.
  return opts.db.connection().execute(async (conn) => {
    const locked = await sql<{ ok: boolean }>`select pg_try_advisory_lock(${REBUILD_LOCK_KEY}) as ok`.execute(conn);
    if (!locked.rows[0]?.ok) throw new RebuildError('TNX_REBUILD_RUNNING', 'another projections rebuild is running on this database');
    try {
      const tables = await describeTables(conn as Db);
      await createShadow(conn as Db, tables);
      try {
        return await run(conn as Db, opts, tables, log);
      } finally {
        await sql`drop schema if exists ${sql.id(SHADOW_SCHEMA)} cascade`.execute(conn);
      }
    } finally {
      await sql`select pg_advisory_unlock(${REBUILD_LOCK_KEY})`.execute(conn);
    }
  });
}

async function describeTables(db: Db): Promise<TableInfo[]> {
  const out: TableInfo[] = [];
  for (const table of READ_MODEL_TABLES) {
    const { rows } = await sql<{ schema: string; oid: number }>`
      select n.nspname as schema, c.oid::int8 as oid from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where c.oid = to_regclass(${table})`.execute(db);
    const found = rows[0];
    if (!found) throw new RebuildError('TNX_REBUILD_NO_TABLE', `read-model table ${table} not found (is the database migrated?)`);
    const columns = await sql<{ name: string }>`
      select attname as name from pg_attribute where attrelid = ${found.oid}::oid and attnum > 0 and not attisdropped order by attnum`.execute(db);
    const key = await sql<{ name: string }>`
      select a.attname as name from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
      where i.indrelid = ${found.oid}::oid and i.indisprimary order by array_position(i.indkey, a.attnum)`.execute(db);
    if (key.rows.length === 0) throw new RebuildError('TNX_REBUILD_NO_KEY', `read-model table ${table} has no primary key to compare rows by`);
    out.push({ table, schema: found.schema, columns: columns.rows.map((r) => r.name), key: key.rows.map((r) => r.name) });
  }
  return out;
}

async function createShadow(db: Db, tables: readonly TableInfo[]): Promise<void> {
  // A crashed earlier run (the advisory lock is ours now) may have left one.
  await sql`drop schema if exists ${sql.id(SHADOW_SCHEMA)} cascade`.execute(db);
  await sql`create schema ${sql.id(SHADOW_SCHEMA)}`.execute(db);
  for (const t of tables) {
    await sql`create table ${q(SHADOW_SCHEMA, t.table)} (like ${q(t.schema, t.table)} including all)`.execute(db);
  }
}

async function run(db: Db, opts: RebuildOptions, tables: readonly TableInfo[], log: Logger): Promise<RebuildReport> {
  const { store } = opts;
  const batchSize = opts.batchSize ?? 500;
  const skipped = new Map<number, string>();
  const ctx: ProjectionContext = { logger: log, notify: () => undefined };

  /** Replays (from, to] into the shadow tables inside `tx`; returns the events replayed. */
  const replay = async (tx: DbTx, from: number, to: number): Promise<number> => {
    await sql`set local search_path to ${sql.id(SHADOW_SCHEMA)}`.execute(tx);
    let position = from;
    let events = 0;
    while (position < to) {
      const batch = await store.readAll(position, Math.min(batchSize, to - position));
      if (batch.length === 0) break;
      for (const raw of batch) {
        if (raw.position > to) break;
        if (skipped.get(raw.position) !== raw.id) {
          try {
            await applyEvent(tx, READ_MODEL_PROJECTIONS, parseForProjection(READ_MODEL_PROJECTION, raw), ctx);
          } catch (err) {
            throw new ReplayFailure(raw, err);
          }
        }
        position = raw.position;
        events++;
      }
      if (batch[batch.length - 1]!.position >= to) break;
    }
    await sql`set local search_path to default`.execute(tx);
    return events;
  };

  /** Runs `body` again whenever it fails on an event an operator skipped (a failed handler aborts the transaction). */
  const withSkips = async <T>(body: () => Promise<T>): Promise<T> => {
    for (;;) {
      try {
        return await body();
      } catch (err) {
        if (!(err instanceof ReplayFailure)) throw err;
        const skip = skipped.has(err.event.position) ? null : await findOperatorSkip(store, err.event);
        if (!skip) {
          throw new RebuildError('TNX_REBUILD_BAD_EVENT', `the replay failed at position ${err.event.position} (${err.event.type}): ${String((err.cause as Error)?.message ?? err.cause)}`, { cause: err.cause });
        }
        log.warn({ position: err.event.position, skip }, 'event skipped by operator (EventSkipped in the log); replaying again without it');
        skipped.set(err.event.position, err.event.id);
      }
    }
  };

  // 1. The bulk, without locks: the shadow tables up to the live checkpoint as it is now.
  const { position: start } = (await db.selectFrom('projection_checkpoints').select('position').where('name', '=', READ_MODEL_PROJECTION).executeTakeFirst()) ?? { position: 0 };
  log.info({ position: start }, 'replaying into shadow tables');
  const bulk = await withSkips(() =>
    db.transaction().execute(async (tx) => {
      for (const t of tables) await sql`delete from ${q(SHADOW_SCHEMA, t.table)}`.execute(tx);
      return replay(tx, 0, start);
    }),
  );

  // 2. One transaction holding the checkpoint lock: catch up, compare, swap.
  return withSkips(() =>
    db.transaction().execute(async (tx) => {
      const position = await lockCheckpoint(tx, READ_MODEL_PROJECTION);
      if (position < start) throw new RebuildError('TNX_REBUILD_CHECKPOINT_MOVED_BACK', `the checkpoint moved back from ${start} to ${position} during the rebuild; run it again`);
      const caught = await replay(tx, start, position);
      const head = await store.headPosition();
      const { reports, differences, truncated, differing } = await compare(tx, tables, opts.maxDifferences ?? 100);
      const identical = reports.every((r) => r.differing_rows === 0);
      const changed = { clients: differing.get('clients') ?? [], mappings: differing.get('mappings') ?? [] };
      let swapped: RebuildReport['swapped'] = null;
      if (opts.swap) {
        swapped = { deleted: 0, inserted: 0, tables: [] };
        for (const t of tables) {
          if ((reports.find((r) => r.table === t.table)?.differing_rows ?? 0) === 0) continue;
          const { deleted, inserted } = await replaceDiffering(tx, t);
          swapped.deleted += deleted;
          swapped.inserted += inserted;
          swapped.tables.push(t.table);
        }
        if (!identical) await opts.onSwapped?.(tx, changed, position);
      }
      return {
        position,
        head,
        events: bulk + caught,
        skipped: [...skipped.keys()].sort((a, b) => a - b),
        identical,
        tables: reports,
        differences,
        truncated,
        swapped,
        changed_entities: opts.swap ? changed : { clients: [], mappings: [] },
      };
    }),
  );
}

function keyMatch(t: TableInfo, a: string, b: string): RawBuilder<unknown> {
  return sql.join(
    t.key.map((k) => sql`${sql.ref(`${a}.${k}`)} = ${sql.ref(`${b}.${k}`)}`),
    sql` and `,
  );
}

/** Differing rows per table: full outer join on the primary key, rows compared as jsonb. */
async function compare(
  tx: DbTx,
  tables: readonly TableInfo[],
  maxDifferences: number,
): Promise<{ reports: TableReport[]; differences: RowDifference[]; truncated: boolean; differing: Map<string, number[]> }> {
  const reports: TableReport[] = [];
  const differences: RowDifference[] = [];
  const differing = new Map<string, number[]>();
  let truncated = false;
  for (const t of tables) {
    const live = q(t.schema, t.table);
    const shadow = q(SHADOW_SCHEMA, t.table);
    const k0 = t.key[0]!;
    const counts = await sql<{ live: number; rebuilt: number }>`
      select (select count(*) from ${live})::int8 as live, (select count(*) from ${shadow})::int8 as rebuilt`.execute(tx);
    const { rows } = await sql<{ live: Record<string, unknown> | null; rebuilt: Record<string, unknown> | null }>`
      select case when l.${sql.id(k0)} is null then null else to_jsonb(l) end as live,
             case when s.${sql.id(k0)} is null then null else to_jsonb(s) end as rebuilt
      from ${live} l full join ${shadow} s on ${keyMatch(t, 'l', 's')}
      where l.${sql.id(k0)} is null or s.${sql.id(k0)} is null or to_jsonb(l) <> to_jsonb(s)
      order by ${sql.join(t.key.map((k) => sql`coalesce(l.${sql.id(k)}, s.${sql.id(k)})`))}`.execute(tx);
    reports.push({ table: t.table, live_rows: Number(counts.rows[0]!.live), rebuilt_rows: Number(counts.rows[0]!.rebuilt), differing_rows: rows.length });
    if (t.key.length === 1) differing.set(t.table, rows.map((r) => Number((r.live ?? r.rebuilt)![k0])));
    for (const r of rows) {
      if (differences.length >= maxDifferences) {
        truncated = true;
        break;
      }
      const any = (r.live ?? r.rebuilt)!;
      const key = Object.fromEntries(t.key.map((k) => [k, any[k]]));
      if (!r.live) differences.push({ table: t.table, key, kind: 'only_rebuilt' });
      else if (!r.rebuilt) differences.push({ table: t.table, key, kind: 'only_live' });
      else {
        const columns = t.columns
          .filter((c) => JSON.stringify(r.live![c]) !== JSON.stringify(r.rebuilt![c]))
          .map((c) => (isSecretField(c) ? { column: c, live: REDACTED, rebuilt: REDACTED } : { column: c, live: r.live![c], rebuilt: r.rebuilt![c] }));
        differences.push({ table: t.table, key, kind: 'changed', columns });
      }
    }
  }
  return { reports, differences, truncated, differing };
}

/** Makes the live table equal to the shadow one by replacing only the rows that differ. */
async function replaceDiffering(tx: DbTx, t: TableInfo): Promise<{ deleted: number; inserted: number }> {
  const live = q(t.schema, t.table);
  const shadow = q(SHADOW_SCHEMA, t.table);
  const cols = sql.join(t.columns.map((c) => sql.id(c)));
  const deleted = await sql`
    delete from ${live} l where not exists (select 1 from ${shadow} s where ${keyMatch(t, 's', 'l')} and to_jsonb(s) = to_jsonb(l))`.execute(tx);
  const inserted = await sql`
    insert into ${live} (${cols}) select ${sql.join(t.columns.map((c) => sql.ref(`s.${c}`)))} from ${shadow} s
    where not exists (select 1 from ${live} l where ${keyMatch(t, 'l', 's')})`.execute(tx);
  return { deleted: Number(deleted.numAffectedRows ?? 0n), inserted: Number(inserted.numAffectedRows ?? 0n) };
}

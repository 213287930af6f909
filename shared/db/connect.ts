import pg from 'pg';
import { Kysely, Migrator, PostgresDialect, type Transaction } from 'kysely';
import { migrations } from '../../migrations/index.js';
import type { Database } from './schema.js';

export type Db = Kysely<Database>;
export type DbTx = Transaction<Database>;

const INT8_OID = 20;

/** A pg pool whose int8 columns come back as numbers (ids, positions and counters all fit in 2^53). */
export function createPool(connectionString: string, max = 10, onIdleError?: (err: Error) => void): pg.Pool {
  const pool = new pg.Pool({
    connectionString,
    max,
    // A PostgreSQL that hangs (rather than refusing) must not queue callers forever.
    connectionTimeoutMillis: 10_000,
    types: {
      getTypeParser: ((oid: number, format?: string) =>
        oid === INT8_OID ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
    },
  });
  // An idle client whose server connection dies (PostgreSQL restart, DROP DATABASE ... FORCE) makes
  // the pool emit 'error'; unhandled, that would crash the process. The pool replaces the client.
  pool.on('error', (err) => onIdleError?.(err));
  return pool;
}

export function createDb(pool: pg.Pool): Db {
  return new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
}

/** Runs every pending migration; throws with the failing migration's error. */
export async function migrateToLatest(db: Kysely<any>): Promise<void> {
  const migrator = new Migrator({ db, provider: { getMigrations: async () => migrations } });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    const failed = results?.find((r) => r.status === 'Error');
    throw new Error(`migration ${failed?.migrationName ?? '?'} failed: ${String(error)}`, { cause: error });
  }
}

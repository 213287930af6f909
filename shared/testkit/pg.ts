import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { createDb, createPool, migrateToLatest, type Db } from '../db/connect.js';

/** Admin connection for creating throwaway databases (CI and dev machines: trust auth on 127.0.0.1). */
export const TEST_PG_ADMIN_URL = process.env.TUNNOX_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export interface TestDatabase {
  url: string;
  name: string;
  db: Db;
  pool: pg.Pool;
  /** Closes the pool and drops the database. */
  drop(): Promise<void>;
}

export function uniqueName(prefix: string): string {
  return `${prefix}_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
}

export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

/** Creates a fresh, migrated database with a unique name. Always call drop() (t.teardown). */
/** A fresh database on the server of `adminUrl` (default TUNNOX_TEST_PG_URL or the local postgres), dropped by drop(). */
export async function createTestDatabase(prefix = 'tnx_test', migrate = true, adminUrl = TEST_PG_ADMIN_URL): Promise<TestDatabase> {
  const name = uniqueName(prefix);
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE "${name}"`);
  } finally {
    await admin.end();
  }
  const url = withDatabase(adminUrl, name);
  const pool = createPool(url);
  const db = createDb(pool);
  if (migrate) await migrateToLatest(db);
  return {
    url,
    name,
    db,
    pool,
    async drop() {
      // pool.end() resolves before its clients' sockets are closed, so DROP ... WITH (FORCE) below
      // can still terminate one (57P01); unhandled, the pool would re-emit that as a fatal 'error'.
      pool.on('error', () => undefined);
      await db.destroy().catch(() => undefined);
      const a = new pg.Client({ connectionString: adminUrl });
      await a.connect();
      try {
        await a.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      } finally {
        await a.end();
      }
    },
  };
}

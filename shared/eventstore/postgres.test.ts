import type pg from 'pg';
import t from 'tap';
import { createDb, createPool } from '../db/connect.js';
import { silentLogger } from '../platform/logger.js';
import { createTestDatabase } from '../testkit/pg.js';
import { buildEnvelope } from './command.js';
import { eventStoreContract } from './contract.js';
import { EventStoreUnavailableError } from './errors.js';
import { PostgresEventStore } from './postgres.js';

eventStoreContract(t, async () => {
  const tdb = await createTestDatabase('tnx_es_pg');
  const store = new PostgresEventStore({ db: tdb.db, pool: tdb.pool, logger: silentLogger(), pollIntervalMs: 50 });
  return {
    store,
    async cleanup() {
      await store.close();
      await tdb.drop();
    },
  };
});

t.test('NOTIFY wakes a subscriber without waiting for the poll', async (t) => {
  const tdb = await createTestDatabase('tnx_es_pg');
  t.teardown(() => tdb.drop());
  // Polling effectively off: only the notification can deliver within the test's bound.
  const store = new PostgresEventStore({ db: tdb.db, pool: tdb.pool, pollIntervalMs: 600_000 });
  t.teardown(() => store.close());
  const seen: number[] = [];
  await store.subscribe({ name: 'notify', afterPosition: 0, handler: async (e) => void seen.push(e.position), onError: () => undefined });
  await until(async () => (await listeners(tdb.pool)) === 1, 'the LISTEN connection');
  const { position } = await store.append('user.1', someEnvelope(), { expectedRevision: 'no_stream' });
  await until(async () => seen.length === 1, 'the notified event');
  t.same(seen, [position]);
});

t.test('a subscriber outlives its LISTEN connection: polling delivers, then LISTEN comes back', async (t) => {
  const tdb = await createTestDatabase('tnx_es_pg');
  t.teardown(() => tdb.drop());
  const store = new PostgresEventStore({ db: tdb.db, pool: tdb.pool, pollIntervalMs: 50 });
  t.teardown(() => store.close());
  const seen: number[] = [];
  const errors: unknown[] = [];
  await store.subscribe({ name: 'survivor', afterPosition: 0, handler: async (e) => void seen.push(e.position), onError: (e) => errors.push(e) });
  await until(async () => (await listeners(tdb.pool)) === 1, 'the LISTEN connection');
  await tdb.pool.query(`select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and query ilike 'LISTEN%'`);
  const { position } = await store.append('user.1', someEnvelope(), { expectedRevision: 'no_stream' });
  await until(async () => seen.length === 1, 'the event after the LISTEN connection died');
  t.same(seen, [position]);
  await until(async () => (await listeners(tdb.pool)) === 1, 'a new LISTEN connection');
  t.same(errors, [], 'the subscription never halted');
});

t.test('a closed store refuses work with TNX_EVENTSTORE_UNAVAILABLE', async (t) => {
  const tdb = await createTestDatabase('tnx_es_pg');
  t.teardown(() => tdb.drop());
  const store = new PostgresEventStore({ db: tdb.db, pool: tdb.pool });
  await store.close();
  await t.rejects(store.headPosition(), EventStoreUnavailableError);
});

t.test('an unreachable database is reported as unavailable, not as a raw pg error', async (t) => {
  // Nothing listens on loopback port 1: the connection is refused.
  const pool = createPool('postgres://postgres@127.0.0.1:1/none', 1);
  const db = createDb(pool);
  t.teardown(() => db.destroy());
  const store = new PostgresEventStore({ db, pool });
  for (const attempt of [store.headPosition(), store.readStream('user.1'), store.append('user.1', someEnvelope(), { expectedRevision: 'any' })]) {
    const err = await attempt.then(
      () => null,
      (e: unknown) => e,
    );
    t.type(err, EventStoreUnavailableError);
    t.equal((err as EventStoreUnavailableError).code, 'TNX_EVENTSTORE_UNAVAILABLE');
  }
});

function someEnvelope() {
  return buildEnvelope('user.1', { type: 'IdAllocated', data: { sequence: 's', id: 1 } }, { actor: { kind: 'system', id: 'test' } });
}

async function listeners(pool: pg.Pool): Promise<number> {
  const r = await pool.query<{ n: number }>(
    `select count(*)::int as n from pg_stat_activity where datname = current_database() and query ilike 'LISTEN%' and pid <> pg_backend_pid()`,
  );
  return r.rows[0]?.n ?? 0;
}

async function until(done: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    if (await done()) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`timed out waiting for ${what}`);
}

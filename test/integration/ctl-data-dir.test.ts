import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sql } from 'kysely';
import t from 'tap';
import { createMemoryBus } from '../../shared/bus/memory.js';
import { skipStreamFor } from '../../shared/contracts/events.js';
import { createDb, createPool, migrateToLatest, type Db } from '../../shared/db/connect.js';
import { buildEnvelope } from '../../shared/eventstore/command.js';
import { PostgresEventStore } from '../../shared/eventstore/postgres.js';
import { silentLogger } from '../../shared/platform/logger.js';
import { rawAppend } from '../../shared/testkit/raw-append.js';
import { startEmbeddedPostgres } from '../../services/cli/embedded-postgres.js';
import { READ_MODEL_PROJECTION, startProjector, type ProjectionHaltedError } from '../../services/projector/index.js';
import { checkpointOf, eventually } from '../../services/projector/test/fixtures.js';

/**
 * `tunnox ctl events skip --data-dir DIR` on a standalone server's embedded PostgreSQL: reused while
 * it runs (the server is up), started for the command and stopped after it when it does not.
 */

const MAIN = fileURLToPath(new URL('../../services/cli/main.js', import.meta.url));
const META = { actor: { kind: 'system' as const, id: 'ctl-data-dir-test' } };
const USER = 100_000_001;

function ctl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, 'ctl', 'events', ...args], { timeout: 120_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

async function open(dataDir: string) {
  const pg = await startEmbeddedPostgres(dataDir, silentLogger());
  const pool = createPool(pg.url, 4, () => undefined);
  const db = createDb(pool);
  const store = new PostgresEventStore({ db, pool, pollIntervalMs: 50 });
  let closed = false;
  return {
    db,
    store,
    async close() {
      if (closed) return;
      closed = true;
      await store.close();
      await db.destroy();
      await pg.stop();
    },
  };
}

/** A UserCreated without username/email, written past the append guard: fails its schema, so it halts the projector. */
async function writePoison(db: Db, id: number): Promise<number> {
  const envelope = {
    ...buildEnvelope(`user.${id}`, { type: 'UserCreated', data: { user_id: id, username: 'x', email: 'x@example.test', status: 'active' } }, META),
    data: { user_id: id },
  };
  return rawAppend({ kind: 'postgres', db }, `user.${id}`, envelope);
}

async function appendUser(store: PostgresEventStore, id: number): Promise<number> {
  const e = buildEnvelope(`user.${id}`, { type: 'UserCreated', data: { user_id: id, username: `u${id}`, email: `u${id}@example.test`, status: 'active' } }, META);
  return (await store.append(`user.${id}`, e, { expectedRevision: 'no_stream' })).position;
}

async function project(db: Db, store: PostgresEventStore, until: number): Promise<ProjectionHaltedError | null> {
  const bus = createMemoryBus();
  let halted: ProjectionHaltedError | null = null;
  const p = await startProjector({ store, db, bus, logger: silentLogger(), onHalt: (e) => (halted = e) });
  await eventually(async () => halted !== null || ((await checkpointOf(db, READ_MODEL_PROJECTION)) ?? 0) >= until, 20_000);
  await p.stop();
  await bus.close();
  return halted;
}

t.test('--data-dir: reuses the running embedded PostgreSQL, or starts and stops it', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'tnx-ctl-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));

  let server = await open(dataDir);
  t.teardown(() => server.close());
  await migrateToLatest(server.db);
  await appendUser(server.store, USER);
  const poisonA = await writePoison(server.db, USER + 1);
  const poisonB = await writePoison(server.db, USER + 2);
  const last = await appendUser(server.store, USER + 3);
  t.match((await project(server.db, server.store, last))?.details, { failedAt: poisonA }, 'halts at the first poison');

  // The server's PostgreSQL is up: the command must use it, not stop it and start another.
  const reused = await ctl(['skip', String(poisonA), '--reason', 'schema-less user', '--operator', 'carol', '--data-dir', dataDir]);
  t.equal(reused.code, 0, reused.stderr);
  t.match(reused.stderr, /standalone, running server/);
  t.equal((await server.store.readStream(skipStreamFor(poisonA))).events.length, 1, 'the skip is in the log');
  t.equal(Number((await sql<{ one: number }>`select 1 as one`.execute(server.db)).rows[0]!.one), 1, 'the running database was left running');
  t.match((await project(server.db, server.store, last))?.details, { failedAt: poisonB }, 'passes the first, halts at the second');

  // Server stopped: the command starts the embedded PostgreSQL itself and stops it afterwards.
  await server.close();
  const started = await ctl(['skip', String(poisonB), '--reason', 'schema-less user', '--operator', 'carol', '--data-dir', dataDir]);
  t.equal(started.code, 0, started.stderr);
  t.match(started.stderr, /embedded PostgreSQL started for this command/);
  t.match(JSON.parse(started.stdout), { skipped: { position: poisonB }, fails_to_project: true });

  server = await open(dataDir);
  // Up to the head, which is now the second skip (after `last`): waiting for `last` alone raced it.
  t.equal(await project(server.db, server.store, await server.store.headPosition()), null, 'the server, started again, projects past both');
  t.equal(await checkpointOf(server.db, READ_MODEL_PROJECTION), await server.store.headPosition());
  const users = (await server.db.selectFrom('users').select('user_id').orderBy('user_id').execute()).map((r) => r.user_id);
  t.same(users, [USER, USER + 3]);

  const noDir = await ctl(['skip', '1', '--reason', 'x', '--data-dir', join(dataDir, 'nope')]);
  t.equal(noDir.code, 1);
  t.match(noDir.stderr, /holds no embedded PostgreSQL/);
});

import t from 'tap';
import { createMemoryBus } from '../../shared/bus/memory.js';
import { PostgresEventStore } from '../../shared/eventstore/postgres.js';
import { silentLogger } from '../../shared/platform/logger.js';
import { createTestDatabase } from '../../shared/testkit/pg.js';
import { BadEventError, ProjectionHaltedError } from './errors.js';
import { READ_MODEL_PROJECTION, rebuildReadModels, startProjector } from './index.js';
import type { Projection } from './projection.js';
import { runProjection } from './runner.js';
import {
  absorbIdleClientErrors,
  append,
  appendRaw,
  appendScenario,
  at,
  captureLogs,
  checkpointOf,
  dumpReadModels,
  eventually,
  untilCheckpoint,
  USER,
} from './test/fixtures.js';
import { usersProjection } from './users.projection.js';

async function setup(t: { teardown(fn: () => unknown): void }) {
  const tdb = await createTestDatabase('tnx_runner');
  t.teardown(() => tdb.drop());
  absorbIdleClientErrors(tdb.pool);
  const store = new PostgresEventStore({ db: tdb.db, pool: tdb.pool });
  t.teardown(() => store.close());
  const bus = createMemoryBus();
  t.teardown(() => bus.close());
  return { db: tdb.db, store, bus, raw: { kind: 'postgres' as const, db: tdb.db } };
}

const userCreated = (id: number) => ({
  type: 'UserCreated' as const,
  data: { user_id: id, username: `u${id}`, email: `u${id}@example.test`, status: 'active' as const },
});

t.test('a failing handler rolls back the whole event and halts with the checkpoint before it', async (t) => {
  const { db, store, bus } = await setup(t);
  // Runs after usersProjection in the same transaction, and fails for one particular user.
  const failing: Projection = {
    name: 'failing',
    version: 1,
    handlers: {
      async UserCreated(_tx, event) {
        if (event.data.user_id === USER + 1) throw new Error('handler exploded');
      },
    },
  };
  const ok = await append(store, `user.${USER}`, userCreated(USER), at(0));
  const bad = await append(store, `user.${USER + 1}`, userCreated(USER + 1), at(1));
  await append(store, `user.${USER + 2}`, userCreated(USER + 2), at(2));
  const logs = captureLogs();
  let halted: ProjectionHaltedError | null = null;
  const running = await runProjection({
    name: 'test-failing',
    projections: [usersProjection, failing],
    store,
    db,
    bus,
    logger: logs.logger,
    onHalt: (e) => (halted = e),
  });
  t.teardown(() => running.stop());
  t.ok(await eventually(() => halted !== null), 'halts');
  t.equal(running.halted, halted, 'the running projection exposes the reason');
  const err = halted as ProjectionHaltedError | null;
  t.equal((err?.cause as Error | undefined)?.message, 'handler exploded');
  t.same(err?.details, { projection: 'test-failing', checkpoint: ok, failedAt: bad }, 'names the checkpoint and the failing event');
  t.equal(await checkpointOf(db, 'test-failing'), ok, 'checkpoint stays before the failing event');
  const users = (await db.selectFrom('users').select('user_id').orderBy('user_id').execute()).map((r) => r.user_id);
  t.same(users, [USER], 'the failing event wrote nothing (usersProjection rolled back with it), later events were not applied');
  const errors = logs.lines().filter((l) => l.level === 50);
  t.equal(errors.length, 1);
  t.match(errors[0], { msg: /projection halted/, err: { message: 'handler exploded' }, position: ok, failedAt: bad });
});

t.test('a rebuild that meets a bad event aborts and leaves the read models and checkpoint untouched', async (t) => {
  const { db, store, bus, raw } = await setup(t);
  const s = await appendScenario(store);
  const projector = await startProjector({ store, db, bus, logger: silentLogger() });
  t.ok(await untilCheckpoint(db, READ_MODEL_PROJECTION, s.last));
  await projector.stop();
  const before = await dumpReadModels(db);
  await appendRaw(raw, 'mystery.1', { type: 'MysteryHappened' }, at(30));
  await t.rejects(rebuildReadModels({ store, db, logger: silentLogger() }), BadEventError);
  t.equal(await dumpReadModels(db), before, 'read models unchanged');
  t.equal(await checkpointOf(db, READ_MODEL_PROJECTION), s.last, 'checkpoint unchanged');
});

t.test('a rebuild next to a running projector reproduces its rows and the projector carries on', async (t) => {
  const { db, store, bus } = await setup(t);
  const s = await appendScenario(store);
  const projector = await startProjector({ store, db, bus, logger: silentLogger() });
  t.teardown(() => projector.stop());
  t.ok(await untilCheckpoint(db, READ_MODEL_PROJECTION, s.last));
  const live = await dumpReadModels(db);
  const rebuilt = await rebuildReadModels({ store, db, logger: silentLogger() });
  t.equal(rebuilt.position, s.last);
  t.equal(await dumpReadModels(db), live);
  const next = await append(store, `user.${USER + 5}`, userCreated(USER + 5), at(40));
  t.ok(await untilCheckpoint(db, READ_MODEL_PROJECTION, next), 'the live projector keeps going after the rebuild');
  t.equal(projector.position, next);
  t.equal((await db.selectFrom('users').select('user_id').execute()).length, 2);
});

t.test('stop() is idempotent and a stopped projector no longer projects', async (t) => {
  const { db, store, bus } = await setup(t);
  const first = await append(store, `user.${USER}`, userCreated(USER), at(0));
  const projector = await startProjector({ store, db, bus, logger: silentLogger() });
  t.ok(await untilCheckpoint(db, READ_MODEL_PROJECTION, first));
  await Promise.all([projector.stop(), projector.stop()]);
  await projector.stop();
  await append(store, `user.${USER + 1}`, userCreated(USER + 1), at(1));
  // Nothing can advance the checkpoint now; a bounded wait confirms it stays put.
  t.notOk(await eventually(async () => ((await checkpointOf(db, READ_MODEL_PROJECTION)) ?? 0) > first, 300), 'checkpoint does not move');
  t.equal(projector.position, first);
});

import t from 'tap';
import { createMemoryBus } from '../../shared/bus/memory.js';
import { PostgresEventStore } from '../../shared/eventstore/postgres.js';
import { silentLogger } from '../../shared/platform/logger.js';
import { createTestDatabase } from '../../shared/testkit/pg.js';
import { createProjectionWaiter, READ_MODEL_PROJECTION, startProjector } from './index.js';
import { absorbIdleClientErrors, append, at, CLIENT_A, CLIENT_B, clientRegistered, untilCheckpoint } from './test/fixtures.js';

async function setup(t: { teardown(fn: () => unknown): void }) {
  const tdb = await createTestDatabase('tnx_waiter');
  t.teardown(() => tdb.drop());
  absorbIdleClientErrors(tdb.pool);
  const store = new PostgresEventStore({ db: tdb.db, pool: tdb.pool });
  t.teardown(() => store.close());
  const bus = createMemoryBus();
  t.teardown(() => bus.close());
  const projector = await startProjector({ store, db: tdb.db, bus, logger: silentLogger() });
  t.teardown(() => projector.stop());
  return { db: tdb.db, store, bus, projector };
}

t.test('an already reached position resolves true from the checkpoint', async (t) => {
  const { db, store } = await setup(t);
  const p = await append(store, `client.${CLIENT_A}`, clientRegistered(CLIENT_A), at(0));
  t.ok(await untilCheckpoint(db, READ_MODEL_PROJECTION, p));
  // A bus that never carries notices: only the first checkpoint read can answer.
  const silentBus = createMemoryBus();
  t.teardown(() => silentBus.close());
  const waiter = createProjectionWaiter({ db, bus: silentBus, pollMs: 60_000 });
  t.teardown(() => waiter.close());
  t.equal(await waiter.waitFor(p, 60_000), true);
  t.equal(await waiter.waitFor(0, 60_000), true, 'position 0 is always reached');
  t.equal(await waiter.waitFor(p - 1, 60_000), true);
});

t.test('an unreachable position times out false', async (t) => {
  const { db, store, bus } = await setup(t);
  const p = await append(store, `client.${CLIENT_A}`, clientRegistered(CLIENT_A), at(0));
  const waiter = createProjectionWaiter({ db, bus, pollMs: 20 });
  t.teardown(() => waiter.close());
  t.equal(await waiter.waitFor(p, 15_000), true);
  t.equal(await waiter.waitFor(p + 1000, 200), false);
});

t.test('a pending wait resolves when the projector commits, through notices alone', async (t) => {
  const { db, store, bus } = await setup(t);
  // Polling effectively off: only a projection notice can resolve this wait before its timeout.
  const waiter = createProjectionWaiter({ db, bus, pollMs: 600_000 });
  t.teardown(() => waiter.close());
  const head = await store.headPosition();
  const waiting = waiter.waitFor(head + 1, 30_000);
  await append(store, `client.${CLIENT_A}`, clientRegistered(CLIENT_A), at(0));
  t.equal(await waiting, true);
});

t.test('a wait resolves by polling when no notice arrives', async (t) => {
  const { db, store } = await setup(t);
  const silentBus = createMemoryBus();
  t.teardown(() => silentBus.close());
  const waiter = createProjectionWaiter({ db, bus: silentBus, pollMs: 20 });
  t.teardown(() => waiter.close());
  const head = await store.headPosition();
  const first = waiter.waitFor(head + 1, 30_000);
  const second = waiter.waitFor(head + 2, 30_000);
  await append(store, `client.${CLIENT_A}`, clientRegistered(CLIENT_A), at(0));
  t.equal(await first, true);
  await append(store, `client.${CLIENT_B}`, clientRegistered(CLIENT_B), at(1));
  t.equal(await second, true);
});

t.test('only notices of the named projection count', async (t) => {
  const { db, store, bus } = await setup(t);
  const waiter = createProjectionWaiter({ db, bus, name: 'some-other-projection', pollMs: 20 });
  t.teardown(() => waiter.close());
  const p = await append(store, `client.${CLIENT_A}`, clientRegistered(CLIENT_A), at(0));
  t.ok(await untilCheckpoint(db, READ_MODEL_PROJECTION, p));
  t.equal(await waiter.waitFor(p, 200), false, 'read-models progress does not satisfy another projection');
});

t.test('close() ends pending waits with false', async (t) => {
  const { db, store, bus } = await setup(t);
  const waiter = createProjectionWaiter({ db, bus });
  const head = await store.headPosition();
  const pending = waiter.waitFor(head + 1000, 600_000);
  // Usually lets the first checkpoint read finish so the wait is pending; if not, the wait sees
  // the closed flag after that read. Both paths must answer false.
  await new Promise((r) => setTimeout(r, 50));
  waiter.close();
  t.equal(await pending, false);
  t.equal(await waiter.waitFor(0, 1000), false, 'a closed waiter answers false');
});

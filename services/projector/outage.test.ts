import t from 'tap';
import pg from 'pg';
import { createMemoryBus } from '../../shared/bus/memory.js';
import { isTransientDbError } from '../../shared/db/errors.js';
import { openJetStreamEventStore } from '../../shared/eventstore/jetstream.js';
import { silentLogger } from '../../shared/platform/logger.js';
import { createTestNats } from '../../shared/testkit/nats.js';
import { TEST_PG_ADMIN_URL, createTestDatabase } from '../../shared/testkit/pg.js';
import { startProjector } from './index.js';
import { absorbIdleClientErrors, append, at, CLIENT_A, CLIENT_B, clientRegistered, eventually } from './test/fixtures.js';

t.test('classifies transient database failures', async (t) => {
  t.ok(isTransientDbError(Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' })));
  t.ok(isTransientDbError(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' })));
  t.ok(isTransientDbError(new Error('Connection terminated unexpectedly')));
  t.ok(isTransientDbError(new Error('wrapped', { cause: Object.assign(new Error('x'), { code: '08006' }) })), 'looks through causes');
  t.notOk(isTransientDbError(Object.assign(new Error('duplicate key'), { code: '23505' })), 'a constraint violation is not transient');
  t.notOk(isTransientDbError(new Error('unknown event type')));
});

// Events keep arriving in JetStream while the read-model database refuses connections: the
// projector must wait and retry, not halt, and apply them once PostgreSQL is back.
t.test('a read-model database outage delays the projection but does not halt it', async (t) => {
  const tdb = await createTestDatabase('tnx_outage');
  t.teardown(() => tdb.drop());
  absorbIdleClientErrors(tdb.pool);
  const nats = await createTestNats();
  t.teardown(() => nats.cleanup());
  const store = await openJetStreamEventStore({ nc: nats.nc, streamName: nats.streamName, subjectPrefix: nats.subjectPrefix });
  t.teardown(() => store.close());
  const bus = createMemoryBus();
  t.teardown(() => bus.close());
  let halted: unknown;
  const projector = await startProjector({ store, db: tdb.db, bus, logger: silentLogger(), onHalt: (err) => (halted = err) });
  t.teardown(() => projector.stop());

  const count = async () => (await tdb.db.selectFrom('clients').select('client_id').execute()).length;
  await append(store, `client.${CLIENT_A}`, clientRegistered(CLIENT_A), at(0));
  t.ok(await eventually(async () => (await count()) === 1), 'first event projected');

  const admin = new pg.Client({ connectionString: TEST_PG_ADMIN_URL });
  await admin.connect();
  t.teardown(() => admin.end());
  await admin.query(`ALTER DATABASE "${tdb.name}" WITH ALLOW_CONNECTIONS false`);
  await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [tdb.name]);
  t.teardown(() => admin.query(`ALTER DATABASE "${tdb.name}" WITH ALLOW_CONNECTIONS true`).catch(() => undefined));

  await append(store, `client.${CLIENT_B}`, clientRegistered(CLIENT_B), at(1));
  await new Promise((r) => setTimeout(r, 800)); // a few failed attempts (bounded wait)
  t.equal(halted, undefined, 'still running during the outage');

  await admin.query(`ALTER DATABASE "${tdb.name}" WITH ALLOW_CONNECTIONS true`);
  t.ok(await eventually(async () => (await count()) === 2), 'the event that arrived during the outage is projected afterwards');
  t.equal(halted, undefined, 'never halted');
});

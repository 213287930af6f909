import t from 'tap';
import { createMemoryBus } from '../../shared/bus/memory.js';
import { PostgresEventStore } from '../../shared/eventstore/postgres.js';
import { createTestDatabase } from '../../shared/testkit/pg.js';
import { absorbIdleClientErrors } from './test/fixtures.js';
import { projectorSuite } from './test/suite.js';

// The projector against the standalone event log: PostgreSQL events, read models in the same database.
projectorSuite(
  t,
  async (teardown) => {
    const tdb = await createTestDatabase('tnx_projector');
    teardown(() => tdb.drop());
    absorbIdleClientErrors(tdb.pool);
    const store = new PostgresEventStore({ db: tdb.db, pool: tdb.pool });
    teardown(() => store.close());
    const bus = createMemoryBus();
    teardown(() => bus.close());
    return { store, raw: { kind: 'postgres', db: tdb.db }, db: tdb.db, bus };
  },
  { concurrentSameName: true },
);

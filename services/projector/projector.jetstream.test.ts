import t from 'tap';
import { createMemoryBus } from '../../shared/bus/memory.js';
import { openJetStreamEventStore } from '../../shared/eventstore/jetstream.js';
import { createTestNats } from '../../shared/testkit/nats.js';
import { createTestDatabase } from '../../shared/testkit/pg.js';
import { absorbIdleClientErrors } from './test/fixtures.js';
import { projectorSuite } from './test/suite.js';

// The projector in JetStream mode: events in a JetStream stream, read models in PostgreSQL.
projectorSuite(t, async (teardown) => {
  const tdb = await createTestDatabase('tnx_projector_js');
  teardown(() => tdb.drop());
  absorbIdleClientErrors(tdb.pool);
  const nats = await createTestNats();
  teardown(() => nats.cleanup());
  const store = await openJetStreamEventStore({ nc: nats.nc, streamName: nats.streamName, subjectPrefix: nats.subjectPrefix });
  teardown(() => store.close());
  const bus = createMemoryBus();
  teardown(() => bus.close());
  return { store, raw: { kind: 'jetstream', nc: nats.nc, streamName: nats.streamName, subjectPrefix: nats.subjectPrefix }, db: tdb.db, bus };
});

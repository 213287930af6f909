import t from 'tap';
import { jetstreamManager } from '@nats-io/jetstream';
import { silentLogger } from '../platform/logger.js';
import { createTestNats } from '../testkit/nats.js';
import { eventStoreContract } from './contract.js';
import { EventStoreMisconfiguredError } from './errors.js';
import { openJetStreamEventStore } from './jetstream.js';

eventStoreContract(t, async () => {
  const nats = await createTestNats();
  const store = await openJetStreamEventStore({
    nc: nats.nc,
    streamName: nats.streamName,
    subjectPrefix: nats.subjectPrefix,
    logger: silentLogger(),
  });
  return {
    store,
    async cleanup() {
      await store.close();
      await nats.cleanup();
    },
  };
});

t.test('an existing stream with the right subjects is reused, events included', async (t) => {
  const nats = await createTestNats();
  t.teardown(() => nats.cleanup());
  const opts = { nc: nats.nc, streamName: nats.streamName, subjectPrefix: nats.subjectPrefix };
  const first = await openJetStreamEventStore(opts);
  const { position } = await first.append('user.1', envelope(), { expectedRevision: 'no_stream' });
  await first.close();
  t.equal(nats.nc.isClosed(), false, 'close() leaves the connection to its owner');
  const second = await openJetStreamEventStore(opts);
  t.teardown(() => second.close());
  t.equal(await second.headPosition(), position);
});

t.test('a stream of the same name with other subjects is refused', async (t) => {
  const nats = await createTestNats();
  t.teardown(() => nats.cleanup());
  const jsm = await jetstreamManager(nats.nc);
  await jsm.streams.add({ name: nats.streamName, subjects: [`${nats.subjectPrefix}.other.>`] });
  await t.rejects(
    openJetStreamEventStore({ nc: nats.nc, streamName: nats.streamName, subjectPrefix: nats.subjectPrefix }),
    EventStoreMisconfiguredError,
  );
});

function envelope() {
  return {
    id: crypto.randomUUID(),
    type: 'UserCreated',
    schema_version: 1,
    aggregate_type: 'user',
    aggregate_id: '1',
    occurred_at: new Date().toISOString(),
    actor: { kind: 'system' as const, id: 'test' },
    correlation_id: 'c',
    causation_id: null,
    data: { user_id: 1, username: 'a', email: 'a@b.c', status: 'active' },
  };
}

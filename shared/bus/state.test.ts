import { jetstreamManager } from '@nats-io/jetstream';
import t from 'tap';
import { MemoryEdgeView, startJetStreamViewFeed } from '../../services/edge/view/index.js';
import { silentLogger } from '../platform/logger.js';
import { createTestNats } from '../testkit/nats.js';
import { createStatePublisher, ensureStateStream, stateStreamName, stateSubject, type ClientState, type EntityUpdate } from './state.js';

const client = (id: number, config_version: number, hash = `hash-${id}`): ClientState => ({
  client_id: id,
  client_type: 'managed',
  auth_code_hash: hash,
  config_version,
  enabled: true,
  epoch: 0,
});
const update = (id: number, version: number, hash?: string): EntityUpdate => ({ kind: 'client', id, version, state: client(id, version, hash) });

async function setup(t: Tap) {
  const nats = await createTestNats();
  t.teardown(() => nats.cleanup());
  const stream = stateStreamName(nats.streamName);
  const publisher = await createStatePublisher({ nc: nats.nc, stream, prefix: nats.subjectPrefix });
  const jsm = await jetstreamManager(nats.nc);
  const last = async (id: number) => (await jsm.streams.getMessage(stream, { last_by_subj: stateSubject(nats.subjectPrefix, 'client', id) }))?.json<EntityUpdate>();
  return { nats, stream, publisher, jsm, last };
}
type Tap = { teardown(fn: () => unknown): void };

t.test('the publisher never lets an older or equal version replace a newer one on the stream', async (t) => {
  const { publisher, last, jsm, stream } = await setup(t);
  t.equal(await publisher.publish(update(1, 10)), 'published');
  t.equal(await publisher.publish(update(1, 7, 'old')), 'stale', 'a late older state (another projector instance) is dropped');
  t.equal(await publisher.publish(update(1, 10, 'dup')), 'stale', 'a duplicate is dropped');
  t.equal(((await last(1))?.state as ClientState | null)?.auth_code_hash, 'hash-1');
  t.equal(await publisher.publish(update(1, 12, 'new')), 'published');
  t.equal((await last(1))?.version, 12);
  const info = await jsm.streams.info(stream);
  t.equal(info.state.messages, 1, 'one message per subject');
  t.equal(info.config.max_msgs_per_subject, 1);
});

t.test('concurrent publishers of one entity: the newest version wins whatever the order', async (t) => {
  const { publisher, nats, stream, last } = await setup(t);
  const other = await createStatePublisher({ nc: nats.nc, stream, prefix: nats.subjectPrefix });
  const versions = Array.from({ length: 20 }, (_, i) => i + 1).sort(() => Math.random() - 0.5);
  await Promise.all(versions.map((v, i) => (i % 2 ? publisher : other).publish(update(2, v))));
  t.equal((await last(2))?.version, 20);
});

t.test('a stream with another shape is refused', async (t) => {
  const { nats, jsm } = await setup(t);
  const name = `${nats.streamName}_ODD`;
  // Another prefix: two streams may not share subjects.
  await jsm.streams.add({ name, subjects: [`${nats.subjectPrefix}odd.state.>`] });
  await t.rejects(ensureStateStream(jsm, name, `${nats.subjectPrefix}odd`), /max_msgs_per_subject 1/);
});

t.test('the feed skips malformed messages and applies the valid ones; ready at the start-time last sequence', async (t) => {
  const { publisher, nats, stream } = await setup(t);
  await publisher.publish(update(3, 5));
  // Written by something that is not the projector: never reaches the view.
  await nats.nc.request(stateSubject(nats.subjectPrefix, 'client', 4), 'not json');
  await nats.nc.request(stateSubject(nats.subjectPrefix, 'client', 5), JSON.stringify({ kind: 'client', id: 5, version: 'x' }));
  await nats.nc.request(stateSubject(nats.subjectPrefix, 'client', 6), JSON.stringify(update(7, 1)));
  const view = new MemoryEdgeView();
  const feed = await startJetStreamViewFeed({ nc: nats.nc, stream, subjectPrefix: nats.subjectPrefix, view, logger: silentLogger() });
  t.teardown(() => feed.stop());
  await view.whenReady();
  t.same(view.size(), { clients: 1, mappings: 0 });
  t.ok(view.client(3));
  t.equal(view.client(7), undefined, 'a state filed under another id is dropped');
  t.equal(view.client(6), undefined);
  await publisher.publish(update(8, 9));
  t.ok(await view.waitForClient(8, 10_000), 'live update after the resync');
});

import t, { type Test } from 'tap';
import type { EventEnvelope } from '../contracts/envelope.js';
import { buildEnvelope } from '../eventstore/command.js';
import { UnstorableEventError } from '../eventstore/errors.js';
import { openJetStreamEventStore } from '../eventstore/jetstream.js';
import { PostgresEventStore } from '../eventstore/postgres.js';
import type { EventStore } from '../eventstore/types.js';
import { createTestNats } from './nats.js';
import { createTestDatabase } from './pg.js';
import { rawAppend, type RawLog } from './raw-append.js';

/** rawAppend writes what the store's append would, minus the guard: the store reads it back as its own. */

const META = { actor: { kind: 'system' as const, id: 'raw-append-test' } };

async function postgres(t: Test): Promise<{ store: EventStore; raw: RawLog }> {
  const tdb = await createTestDatabase('tnx_raw_append');
  t.teardown(() => tdb.drop());
  const store = new PostgresEventStore({ db: tdb.db, pool: tdb.pool, pollIntervalMs: 50 });
  t.teardown(() => store.close());
  return { store, raw: { kind: 'postgres', db: tdb.db } };
}

async function jetstream(t: Test): Promise<{ store: EventStore; raw: RawLog }> {
  const nats = await createTestNats();
  t.teardown(() => nats.cleanup());
  const store = await openJetStreamEventStore({ nc: nats.nc, streamName: nats.streamName, subjectPrefix: nats.subjectPrefix });
  t.teardown(() => store.close());
  return { store, raw: { kind: 'jetstream', nc: nats.nc, streamName: nats.streamName, subjectPrefix: nats.subjectPrefix } };
}

const user = (id: number): EventEnvelope =>
  buildEnvelope(`user.${id}`, { type: 'UserCreated', data: { user_id: id, username: `u${id}`, email: `u${id}@example.test`, status: 'active' } }, META);

for (const [name, open] of [['PostgreSQL', postgres], ['JetStream', jetstream]] as const) {
  t.test(`${name}: an event the guard refuses is stored in sequence and reads back unchanged`, async (t) => {
    const { store, raw } = await open(t);
    const first = await store.append('user.1', user(1), { expectedRevision: 'no_stream' });
    const poison: EventEnvelope = { ...user(1), data: { user_id: 1 } };
    await t.rejects(store.append('user.1', poison, { expectedRevision: first.revision }), UnstorableEventError, 'the guard refuses it');

    const at = await rawAppend(raw, 'user.1', poison);
    t.ok(at > first.position, 'appended after the head');
    t.equal(await store.headPosition(), at);
    const read = await store.readStream('user.1');
    t.same(read.events.map((e) => [e.position, e.version]), [[first.position, 1], [at, 2]], 'the next version of the stream');
    const { position: _p, version: _v, stream: _s, ...stored } = read.events[1]!;
    t.same(stored, poison, 'stored exactly as given');

    const next = await store.append('user.1', user(1), { expectedRevision: read.revision! });
    t.same((await store.readStream('user.1')).events.map((e) => e.version), [1, 2, 3], 'the store carries on after it');
    t.equal((await store.readAll(0, 10)).at(-1)?.position, next.position);
    await t.rejects(rawAppend(raw, 'user.2', poison), 'an envelope id already stored is not stored again');
  });
}

import t, { type Test } from 'tap';
import type { NatsConnection } from '@nats-io/transport-node';
import { releasePublicPort, reserveFirstFreePort, reservePublicPort } from '../../shared/domain/index.js';
import type { CommandMetadata } from '../../shared/eventstore/command.js';
import { openJetStreamEventStore } from '../../shared/eventstore/jetstream.js';
import { PostgresEventStore } from '../../shared/eventstore/postgres.js';
import type { EventStore } from '../../shared/eventstore/types.js';
import { createTestNats } from '../../shared/testkit/nats.js';
import { createTestDatabase } from '../../shared/testkit/pg.js';

/**
 * An aggregate read must not cost more as its history grows. Ports are the case that bit: the
 * allocator reads every candidate port of the range, and a port that was reserved and released
 * 100 times used to be read event by event (one JetStream request per event). Round trips are
 * counted, not timed: the same allocation on a store with 500 reserve/release cycles behind it
 * must cost exactly what it costs on a fresh store.
 */
const meta: CommandMetadata = { actor: { kind: 'system', id: 'test' } };
const RANGE = { min: 32000, max: 32010 };
const CHURNED_PORTS = 5;
const CYCLES_PER_PORT = 100;

interface Counted {
  store: EventStore;
  calls: Record<string, number>;
}

/** Counts every EventStore call by method name (each is at least one round trip). */
function counting(inner: EventStore): Counted {
  const calls: Record<string, number> = {};
  const store = new Proxy(inner, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        calls[String(prop)] = (calls[String(prop)] ?? 0) + 1;
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { store, calls };
}

async function churn(store: EventStore): Promise<void> {
  for (let cycle = 0; cycle < CYCLES_PER_PORT; cycle++) {
    for (let i = 0; i < CHURNED_PORTS; i++) {
      const port = RANGE.min + i;
      const mappingId = 5000 + cycle * CHURNED_PORTS + i;
      await reservePublicPort(store, { port, mappingId }, meta);
      await releasePublicPort(store, { port, mappingId }, meta);
    }
  }
}

/** Allocates one port and returns what it cost: store calls, and NATS requests when there is a connection. */
async function measureAllocation(store: EventStore, nc?: NatsConnection) {
  const counted = counting(store);
  const before = nc?.stats().outMsgs ?? 0;
  const { port } = await reserveFirstFreePort(counted.store, { range: RANGE, mappingId: 9999 }, meta);
  return { port, calls: counted.calls, natsRequests: (nc?.stats().outMsgs ?? 0) - before };
}

async function compare(t: Test, open: () => Promise<{ store: EventStore; nc?: NatsConnection }>): Promise<void> {
  const fresh = await open();
  const churned = await open();
  await churn(churned.store);
  // In both stores the lowest port is held, so the allocator also walks past a busy candidate
  // (in the churned store, one with a long history) before it finds a free one.
  for (const s of [fresh, churned]) await reservePublicPort(s.store, { port: RANGE.min, mappingId: 7777 }, meta);
  const freshCost = await measureAllocation(fresh.store, fresh.nc);
  const after = await measureAllocation(churned.store, churned.nc);
  t.equal(freshCost.port, RANGE.min + 1, 'the fresh store skips the held port and takes the next');
  t.equal(after.port, RANGE.min + 1, 'so does the churned store');
  t.notOk(after.calls.readStream, 'no port stream is read in full');
  t.same(after.calls, freshCost.calls, `the same store calls after ${CHURNED_PORTS * CYCLES_PER_PORT} reserve/release cycles as on a fresh store`);
  if (churned.nc) t.equal(after.natsRequests, freshCost.natsRequests, `the same number of NATS requests (${after.natsRequests}) as on a fresh store`);
}

t.test('JetStream: allocating a public port costs the same whatever the ports\u2019 history', async (t) => {
  await compare(t, async () => {
    const nats = await createTestNats();
    const store = await openJetStreamEventStore({ nc: nats.nc, streamName: nats.streamName, subjectPrefix: nats.subjectPrefix });
    t.teardown(async () => {
      await store.close();
      await nats.cleanup();
    });
    return { store, nc: nats.nc };
  });
});

t.test('PostgreSQL: allocating a public port costs the same whatever the ports\u2019 history', async (t) => {
  await compare(t, async () => {
    const tdb = await createTestDatabase('tnx_hist');
    const store = new PostgresEventStore({ db: tdb.db, pool: tdb.pool });
    t.teardown(async () => {
      await store.close();
      await tdb.drop();
    });
    return { store };
  });
});

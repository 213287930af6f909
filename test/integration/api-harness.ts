import type { Test } from 'tap';
import type { FastifyInstance } from 'fastify';
import { createMemoryBus } from '../../shared/bus/memory.js';
import { openJetStreamEventStore } from '../../shared/eventstore/jetstream.js';
import { PostgresEventStore } from '../../shared/eventstore/postgres.js';
import type { EventStore } from '../../shared/eventstore/types.js';
import { silentLogger } from '../../shared/platform/logger.js';
import { createTestNats } from '../../shared/testkit/nats.js';
import { createTestDatabase, type TestDatabase } from '../../shared/testkit/pg.js';
import { buildApp, type ApiDeps } from '../../services/api/index.js';
import { createProjectionWaiter, startProjector } from '../../services/projector/index.js';

/** Opens the event store under test (its own stream or database), cleaned up at teardown. */
export type OpenStore = (t: Test, tdb: TestDatabase) => Promise<EventStore>;

export const openPostgres: OpenStore = async (_t, tdb) => new PostgresEventStore({ db: tdb.db, pool: tdb.pool });
export const openJetStream: OpenStore = async (t) => {
  const nats = await createTestNats();
  t.teardown(() => nats.cleanup());
  return openJetStreamEventStore({ nc: nats.nc, streamName: nats.streamName, subjectPrefix: nats.subjectPrefix });
};

export interface Reply {
  status: number;
  json: any;
  headers: Record<string, unknown>;
}

export interface ApiHarness<S extends EventStore> {
  app: FastifyInstance;
  tdb: TestDatabase;
  store: S;
  /** A request with `headers` (default: the first API key's Authorization); the body as JSON. */
  send(method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE', url: string, body?: unknown, headers?: Record<string, string>): Promise<Reply>;
}

/**
 * A real database and event store, the projector and the Management API, closed in reverse order
 * at teardown. `wrap` may put a fault-injecting store around the real one (its close is called).
 */
export async function startApiHarness<S extends EventStore = EventStore>(
  t: Test,
  o: {
    open: OpenStore;
    apiKeys: string[];
    dbPrefix: string;
    publicPortRange: ApiDeps['publicPortRange'];
    wrap?: (store: EventStore) => S;
    deps?: Partial<Pick<ApiDeps, 'defaultTier' | 'idempotency' | 'apiKeyCacheMs' | 'corsOrigins' | 'rateLimitPerMinute'>>;
  },
): Promise<ApiHarness<S>> {
  const tdb = await createTestDatabase(o.dbPrefix);
  const inner = await o.open(t, tdb);
  const store = (o.wrap ? o.wrap(inner) : inner) as S;
  const bus = createMemoryBus();
  const logger = silentLogger();
  const waiter = createProjectionWaiter({ db: tdb.db, bus });
  const app = await buildApp({ store, db: tdb.db, waiter, logger, apiKeys: o.apiKeys, publicPortRange: o.publicPortRange, ...o.deps });
  const projector = await startProjector({ store, db: tdb.db, bus, logger });
  t.teardown(async () => {
    await app.close();
    waiter.close();
    await projector.stop();
    await store.close();
    await bus.close();
    await tdb.drop();
  });
  const auth = { authorization: `Bearer ${o.apiKeys[0]}` };
  return {
    app,
    tdb,
    store,
    async send(method, url, body, headers = auth) {
      const res = await app.inject({ method, url, headers, ...(body === undefined ? {} : { payload: body as object }) });
      return { status: res.statusCode, json: res.payload ? JSON.parse(res.payload) : undefined, headers: res.headers as Record<string, unknown> };
    },
  };
}

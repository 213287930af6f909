import t, { type Test } from 'tap';
import type { FastifyInstance } from 'fastify';
import { createMemoryBus } from '../../shared/bus/memory.js';
import { REDACTED } from '../../shared/contracts/audit.js';
import { recordClientConnected, recordClientDisconnected } from '../../shared/domain/client/client.commands.js';
import { buildEnvelope } from '../../shared/eventstore/command.js';
import { openJetStreamEventStore } from '../../shared/eventstore/jetstream.js';
import { PostgresEventStore } from '../../shared/eventstore/postgres.js';
import { scanEvents } from '../../shared/eventstore/scan.js';
import type { EventStore } from '../../shared/eventstore/types.js';
import { silentLogger } from '../../shared/platform/logger.js';
import { createTestNats } from '../../shared/testkit/nats.js';
import { createTestDatabase, type TestDatabase } from '../../shared/testkit/pg.js';
import { rawAppend, type RawLog } from '../../shared/testkit/raw-append.js';
import { apiKeyId } from '../../services/api/auth.js';
import { buildApp } from '../../services/api/index.js';
import { createProjectionWaiter, startProjector } from '../../services/projector/index.js';

/** GET /api/v1/events on real event stores (PostgreSQL and JetStream), through the whole API. */

const API_KEY = 'events-test-key-0123456789';
const AUTH = { authorization: `Bearer ${API_KEY}` };

interface Harness {
  app: FastifyInstance;
  tdb: TestDatabase;
  store: EventStore;
  raw: RawLog;
  get(url: string, headers?: Record<string, string>): Promise<{ status: number; json: any; raw: string }>;
  post(url: string, body: unknown): Promise<{ status: number; json: any }>;
  del(url: string): Promise<{ status: number }>;
}

type Open = (t: Test, tdb: TestDatabase) => Promise<{ store: EventStore; raw: RawLog }>;

const postgres: Open = async (_t, tdb) => ({ store: new PostgresEventStore({ db: tdb.db, pool: tdb.pool }), raw: { kind: 'postgres', db: tdb.db } });
const jetstream: Open = async (t, _tdb) => {
  const nats = await createTestNats();
  t.teardown(() => nats.cleanup());
  const store = await openJetStreamEventStore({ nc: nats.nc, streamName: nats.streamName, subjectPrefix: nats.subjectPrefix });
  return { store, raw: { kind: 'jetstream', nc: nats.nc, streamName: nats.streamName, subjectPrefix: nats.subjectPrefix } };
};

async function harness(t: Test, open: Open): Promise<Harness> {
  const tdb = await createTestDatabase('tnx_events_api');
  const { store, raw } = await open(t, tdb);
  const bus = createMemoryBus();
  const logger = silentLogger();
  const waiter = createProjectionWaiter({ db: tdb.db, bus });
  const app = await buildApp({ store, db: tdb.db, waiter, logger, apiKeys: [API_KEY], publicPortRange: { min: 32000, max: 32009 } });
  const projector = await startProjector({ store, db: tdb.db, bus, logger });
  t.teardown(async () => {
    await app.close();
    waiter.close();
    await projector.stop();
    await store.close();
    await bus.close();
    await tdb.drop();
  });
  const send = async (method: 'GET' | 'POST' | 'DELETE', url: string, body?: unknown, headers: Record<string, string> = AUTH) => {
    const res = await app.inject({ method, url, headers, ...(body === undefined ? {} : { payload: body as object }) });
    return { status: res.statusCode, json: res.payload ? JSON.parse(res.payload) : undefined, raw: res.payload };
  };
  return { app, tdb, store, raw, get: (url, headers) => send('GET', url, undefined, headers), post: (url, body) => send('POST', url, body), del: (url) => send('DELETE', url) };
}

/** A user, two clients, a client-to-client mapping (1001) and a public one (1002), then 1001 deleted. */
async function scenario(h: Harness): Promise<{ authCode: string }> {
  const user = await h.post('/api/v1/users', { username: 'audit', email: 'audit@example.test' });
  const a = await h.post('/api/v1/clients', { user_id: user.json.user_id, client_name: 'a' });
  const b = await h.post('/api/v1/clients', { user_id: user.json.user_id, client_name: 'b' });
  const m = await h.post('/api/v1/mappings', {
    user_id: user.json.user_id, source_client_id: a.json.client_id, target_client_id: b.json.client_id,
    protocol: 'tcp', target_host: '127.0.0.1', target_port: 22, local_port: 2222,
  });
  const p = await h.post('/api/v1/mappings', { user_id: user.json.user_id, target_client_id: b.json.client_id, protocol: 'tcp', target_host: '127.0.0.1', target_port: 80 });
  if ([user, a, b, m, p].some((r) => r.status !== 201)) throw new Error('scenario set-up failed');
  if ((await h.del('/api/v1/mappings/1001')).status !== 204) throw new Error('delete failed');
  return { authCode: a.json.auth_code };
}

async function walk(h: Harness, query: string): Promise<{ positions: number[]; pages: number; cursors: (string | null)[] }> {
  const positions: number[] = [];
  const cursors: (string | null)[] = [];
  let after: string | null = '0';
  let pages = 0;
  while (after !== null) {
    const res = await h.get(`/api/v1/events?${query}&after=${after}`);
    if (res.status !== 200) throw new Error(`page ${pages}: ${res.status} ${res.raw}`);
    positions.push(...res.json.events.map((e: { position: number }) => e.position));
    after = res.json.next_cursor;
    cursors.push(after);
    if (++pages > 1000) throw new Error('no end');
  }
  return { positions, pages, cursors };
}

function suite(name: string, open: Open): void {
  t.test(name, async (t) => {
    t.test("aggregate=mapping:1001: that aggregate's events in order, full envelope, secrets redacted", async (t) => {
      const h = await harness(t, open);
      await scenario(h);
      const res = await h.get('/api/v1/events?aggregate=mapping:1001');
      t.equal(res.status, 200, res.raw);
      const stored = (await h.store.readStream('mapping.1001')).events;
      t.same(res.json.events.map((e: any) => [e.type, e.version, e.position]), [['MappingCreated', 1, stored[0]!.position], ['MappingDeleted', 2, stored[1]!.position]]);
      t.equal(res.json.next_cursor, null, 'the whole stream fits');
      const [created, deleted] = res.json.events;
      t.same(created, {
        position: stored[0]!.position,
        stream: 'mapping.1001',
        version: 1,
        id: stored[0]!.id,
        type: 'MappingCreated',
        schema_version: 2,
        aggregate_type: 'mapping',
        aggregate_id: '1001',
        occurred_at: stored[0]!.occurred_at,
        actor: { kind: 'api_key', id: apiKeyId(API_KEY) },
        correlation_id: stored[0]!.correlation_id,
        causation_id: null,
        data: stored[0]!.data,
        redacted: [],
      }, 'the stored envelope: nothing to redact');
      t.match(created.data, { secret_generation: 1 }, 'the event records the secret generation');
      t.notOk(res.raw.includes('secret_key'), 'and no mapping secret (it is derived, never stored)');
      t.not(deleted.correlation_id, created.correlation_id, 'two requests, two correlation ids');
      const sameRequest = (await h.store.readAll(0, 1000)).filter((e) => e.correlation_id === created.correlation_id).map((e) => e.type);
      t.same(sameRequest, ['IdAllocated', 'AccountSlotTaken', 'LocalPortReserved', 'MappingCreated'], 'the correlation id ties the create request together');

      const client = await h.get('/api/v1/events?aggregate=client:600000000');
      t.equal(client.json.events[0].type, 'ClientRegistered');
      t.equal(client.json.events[0].data.auth_code_hash, REDACTED);
      t.same(client.json.events[0].redacted, ['auth_code_hash']);
      t.notOk(client.raw.includes('scrypt'), 'no hash in the answer');
      const everything = await h.get('/api/v1/events?limit=500');
      t.notOk(everything.raw.includes('scrypt') || everything.raw.includes('secret_key'), 'nor anywhere in the whole log');

      const none = await h.get('/api/v1/events?aggregate=mapping:999999');
      t.same(none.json, { events: [], next_cursor: null }, 'an aggregate without events: an empty page');
    });

    t.test('tailing the log: cursor pages cover every event once, in order; edges', async (t) => {
      const h = await harness(t, open);
      await scenario(h);
      const all = (await h.store.readAll(0, 10_000)).map((e) => e.position);
      const head = all[all.length - 1]!;
      t.ok(all.length > 10, `${all.length} events`);
      for (const limit of [1, 3, all.length - 1, all.length, 500]) {
        const w = await walk(h, `limit=${limit}`);
        t.same(w.positions, all, `limit ${limit}: every event once, in order`);
        t.equal(w.pages, Math.max(1, Math.ceil(all.length / limit)), `limit ${limit}: ${w.pages} pages, no empty last page`);
        t.equal(w.cursors[w.cursors.length - 1], null, 'the last page says so');
      }
      const page = await h.get('/api/v1/events?limit=2');
      t.equal(page.json.next_cursor, String(all[1]), 'next_cursor is the position of the last event of the page');
      t.same((await h.get(`/api/v1/events?after=${head}`)).json, { events: [], next_cursor: null }, 'after the head: empty, null');
      t.same((await h.get(`/api/v1/events?after=${head + 1000}`)).json, { events: [], next_cursor: null }, 'beyond the head too');
      t.equal((await h.get('/api/v1/events')).json.events.length, Math.min(50, all.length), 'default limit 50');

      // Following: a new event shows up after the position of the last one seen.
      const connected = await recordClientConnected(h.store, { clientId: 600000000, nodeId: 'node-001', sessionId: 's-1', remoteAddr: '127.0.0.1:1' }, { actor: { kind: 'node', id: 'node-001' } });
      const next = await h.get(`/api/v1/events?after=${head}`);
      t.same(next.json.events.map((e: any) => [e.position, e.type, e.actor]), [[connected.position, 'ClientConnected', { kind: 'node', id: 'node-001' }]]);
    });

    t.test('type filter, alone and with an aggregate, and pages within a long aggregate stream', async (t) => {
      const h = await harness(t, open);
      await scenario(h);
      for (let i = 0; i < 7; i++) {
        const meta = { actor: { kind: 'node' as const, id: 'node-001' } };
        await recordClientConnected(h.store, { clientId: 600000001, nodeId: 'node-001', sessionId: `s-${i}`, remoteAddr: '127.0.0.1:1' }, meta);
        await recordClientDisconnected(h.store, { clientId: 600000001, nodeId: 'node-001', sessionId: `s-${i}`, reason: 'test' }, meta);
      }
      const log = await h.store.readAll(0, 10_000);
      const created = log.filter((e) => e.type === 'MappingCreated' || e.type === 'ClientRegistered').map((e) => e.position);
      t.same((await walk(h, 'type=MappingCreated,ClientRegistered&limit=2')).positions, created, 'only those types, every one, in order');
      const w = await walk(h, 'type=MappingDeleted&limit=500');
      t.same(w.positions, log.filter((e) => e.type === 'MappingDeleted').map((e) => e.position));

      const session = log.filter((e) => e.stream === 'client-session.600000001').map((e) => e.position);
      t.equal(session.length, 14);
      const sw = await walk(h, 'aggregate=client-session:600000001&limit=4');
      t.same(sw.positions, session, 'a stream read page by page');
      t.equal(sw.pages, 4);
      const disconnects = log.filter((e) => e.stream === 'client-session.600000001' && e.type === 'ClientDisconnected').map((e) => e.position);
      t.same((await walk(h, 'aggregate=client-session:600000001&type=ClientDisconnected&limit=3')).positions, disconnects, 'aggregate and type together');
      const versions = (await h.get('/api/v1/events?aggregate=client-session:600000001&after=' + session[5])).json.events.map((e: any) => e.version);
      t.same(versions, [7, 8, 9, 10, 11, 12, 13, 14], 'stream versions in a page that starts inside the stream');

      // A rare type costs a bounded read per page: the budget cuts the page, and the cursor moves on.
      const cut = await scanEvents(h.store, { types: new Set(['MappingDeleted']), after: 0, limit: 10, budget: 5 });
      const deletedAt = log.find((e) => e.type === 'MappingDeleted')!.position;
      t.ok(cut.next !== null && cut.next < deletedAt, 'the budget ends the page before the match');
      t.same(cut.events, []);
    });

    t.test('an unknown type and a malformed event from before the append guard are shown, redacted', async (t) => {
      const h = await harness(t, open);
      const meta = { actor: { kind: 'system' as const, id: 'events-test' } };
      const future = { ...buildEnvelope('mapping.5000', { type: 'MappingDeleted', data: { mapping_id: 5000 } }, meta), type: 'MappingRenamed', data: { mapping_id: 5000, nested: [{ new_secret: 's3cr3t-value' }] } };
      const pf = await rawAppend(h.raw, 'mapping.5000', future);
      const { actor: _a, occurred_at: _o, ...bare } = buildEnvelope('user.5', { type: 'UserCreated', data: { user_id: 5, username: 'u', email: 'u@x.test', status: 'active' } }, meta);
      const pm = await rawAppend(h.raw, 'user.5', { ...bare, data: { user_id: 5, password: 'hunter2' } } as never);
      const res = await h.get('/api/v1/events');
      t.equal(res.status, 200, res.raw);
      t.match(res.json.events, [
        { position: pf, type: 'MappingRenamed', data: { mapping_id: 5000, nested: [{ new_secret: REDACTED }] }, redacted: ['nested[0].new_secret'], actor: meta.actor },
        { position: pm, type: 'UserCreated', actor: null, occurred_at: null, data: { user_id: 5, password: REDACTED } },
      ]);
      t.notOk(res.raw.includes('s3cr3t-value') || res.raw.includes('hunter2'));
    });

    t.test('bad input is a 400 naming the field; no key is a 401', async (t) => {
      const h = await harness(t, open);
      const cases: Array<[string, string, RegExp]> = [
        ['aggregate=mapping', 'aggregate', /<aggregate>:<id>/],
        ['aggregate=mappings:1001', 'aggregate', /unknown aggregate mappings/],
        ['aggregate=mapping:01001', 'aggregate', /leading zeros/],
        ['aggregate=mapping:a.b', 'aggregate', /<aggregate>:<id>/],
        ['type=MappingMade', 'type', /unknown event type "MappingMade"/],
        ['type=MappingCreated,', 'type', /unknown event type ""/],
        ['after=-1', 'after', /log position/],
        ['after=abc', 'after', /log position/],
        ['after=01', 'after', /log position/],
        ['after=99999999999999999', 'after', /log position/],
        ['limit=0', 'limit', /1 to 500/],
        ['limit=501', 'limit', /1 to 500/],
        ['cursor=abc', 'cursor', /.+/],
      ];
      for (const [query, field, detail] of cases) {
        const res = await h.get(`/api/v1/events?${query}`);
        t.equal(res.status, 400, query);
        t.match(res.json, { status: 400, code: 'TNX_VALIDATION_FAILED', field, detail }, query);
      }
      const anon = await h.get('/api/v1/events', {});
      t.equal(anon.status, 401);
      t.equal(anon.json.code, 'TNX_AUTH_UNAUTHORIZED');
    });
  });
}

suite('PostgreSQL event store', postgres);
suite('JetStream event store', jetstream);

t.test('the route is in the OpenAPI document with its parameters', async (t) => {
  const h = await harness(t, postgres);
  const doc = (await h.app.inject({ method: 'GET', url: '/openapi.json' })).json();
  const op = doc.paths['/api/v1/events']?.get;
  t.ok(op, 'GET /api/v1/events documented');
  t.same(op.parameters.map((p: { name: string }) => p.name).sort(), ['after', 'aggregate', 'limit', 'type']);
  t.ok(op.responses['200'] && op.responses['400'] && op.responses['401'], 'responses documented');
});

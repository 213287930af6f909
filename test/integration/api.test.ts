import t, { type Test } from 'tap';
import type { FastifyInstance } from 'fastify';
import { createMemoryBus } from '../../shared/bus/memory.js';
import { deleteClient, recordClientConnected } from '../../shared/domain/client/client.commands.js';
import { PostgresEventStore } from '../../shared/eventstore/postgres.js';
import { silentLogger } from '../../shared/platform/logger.js';
import { verifySecret } from '../../shared/platform/secrets.js';
import { createTestDatabase, type TestDatabase } from '../../shared/testkit/pg.js';
import { buildApp } from '../../services/api/index.js';
import { createProjectionWaiter, startProjector } from '../../services/projector/index.js';

const API_KEY = 'test-key-0123456789abcdef';
const AUTH = { authorization: `Bearer ${API_KEY}` };
const RANGE = { min: 30000, max: 30009 };

interface Harness {
  app: FastifyInstance;
  tdb: TestDatabase;
  store: PostgresEventStore;
  /** Starts the projector (done by default; `withProjector: false` leaves it to the test). */
  startProjector(): Promise<void>;
  post(url: string, body: unknown, headers?: Record<string, string>): Promise<{ status: number; json: any; headers: Record<string, unknown>; raw: string }>;
  get(url: string, headers?: Record<string, string>): Promise<{ status: number; json: any; headers: Record<string, unknown>; raw: string }>;
  del(url: string): Promise<{ status: number; raw: string }>;
  patch(url: string, body: unknown): Promise<{ status: number; json: any; headers: Record<string, unknown>; raw: string }>;
}

/** A real PostgreSQL database + event store + projector + API, closed in reverse order at teardown. */
async function harness(t: Test, opts: { withProjector?: boolean; projectionTimeoutMs?: number } = {}): Promise<Harness> {
  const tdb = await createTestDatabase('tnx_api');
  const store = new PostgresEventStore({ db: tdb.db, pool: tdb.pool });
  const bus = createMemoryBus();
  const logger = silentLogger();
  const waiter = createProjectionWaiter({ db: tdb.db, bus });
  const app = await buildApp({
    store,
    db: tdb.db,
    waiter,
    logger,
    apiKeys: ['another-key-not-used-here', API_KEY],
    publicPortRange: RANGE,
    ...(opts.projectionTimeoutMs === undefined ? {} : { projectionTimeoutMs: opts.projectionTimeoutMs }),
  });
  let projector: { stop(): Promise<void> } | undefined;
  const start = async (): Promise<void> => {
    projector = await startProjector({ store, db: tdb.db, bus, logger });
  };
  if (opts.withProjector !== false) await start();
  t.teardown(async () => {
    await app.close();
    waiter.close();
    await projector?.stop();
    await store.close();
    await bus.close();
    await tdb.drop();
  });
  const send = async (method: 'GET' | 'POST' | 'DELETE' | 'PATCH', url: string, body?: unknown, headers: Record<string, string> = AUTH) => {
    const res = await app.inject({ method, url, headers, ...(body === undefined ? {} : { payload: body as object }) });
    let json: unknown = undefined;
    try {
      json = res.payload ? JSON.parse(res.payload) : undefined;
    } catch {
      json = undefined;
    }
    return { status: res.statusCode, json: json as any, headers: res.headers as Record<string, unknown>, raw: res.payload };
  };
  return {
    app,
    tdb,
    store,
    startProjector: start,
    post: (url, body, headers) => send('POST', url, body, headers),
    get: (url, headers) => send('GET', url, undefined, headers),
    del: (url) => send('DELETE', url),
    patch: (url, body) => send('PATCH', url, body),
  };
}

const john = { username: 'john_doe', email: 'john@example.com' };
const jane = { username: 'jane', email: 'jane@example.com' };

t.test('users, clients and mappings through the Management API', async (t) => {
  const h = await harness(t);

  // Users: sequential ids from 100000001, answered from the read model.
  const u1 = await h.post('/api/v1/users', john);
  t.equal(u1.status, 201, 'user created');
  t.match(u1.json, { user_id: 100000001, username: 'john_doe', email: 'john@example.com', status: 'active' });
  t.ok(!Number.isNaN(Date.parse(u1.json.created_at)), 'created_at is a timestamp');
  t.equal(u1.headers['location'], '/api/v1/users/100000001');
  const u2 = await h.post('/api/v1/users', jane);
  t.equal(u2.status, 201);
  t.equal(u2.json.user_id, 100000002, 'second user id is the next in sequence');

  const gotUser = await h.get('/api/v1/users/100000001');
  t.equal(gotUser.status, 200);
  t.same(gotUser.json, u1.json, 'GET returns what the create answered');
  t.equal(gotUser.headers['etag'], 'W/"1"', 'ETag is the aggregate version');

  // Clients: managed ids from 600000000; the auth code is shown once and only its hash is stored.
  const c1 = await h.post('/api/v1/clients', { user_id: 100000001, client_name: 'My Home Server', client_desc: 'Ubuntu 22.04 NAS' });
  t.equal(c1.status, 201, 'client created');
  t.match(c1.json, {
    client_id: 600000000,
    user_id: 100000001,
    client_name: 'My Home Server',
    client_type: 'managed',
    status: 'offline',
    node_id: null,
  });
  t.match(c1.json.auth_code, /^tnxc_[A-Za-z0-9_-]{20,}$/, 'auth code returned with its prefix');
  const c2 = await h.post('/api/v1/clients', { user_id: 100000001, client_name: 'Office DB' });
  t.equal(c2.json.client_id, 600000001);
  const c3 = await h.post('/api/v1/clients', { user_id: 100000002, client_name: "Jane's box" });
  t.equal(c3.json.client_id, 600000002);

  const gotClient = await h.get('/api/v1/clients/600000000');
  t.equal(gotClient.status, 200);
  t.same(gotClient.json, {
    client_id: 600000000,
    user_id: 100000001,
    client_name: 'My Home Server',
    client_type: 'managed',
    status: 'offline',
    enabled: true,
    node_id: null,
    last_seen: null,
    created_at: c1.json.created_at,
  });
  t.notOk(gotClient.raw.includes(c1.json.auth_code), 'GET never shows the auth code');
  t.notOk(gotClient.raw.includes('scrypt'), 'GET never shows the hash');
  t.equal(gotClient.headers['etag'], 'W/"1"');
  const stored = await h.tdb.db.selectFrom('clients').select('auth_code_hash').where('client_id', '=', 600000000).executeTakeFirstOrThrow();
  t.notOk(stored.auth_code_hash.includes(c1.json.auth_code), 'the read model holds no clear auth code');
  t.ok(await verifySecret(c1.json.auth_code, stored.auth_code_hash), 'the stored hash verifies the returned code');
  const events = await h.store.readStream('client.600000000');
  t.equal(events.events[0]?.type, 'ClientRegistered');
  t.notOk(JSON.stringify(events.events).includes(c1.json.auth_code), 'the event log holds no clear auth code');
  t.match(events.events[0]?.data, { client_desc: 'Ubuntu 22.04 NAS' }, 'the description is recorded in the event');

  // A session fact recorded by an edge shows up as online.
  const connected = await recordClientConnected(
    h.store,
    { clientId: 600000001, nodeId: 'node-001', sessionId: 'sess-1', remoteAddr: '127.0.0.1:40000' },
    { actor: { kind: 'node', id: 'node-001' } },
  );
  t.ok(connected.position > 0);
  // Any later command's read-your-writes wait covers the session event's position too.
  const online = await waitForGet(h, '/api/v1/clients/600000001', (j) => j.status === 'online');
  t.match(online, { status: 'online', node_id: 'node-001' });
  t.ok(!Number.isNaN(Date.parse(online.last_seen)), 'last_seen set');

  // Mappings: client-to-client gets 1001, public gets 1002 with the first port of the range.
  const m1 = await h.post('/api/v1/mappings', {
    user_id: 100000001,
    source_client_id: 600000000,
    target_client_id: 600000001,
    protocol: 'tcp',
    target_host: 'localhost',
    target_port: 3306,
    local_port: 13306,
  });
  t.equal(m1.status, 201, 'client-to-client mapping created');
  t.match(m1.json, {
    mapping_id: 1001,
    user_id: 100000001,
    protocol: 'tcp',
    source_client_id: 600000000,
    target_client_id: 600000001,
    target_host: 'localhost',
    target_port: 3306,
    local_port: 13306,
    local_host: null,
    public_port: null,
    enabled: true,
    status: 'pending',
  });
  t.notOk('error' in m1.json, 'no error field unless status is error');
  t.notOk('secret_key' in m1.json, 'the secret is not returned on create');

  const m2 = await h.post('/api/v1/mappings', { user_id: 100000001, target_client_id: 600000001, protocol: 'tcp', target_host: '127.0.0.1', target_port: 80 });
  t.equal(m2.status, 201, 'public mapping created');
  t.match(m2.json, { mapping_id: 1002, source_client_id: null, public_port: RANGE.min, local_port: null, status: 'pending' }, 'pending until its agent reports');
  const m3 = await h.post('/api/v1/mappings', { user_id: 100000001, target_client_id: 600000000, protocol: 'tcp', target_host: '127.0.0.1', target_port: 22 });
  t.match(m3.json, { mapping_id: 1003, public_port: RANGE.min + 1 }, 'the next public mapping takes the next free port');

  const gotMapping = await h.get('/api/v1/mappings/1001');
  t.equal(gotMapping.status, 200);
  t.same(gotMapping.json, m1.json);
  t.notOk(gotMapping.raw.includes('secret'), 'GET never shows the mapping secret');
  t.equal(gotMapping.headers['etag'], 'W/"1"');
  const secretRow = await h.tdb.db.selectFrom('mappings').selectAll().where('mapping_id', '=', 1001).executeTakeFirstOrThrow();
  t.equal(secretRow.secret_generation, 1, 'the read model holds the secret generation (1 at creation)');
  t.notOk('secret_key' in secretRow, 'and no secret: it is derived where it is needed');
  const rotated = await h.post('/api/v1/mappings/1001/rotate-secret', undefined);
  t.equal(rotated.status, 200, rotated.raw);
  t.same(rotated.json, { mapping_id: 1001, secret_generation: 2 }, 'rotation answers the new generation, never a secret');
  t.equal((await h.tdb.db.selectFrom('mappings').select('secret_generation').where('mapping_id', '=', 1001).executeTakeFirstOrThrow()).secret_generation, 2);
  t.equal((await h.get('/api/v1/mappings/1001')).headers['etag'], 'W/"2"', 'the mapping version moved');
  t.match(await h.post('/api/v1/mappings/999999/rotate-secret', undefined), { status: 404, json: { code: 'TNX_MAPPING_NOT_FOUND' } });

  // Two creates racing for the same explicit port: exactly one wins.
  const explicit = { user_id: 100000001, target_client_id: 600000001, protocol: 'tcp', target_host: '127.0.0.1', target_port: 8080, public_port: 30005 };
  const race = await Promise.all([h.post('/api/v1/mappings', explicit), h.post('/api/v1/mappings', explicit)]);
  t.same(race.map((r) => r.status).sort(), [201, 409], 'one 201 and one 409');
  const loser = race.find((r) => r.status === 409);
  t.match(loser?.json, { status: 409, code: 'TNX_PORT_IN_USE' });
  t.equal(race.find((r) => r.status === 201)?.json.public_port, 30005);
  const holders = await h.tdb.db.selectFrom('mappings').select('mapping_id').where('public_port', '=', 30005).execute();
  t.equal(holders.length, 1, 'one mapping holds the port in the read model');

  // Local ports: unique per source client, whatever the local_host; parallel creates race fairly.
  const local = { user_id: 100000001, source_client_id: 600000000, target_client_id: 600000001, protocol: 'tcp', target_host: '127.0.0.1', target_port: 22, local_port: 2222 };
  const localRace = await Promise.all([
    h.post('/api/v1/mappings', local),
    h.post('/api/v1/mappings', { ...local, local_host: '0.0.0.0' }),
    h.post('/api/v1/mappings', { ...local, local_host: '127.0.0.2', target_port: 23 }),
    h.post('/api/v1/mappings', local),
  ]);
  t.same(localRace.map((r) => r.status).sort(), [201, 409, 409, 409], 'one 201, the rest 409');
  for (const r of localRace.filter((x) => x.status === 409)) {
    t.match(r.json, { status: 409, code: 'TNX_LOCAL_PORT_TAKEN', field: 'local_port' });
  }
  const localWinner = localRace.find((r) => r.status === 201)!.json.mapping_id as number;
  t.match(await h.post('/api/v1/mappings', { ...local, local_port: 13306 }), { status: 409, json: { code: 'TNX_LOCAL_PORT_TAKEN' } }, 'taken by mapping 1001');
  t.match(await h.post('/api/v1/mappings', { ...local, source_client_id: 600000001, target_client_id: 600000000 }), { status: 201 }, 'another source client may use the same port');
  t.equal(await h.del(`/api/v1/mappings/${localWinner}`).then((r) => r.status), 204);
  t.match(await h.post('/api/v1/mappings', { ...local, local_host: '0.0.0.0' }), { status: 201 }, 'free again after the delete');

  const outside = await h.post('/api/v1/mappings', { ...explicit, public_port: 40000 });
  t.match(outside, { status: 422, json: { code: 'TNX_PORT_OUT_OF_RANGE', field: 'public_port' } });

  // Delete: 204, then the mapping is gone and its port free again.
  const deleted = await h.del('/api/v1/mappings/1002');
  t.equal(deleted.status, 204);
  t.equal(deleted.raw, '', 'no body');
  const gone = await h.get('/api/v1/mappings/1002');
  t.match(gone, { status: 404, json: { status: 404, code: 'TNX_MAPPING_NOT_FOUND' } });
  t.match(await h.del('/api/v1/mappings/1002'), { status: 404 }, 'deleting twice is a 404');
  t.match(await h.del('/api/v1/mappings/999999'), { status: 404 }, 'deleting an unknown mapping is a 404');
  const reused = await h.post('/api/v1/mappings', { user_id: 100000001, target_client_id: 600000001, protocol: 'tcp', target_host: '127.0.0.1', target_port: 81 });
  t.match(reused.json, { public_port: RANGE.min }, 'the released port is allocated again');

  // References must exist and belong to the mapping's user.
  const foreign = await h.post('/api/v1/mappings', { user_id: 100000001, target_client_id: 600000002, protocol: 'tcp', target_host: 'h', target_port: 1 });
  t.match(foreign, { status: 422, json: { code: 'TNX_MAPPING_CLIENT_NOT_OWNED', field: 'target_client_id' } }, "another user's client is refused");
  const foreignSource = await h.post('/api/v1/mappings', {
    user_id: 100000001,
    source_client_id: 600000002,
    target_client_id: 600000001,
    protocol: 'tcp',
    target_host: 'h',
    target_port: 1,
    local_port: 2000,
  });
  t.match(foreignSource, { status: 422, json: { code: 'TNX_MAPPING_CLIENT_NOT_OWNED', field: 'source_client_id' } });
  const missing = await h.post('/api/v1/mappings', { user_id: 100000001, target_client_id: 600000099, protocol: 'tcp', target_host: 'h', target_port: 1 });
  t.match(missing, { status: 422, json: { code: 'TNX_MAPPING_CLIENT_NOT_FOUND', field: 'target_client_id' } });
  const noUser = await h.post('/api/v1/clients', { user_id: 100000099, client_name: 'x' });
  t.match(noUser, { status: 422, json: { code: 'TNX_USER_NOT_FOUND', field: 'user_id' } });

  // Not found and bad ids.
  t.match(await h.get('/api/v1/users/100000099'), { status: 404, json: { code: 'TNX_USER_NOT_FOUND' } });
  t.match(await h.get('/api/v1/clients/600000099'), { status: 404, json: { code: 'TNX_CLIENT_NOT_FOUND' } });
  t.match(await h.get('/api/v1/users/abc'), { status: 400, json: { code: 'TNX_VALIDATION_FAILED', field: 'user_id' } });
  t.match(await h.get('/api/v1/nope'), { status: 404, json: { code: 'TNX_ROUTE_NOT_FOUND' } });
});

t.test('a deleted client is absent from the API, and mappings can no longer name it', async (t) => {
  const h = await harness(t);
  const user = await h.post('/api/v1/users', john);
  const client = await h.post('/api/v1/clients', { user_id: user.json.user_id, client_name: 'gone' });
  t.equal((await h.get(`/api/v1/clients/${client.json.client_id}`)).status, 200);
  const deleted = await deleteClient(h.store, { clientId: client.json.client_id }, { actor: { kind: 'system', id: 'api-test' } });
  await waitForStatus(h, `/api/v1/clients/${client.json.client_id}`, 404);
  t.ok(deleted.changed);
  const mapping = await h.post('/api/v1/mappings', { user_id: user.json.user_id, target_client_id: client.json.client_id, protocol: 'tcp', target_host: 'h', target_port: 1 });
  t.match(mapping, { status: 422, json: { code: 'TNX_MAPPING_CLIENT_NOT_FOUND', field: 'target_client_id' } });
});

async function waitForStatus(h: Harness, url: string, status: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if ((await h.get(url)).status === status) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${url} never answered ${status}`);
}

/** Polls a GET until `done` holds (bounded). Used only where no command position is at hand. */
async function waitForGet(h: Harness, url: string, done: (json: any) => boolean): Promise<any> {
  for (let i = 0; i < 100; i++) {
    const res = await h.get(url);
    if (res.status === 200 && done(res.json)) return res.json;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${url} never satisfied the condition`);
}

t.test('bad input is a 400 problem naming the field', async (t) => {
  const h = await harness(t);
  const user = await h.post('/api/v1/users', john);
  const a = await h.post('/api/v1/clients', { user_id: user.json.user_id, client_name: 'a' });
  const b = await h.post('/api/v1/clients', { user_id: user.json.user_id, client_name: 'b' });
  const base = { user_id: user.json.user_id, target_client_id: b.json.client_id, protocol: 'tcp', target_host: 'localhost', target_port: 3306 };
  const c2c = { ...base, source_client_id: a.json.client_id, local_port: 13306 };

  const cases: [string, string, unknown, string][] = [
    ['missing username', '/api/v1/users', { email: 'x@example.com' }, 'username'],
    ['bad email', '/api/v1/users', { username: 'x', email: 'not-an-address' }, 'email'],
    ['unknown key on a user', '/api/v1/users', { ...john, password_hash: 'x' }, 'password_hash'],
    ['missing client_name', '/api/v1/clients', { user_id: user.json.user_id }, 'client_name'],
    ['string user_id', '/api/v1/clients', { user_id: String(user.json.user_id), client_name: 'x' }, 'user_id'],
    ['target_port 70000', '/api/v1/mappings', { ...base, target_port: 70000 }, 'target_port'],
    ['unknown key on a mapping', '/api/v1/mappings', { ...base, foo: 1 }, 'foo'],
    ["protocol 'udp'", '/api/v1/mappings', { ...base, protocol: 'udp' }, 'protocol'],
  ];
  for (const [name, url, body, field] of cases) {
    const res = await h.post(url, body);
    t.equal(res.status, 400, `${name}: 400`);
    t.match(res.json, { type: String, title: 'Bad Request', status: 400, code: 'TNX_VALIDATION_FAILED', detail: String, field }, `${name}: names ${field}`);
    t.match(String(res.headers['content-type']), /^application\/problem\+json/, `${name}: problem content type`);
  }
  // Rules between fields of a well-formed body have one home (validateMappingShape in the domain)
  // and one answer: 422 TNX_MAPPING_INVALID naming the field.
  const shapes: [string, unknown, string][] = [
    ['client-to-client without local_port', { ...base, source_client_id: a.json.client_id }, 'local_port'],
    ['client-to-client with public_port', { ...c2c, public_port: 30001 }, 'public_port'],
    ['public with local_port', { ...base, local_port: 13306 }, 'local_port'],
    ['public with local_host', { ...base, local_host: '127.0.0.1' }, 'local_host'],
    ['source equals target', { ...c2c, source_client_id: b.json.client_id }, 'target_client_id'],
  ];
  for (const [name, body, field] of shapes) {
    const res = await h.post('/api/v1/mappings', body);
    t.match(res, { status: 422, json: { title: 'Unprocessable Content', status: 422, code: 'TNX_MAPPING_INVALID', detail: String, field } }, `${name}: 422 naming ${field}`);
  }
  const notJson = await h.app.inject({ method: 'POST', url: '/api/v1/users', headers: { ...AUTH, 'content-type': 'application/json' }, payload: '{nope' });
  t.equal(notJson.statusCode, 400, 'malformed JSON is a 400');
  t.match(JSON.parse(notJson.payload), { status: 400, code: 'TNX_REQUEST_INVALID' });

  // Nothing was recorded for the rejected commands: the next mapping still gets id 1001.
  const ok = await h.post('/api/v1/mappings', c2c);
  t.match(ok, { status: 201, json: { mapping_id: 1001 } });
});

t.test('API keys: /api needs a valid bearer key; health and OpenAPI do not', async (t) => {
  const h = await harness(t);
  const none = await h.post('/api/v1/users', john, {});
  t.match(none, { status: 401, json: { status: 401, code: 'TNX_AUTH_UNAUTHORIZED' } });
  t.equal(none.headers['www-authenticate'], 'Bearer realm="tunnox"');
  t.match(await h.post('/api/v1/users', john, { authorization: 'Bearer wrong-key' }), { status: 401, json: { code: 'TNX_AUTH_UNAUTHORIZED' } });
  t.match(await h.post('/api/v1/users', john, { authorization: `Basic ${API_KEY}` }), { status: 401 });
  t.match(await h.get('/api/v1/users/100000001', { authorization: `Bearer ${API_KEY}x` }), { status: 401 });
  t.match(await h.post('/api/v1/users', { bogus: true }, { authorization: 'Bearer wrong-key' }), { status: 401 }, 'auth is checked before the body');
  t.equal((await h.store.headPosition()), 0, 'refused requests recorded nothing');

  t.match(await h.get('/healthz', {}), { status: 200, json: { status: 'ok' } });
  t.match(await h.get('/readyz', {}), { status: 200, json: { status: 'ready' } });
  const doc = await h.get('/openapi.json', {});
  t.equal(doc.status, 200);
  t.equal(doc.json.openapi, '3.0.3');
  for (const path of ['/api/v1/users', '/api/v1/users/{user_id}', '/api/v1/clients', '/api/v1/clients/{client_id}', '/api/v1/mappings', '/api/v1/mappings/{mapping_id}']) {
    t.ok(doc.json.paths[path], `OpenAPI documents ${path}`);
  }
  t.ok(doc.json.paths['/api/v1/mappings'].post.requestBody.content['application/json'].schema.properties.target_port, 'body schema is documented');
  t.ok(doc.json.paths['/api/v1/mappings/{mapping_id}'].get.responses['200'], 'responses are documented');
  t.notOk(JSON.stringify(doc.json.paths['/api/v1/mappings/{mapping_id}'].get.responses['200']).includes('secret_key'));
});

t.test('10 parallel user creations get 10 distinct sequential ids', async (t) => {
  const h = await harness(t);
  const results = await Promise.all(
    Array.from({ length: 10 }, (_, i) => h.post('/api/v1/users', { username: `user${i}`, email: `user${i}@example.com` })),
  );
  t.same(results.map((r) => r.status), Array(10).fill(201), 'all created');
  const ids = results.map((r) => r.json.user_id as number).sort((x, y) => x - y);
  t.same(ids, Array.from({ length: 10 }, (_, i) => 100000001 + i), 'ids are 100000001..100000010, no duplicates, no gaps');
  const rows = await h.tdb.db.selectFrom('users').select('user_id').execute();
  t.equal(rows.length, 10);
});

t.test('when the projection does not catch up in time a create answers 202 with a Location', async (t) => {
  const h = await harness(t, { withProjector: false, projectionTimeoutMs: 200 });
  const res = await h.post('/api/v1/users', john);
  t.equal(res.status, 202);
  t.same(res.json, { user_id: 100000001 });
  t.equal(res.headers['location'], '/api/v1/users/100000001');
  t.match(await h.get('/api/v1/users/100000001'), { status: 404 }, 'the read model has not seen it yet');
  await h.startProjector();
  const got = await waitForGet(h, '/api/v1/users/100000001', () => true);
  t.match(got, { user_id: 100000001, username: 'john_doe' }, 'the command was recorded and is projected once the projector runs');
});

t.test('clients: disable and enable, disconnect, rotate the auth code', async (t) => {
  const h = await harness(t);
  const user = await h.post('/api/v1/users', john);
  const client = await h.post('/api/v1/clients', { user_id: user.json.user_id, client_name: 'laptop' });
  const url = `/api/v1/clients/${client.json.client_id}`;
  t.match(await h.get(url), { status: 200, json: { enabled: true } }, 'a new client is enabled');

  const disabled = await h.patch(url, { enabled: false });
  t.match(disabled, { status: 200, json: { client_id: client.json.client_id, enabled: false } }, 'PATCH enabled=false answers with the disabled client');
  t.ok(disabled.headers.etag, 'with its ETag');
  t.match(await h.get(url), { json: { enabled: false } }, 'read back disabled');
  const again = await h.patch(url, { enabled: false });
  t.equal(again.status, 200, 'disabling a disabled client is a no-op, not an error');
  t.match(await h.patch(url, { enabled: true }), { status: 200, json: { enabled: true } }, 'enabled again');

  const kicked = await h.post(`${url}/disconnect`, undefined);
  t.match(kicked, { status: 200, json: { client_id: client.json.client_id, enabled: true } }, 'disconnect answers with the client, still enabled');
  const { events } = await h.store.readStream(`client.${client.json.client_id}`);
  t.same(events.map((e) => e.type), ['ClientRegistered', 'ClientDisabled', 'ClientEnabled', 'ClientKicked'], 'each change is one event (the no-op none)');

  const bare = await h.app.inject({ method: 'POST', url: `${url}/disconnect`, headers: { ...AUTH, 'content-type': 'application/json' } });
  t.equal(bare.statusCode, 200, 'a body-less POST sent with content-type: application/json is fine');
  const rotated = await h.post(`${url}/rotate-auth-code`, undefined);
  t.equal(rotated.status, 200);
  t.match(rotated.json.auth_code, /^tnxc_/, 'a new auth code, shown once');
  t.not(rotated.json.auth_code, client.json.auth_code, 'not the old one');
  t.notOk((await h.get(url)).raw.includes(rotated.json.auth_code), 'GET never shows it');

  t.match(await h.patch(url, { enabled: 'no' }), { status: 400, json: { field: 'enabled' } }, 'a wrong type is a 400 naming the field');
  t.match(await h.patch(url, { client_type: 'anonymous' }), { status: 400, json: { field: 'client_type' } }, 'fields that cannot change are refused, not ignored');
  t.match(await h.patch('/api/v1/clients/699999999', { enabled: false }), { status: 404, json: { code: 'TNX_CLIENT_NOT_FOUND' } });
  t.match(await h.post('/api/v1/clients/699999999/disconnect', undefined), { status: 404, json: { code: 'TNX_CLIENT_NOT_FOUND' } });
  t.match(await h.post('/api/v1/clients/699999999/rotate-auth-code', undefined), { status: 404, json: { code: 'TNX_CLIENT_NOT_FOUND' } });
});

t.test('lists: keyset pages in id order with next_cursor, filters, and clear 400s', async (t) => {
  const h = await harness(t);
  const users: number[] = [];
  for (let i = 0; i < 5; i++) users.push((await h.post('/api/v1/users', { username: `u${i}`, email: `u${i}@example.com` })).json.user_id);
  const walk = async (first: string, key: string) => {
    const seen: number[][] = [];
    let url: string | null = first;
    for (let i = 0; url && i < 10; i++) {
      const res = await h.get(url);
      t.equal(res.status, 200, `GET ${url}`);
      seen.push(res.json[key].map((x: Record<string, number>) => x[`${key.slice(0, -1)}_id`]));
      url = res.json.next_cursor ? `${first}${first.includes('?') ? '&' : '?'}cursor=${res.json.next_cursor}` : null;
    }
    return seen;
  };
  t.same(await walk('/api/v1/users?limit=2', 'users'), [users.slice(0, 2), users.slice(2, 4), users.slice(4)], 'three pages of 2, 2 and 1, in id order');
  t.same(await walk('/api/v1/users', 'users'), [users], 'default page size holds all five, next_cursor null');

  const [u0, u1] = users as [number, number];
  const a = (await h.post('/api/v1/clients', { user_id: u0, client_name: 'a' })).json.client_id;
  const b = (await h.post('/api/v1/clients', { user_id: u0, client_name: 'b' })).json.client_id;
  const c = (await h.post('/api/v1/clients', { user_id: u1, client_name: 'c' })).json.client_id;
  t.same(await walk(`/api/v1/clients?user_id=${u0}&limit=1`, 'clients'), [[a], [b]], 'clients of one user, a page at a time');
  t.same((await h.get('/api/v1/clients?type=managed&status=offline')).json.clients.map((x: { client_id: number }) => x.client_id), [a, b, c], 'by type and status');
  t.same((await h.get('/api/v1/clients?type=anonymous')).json, { clients: [], next_cursor: null }, 'an empty list is an empty page');

  const m1 = (await h.post('/api/v1/mappings', { user_id: u0, source_client_id: a, target_client_id: b, protocol: 'tcp', target_host: '127.0.0.1', target_port: 22, local_port: 2222 })).json.mapping_id;
  const m2 = (await h.post('/api/v1/mappings', { user_id: u0, target_client_id: a, protocol: 'tcp', target_host: '127.0.0.1', target_port: 80 })).json.mapping_id;
  t.same((await h.get(`/api/v1/mappings?client_id=${a}`)).json.mappings.map((m: { mapping_id: number }) => m.mapping_id), [m1, m2], 'by client: as source and as target');
  t.same((await h.get(`/api/v1/mappings?client_id=${b}`)).json.mappings.map((m: { mapping_id: number }) => m.mapping_id), [m1], 'the other client: only its mapping');
  t.same((await h.get(`/api/v1/mappings?user_id=${u0}&status=pending&limit=1`)).json.mappings.map((m: { mapping_id: number }) => m.mapping_id), [m1], 'by user and status, one per page');
  t.notOk((await h.get('/api/v1/mappings')).raw.includes('secret'), 'never a mapping secret');

  for (const [query, field] of [
    ['limit=0', 'limit'], ['limit=501', 'limit'], ['limit=abc', 'limit'], ['limit=05', 'limit'],
    ['cursor=nope!', 'cursor'], [`cursor=${Buffer.from('id:0').toString('base64url')}`, 'cursor'], [`cursor=${Buffer.from('x:5').toString('base64url')}`, 'cursor'],
    ['user_id=1', 'user_id'], ['sort=name', undefined],
  ] as const) {
    const res = await h.get(`/api/v1/clients?${query}`);
    t.match(res, { status: 400, json: { code: 'TNX_VALIDATION_FAILED', ...(field ? { field } : {}) } }, `?${query} is a 400${field ? ` naming ${field}` : ''}`);
  }
});

import { connect as netConnect } from 'node:net';
import t, { type Test } from 'tap';
import type { FastifyInstance } from 'fastify';
import { createMemoryBus } from '../../shared/bus/memory.js';
import { PostgresEventStore } from '../../shared/eventstore/postgres.js';
import { silentLogger } from '../../shared/platform/logger.js';
import { createTestDatabase } from '../../shared/testkit/pg.js';
import { buildApp } from '../../services/api/index.js';
import { toProblem } from '../../services/api/errors.js';
import { UnstorableEventError } from '../../shared/eventstore/errors.js';
import { createProjectionWaiter, startProjector } from '../../services/projector/index.js';

/** A test name that keeps the log plain text: JSON escapes C0 controls, this also DEL, C1 and bidi. */
function printable(s: string): string {
  return JSON.stringify(s).replace(/[\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Hostile strings and path ids at the Management API: refused with a 400 naming the field, before anything is decided. */

const API_KEY = 'test-key-0123456789abcdef';
const AUTH = { authorization: `Bearer ${API_KEY}` };

interface Res {
  status: number;
  json: any;
}

async function harness(t: Test, timeouts?: { requestMs?: number; idleMs?: number }) {
  const tdb = await createTestDatabase('tnx_api_input');
  const store = new PostgresEventStore({ db: tdb.db, pool: tdb.pool });
  const bus = createMemoryBus();
  const logger = silentLogger();
  const waiter = createProjectionWaiter({ db: tdb.db, bus });
  const app: FastifyInstance = await buildApp({
    store,
    db: tdb.db,
    waiter,
    logger,
    apiKeys: [API_KEY],
    publicPortRange: { min: 30100, max: 30109 },
    ...(timeouts ? { timeouts } : {}),
  });
  const projector = await startProjector({ store, db: tdb.db, bus, logger });
  t.teardown(async () => {
    await app.close();
    waiter.close();
    await projector.stop();
    await store.close();
    await bus.close();
    await tdb.drop();
  });
  const send = async (method: 'GET' | 'POST' | 'DELETE', url: string, payload?: string): Promise<Res> => {
    const res = await app.inject({
      method,
      url,
      headers: payload === undefined ? AUTH : { ...AUTH, 'content-type': 'application/json' },
      ...(payload === undefined ? {} : { payload }),
    });
    return { status: res.statusCode, json: res.payload ? JSON.parse(res.payload) : undefined };
  };
  return {
    app,
    store,
    // Bodies are sent as JSON text, so `\u0000` and lone surrogates reach the server as JSON escapes.
    post: (url: string, body: unknown) => send('POST', url, JSON.stringify(body)),
    get: (url: string) => send('GET', url),
    del: (url: string) => send('DELETE', url),
  };
}

/** Strings no field may hold, and the ones names refuse besides. */
const EVERYWHERE_BAD: Record<string, string> = {
  NUL: 'a\u0000b',
  'lone high surrogate': 'a\ud800b',
  'lone low surrogate': 'a\udc00b',
  'lone high surrogate at the end': 'ab\ud83d',
  'C0 control (ESC)': 'a\u001bb',
  'C1 control (CSI)': 'a\u009bb',
  DEL: 'a\u007fb',
};
const NAME_ONLY_BAD: Record<string, string> = {
  'right-to-left override U+202E': 'admin\u202etxt.exe',
  'left-to-right isolate U+2066': 'a\u2066b',
  'pop directional isolate U+2069': 'a\u2069b',
  'right-to-left mark U+200F': 'a\u200fb',
  tab: 'a\tb',
  newline: 'a\nb',
  'line separator U+2028': 'a\u2028b',
};
const GOOD_NAMES = ['José', '用户', 'Ærøskøbing box', 'emoji 🚀 ok', "O'Brien-Smith_2"];

t.test('usernames and client names: hostile characters are a 400 naming the field, and nothing is appended', async (t) => {
  const h = await harness(t);
  const user = await h.post('/api/v1/users', { username: 'owner', email: 'owner@example.com' });
  t.equal(user.status, 201);
  const head = await h.store.headPosition();
  for (const [what, bad] of Object.entries({ ...EVERYWHERE_BAD, ...NAME_ONLY_BAD })) {
    const u = await h.post('/api/v1/users', { username: bad, email: 'x@example.com' });
    t.match(u, { status: 400, json: { code: 'TNX_VALIDATION_FAILED', field: 'username' } }, `username with ${what}`);
    const c = await h.post('/api/v1/clients', { user_id: user.json.user_id, client_name: bad });
    t.match(c, { status: 400, json: { code: 'TNX_VALIDATION_FAILED', field: 'client_name' } }, `client_name with ${what}`);
  }
  t.match(await h.post('/api/v1/users', { username: 'x'.repeat(65), email: 'x@example.com' }), { status: 400, json: { field: 'username' } }, 'too long');
  t.match(await h.post('/api/v1/users', { username: '用'.repeat(20_000), email: 'x@example.com' }), { status: 400, json: { field: 'username' } }, 'far too long');
  t.match(await h.post('/api/v1/users', { username: 'ok', email: 'a\u0000@example.com' }), { status: 400, json: { field: 'email' } }, 'email with NUL');
  t.equal(await h.store.headPosition(), head, 'no event was appended: no id allocated, nothing decided');

  for (const good of GOOD_NAMES) {
    const u = await h.post('/api/v1/users', { username: good, email: 'g@example.com' });
    t.match(u, { status: 201, json: { username: good } }, `username ${good} accepted and read back`);
    const c = await h.post('/api/v1/clients', { user_id: user.json.user_id, client_name: good });
    t.match(c, { status: 201, json: { client_name: good } }, `client_name ${good} accepted`);
  }
});

t.test('client descriptions allow tab and newline but no NUL, lone surrogate or other control', async (t) => {
  const h = await harness(t);
  const user = await h.post('/api/v1/users', { username: 'owner', email: 'owner@example.com' });
  for (const [what, bad] of Object.entries(EVERYWHERE_BAD)) {
    const c = await h.post('/api/v1/clients', { user_id: user.json.user_id, client_name: 'box', client_desc: bad });
    t.match(c, { status: 400, json: { field: 'client_desc' } }, `client_desc with ${what}`);
  }
  t.match(await h.post('/api/v1/clients', { user_id: user.json.user_id, client_name: 'box', client_desc: 'd'.repeat(1025) }), {
    status: 400,
    json: { field: 'client_desc' },
  });
  const ok = await h.post('/api/v1/clients', { user_id: user.json.user_id, client_name: 'box', client_desc: 'Ubuntu\t22.04\nrack 3 — עברית' });
  t.equal(ok.status, 201, 'tab, newline and non-ASCII prose accepted');
});

t.test('target_host and local_host must be a host name or an IP literal', async (t) => {
  const h = await harness(t);
  const user = await h.post('/api/v1/users', { username: 'owner', email: 'owner@example.com' });
  const a = await h.post('/api/v1/clients', { user_id: user.json.user_id, client_name: 'a' });
  const b = await h.post('/api/v1/clients', { user_id: user.json.user_id, client_name: 'b' });
  const base = { user_id: user.json.user_id, source_client_id: a.json.client_id, target_client_id: b.json.client_id, protocol: 'tcp', target_port: 22 };
  const head = await h.store.headPosition();
  const badHosts = [
    ...Object.values(EVERYWHERE_BAD),
    'exa mple.com',
    ' example.com',
    'example.com\n',
    'host:22',
    '[::1]',
    'http://example.com',
    '-leading.example',
    'trailing-.example',
    'a..b',
    '999.1.1.1',
    'ex\u202eample.com',
    'пример.рф',
    `${'a'.repeat(64)}.example`,
    `${'a.'.repeat(127)}a`,
  ];
  for (const host of badHosts) {
    t.match(await h.post('/api/v1/mappings', { ...base, local_port: 2222, target_host: host }), { status: 400, json: { field: 'target_host' } }, `target_host ${printable(host)}`);
    t.match(
      await h.post('/api/v1/mappings', { ...base, local_port: 2222, target_host: 'localhost', local_host: host }),
      { status: 400, json: { field: 'local_host' } },
      `local_host ${printable(host)}`,
    );
  }
  t.equal(await h.store.headPosition(), head, 'nothing appended');
  const goodHosts = ['localhost', 'db.internal.example.com', 'my_service', 'xn--e1afmkfd.xn--p1ai', 'host.example.', '10.0.0.7', '::1', 'fe80::1'];
  for (const [i, host] of goodHosts.entries()) {
    const m = await h.post('/api/v1/mappings', { ...base, local_port: 3000 + i, target_host: host, local_host: '127.0.0.1' });
    t.match(m, { status: 201, json: { target_host: host } }, `target_host ${host} accepted`);
  }
});

t.test('mapping flood limits: idle_timeout, max_connections, max_pending_opens are positive integers in range (400 naming the field), read back, null when unset', async (t) => {
  const h = await harness(t);
  const user = await h.post('/api/v1/users', { username: 'owner', email: 'owner@example.com' });
  const b = await h.post('/api/v1/clients', { user_id: user.json.user_id, client_name: 'b' });
  const base = { user_id: user.json.user_id, target_client_id: b.json.client_id, protocol: 'tcp', target_host: '127.0.0.1', target_port: 22 };
  const head = await h.store.headPosition();
  const bad: [string, unknown][] = [
    ['idle_timeout', 0],
    ['idle_timeout', -5],
    ['idle_timeout', 1.5],
    ['idle_timeout', '30'],
    ['idle_timeout', 604_801],
    ['idle_timeout', null],
    ['max_connections', 0],
    ['max_connections', 1_000_001],
    ['max_connections', true],
    ['max_pending_opens', 0],
    ['max_pending_opens', 100_001],
    ['max_pending_opens', 2 ** 53],
  ];
  for (const [field, value] of bad) {
    t.match(await h.post('/api/v1/mappings', { ...base, [field]: value }), { status: 400, json: { code: 'TNX_VALIDATION_FAILED', field } }, `${field} ${JSON.stringify(value)}`);
  }
  t.equal(await h.store.headPosition(), head, 'nothing appended');
  const set = await h.post('/api/v1/mappings', { ...base, idle_timeout: 300, max_connections: 50, max_pending_opens: 10 });
  t.match(set, { status: 201, json: { idle_timeout: 300, max_connections: 50, max_pending_opens: 10 } });
  t.match(await h.get(`/api/v1/mappings/${set.json.mapping_id}`), { status: 200, json: { idle_timeout: 300, max_connections: 50, max_pending_opens: 10 } });
  const unset = await h.post('/api/v1/mappings', base);
  t.match(unset, { status: 201, json: { idle_timeout: null, max_connections: null, max_pending_opens: null } }, 'unset: null (never / the edge default)');
  const events = await h.store.readAll(head, 1000);
  const created = events.filter((e) => e.type === 'MappingCreated').map((e) => e.data as Record<string, unknown>);
  t.match(created[0], { idle_timeout: 300, max_connections: 50, max_pending_opens: 10 }, 'carried in MappingCreated');
  t.notOk('idle_timeout' in created[1]! || 'max_connections' in created[1]!, 'absent from MappingCreated when unset');
});

t.test('path ids must be canonical decimal: every other spelling is a 400 naming the parameter', async (t) => {
  const h = await harness(t);
  const user = await h.post('/api/v1/users', { username: 'owner', email: 'owner@example.com' });
  t.equal(user.json.user_id, 100000001);
  const client = await h.post('/api/v1/clients', { user_id: 100000001, client_name: 'c' });
  const loose = (id: number) => [
    `0x${id.toString(16).toUpperCase()}`,
    `${id / 1e8}e8`,
    `+${id}`,
    `%20${id}`,
    `00${id}`,
    `${id}%0A`,
    `${id}%20`,
    `${id}.0`,
    '-1',
    '',
  ];
  const routes: Array<['GET' | 'DELETE', string, number, string]> = [
    ['GET', '/api/v1/users/', 100000001, 'user_id'],
    ['GET', '/api/v1/clients/', client.json.client_id, 'client_id'],
    ['GET', '/api/v1/mappings/', 1001, 'mapping_id'],
    ['DELETE', '/api/v1/mappings/', 1001, 'mapping_id'],
  ];
  for (const [method, prefix, id, field] of routes) {
    for (const spelling of loose(id)) {
      if (spelling === '') continue; // an empty segment is another route (404), not an id
      const res = method === 'GET' ? await h.get(prefix + spelling) : await h.del(prefix + spelling);
      t.match(res, { status: 400, json: { code: 'TNX_VALIDATION_FAILED', field } }, `${method} ${prefix}${spelling}`);
    }
  }
  t.equal((await h.get('/api/v1/users/100000001')).status, 200, 'the canonical spelling still resolves');
  t.equal((await h.get(`/api/v1/clients/${client.json.client_id}`)).status, 200);
  t.match(await h.get('/api/v1/mappings/1001'), { status: 404 }, 'canonical but absent: 404, not 400');
});

t.test("the event store's own refusal reaches a caller as a 400 naming the field, not a 500", async (t) => {
  const p = toProblem(new UnstorableEventError('UserCreated', 'data.username', 'contains U+0000 (NUL)'));
  t.match(p, { status: 400, code: 'TNX_EVENTSTORE_UNSTORABLE_EVENT', field: 'username' });
});

t.test('a connection on which nothing arrives is closed by the idle timeout', async (t) => {
  const h = await harness(t, { requestMs: 60_000, idleMs: 300 });
  await h.app.listen({ host: '127.0.0.1', port: 0 });
  const address = h.app.server.address();
  if (typeof address !== 'object' || address === null) throw new Error('no address');
  const socket = netConnect({ host: '127.0.0.1', port: address.port });
  t.teardown(() => socket.destroy());
  socket.on('data', () => undefined);
  const closed = new Promise<boolean>((resolve) => {
    socket.once('close', () => resolve(true));
    setTimeout(() => resolve(false), 20_000).unref();
  });
  await new Promise<void>((resolve) => socket.once('connect', resolve));
  socket.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n');
  t.equal(await closed, true, 'closed well before the 60 s request timeout');
});

t.test('a request whose declared body never arrives is answered and closed by the request timeout', async (t) => {
  const h = await harness(t, { requestMs: 500 });
  await h.app.listen({ host: '127.0.0.1', port: 0 });
  const address = h.app.server.address();
  if (typeof address !== 'object' || address === null) throw new Error('no address');
  const socket = netConnect({ host: '127.0.0.1', port: address.port });
  t.teardown(() => socket.destroy());
  let received = '';
  socket.setEncoding('utf8');
  socket.on('data', (d: string) => (received += d));
  const closed = new Promise<boolean>((resolve) => {
    socket.once('close', () => resolve(true));
    // Generous bound, far above the 500 ms configured: only a server that never times out hits it.
    setTimeout(() => resolve(false), 20_000).unref();
  });
  await new Promise<void>((resolve) => socket.once('connect', resolve));
  socket.write(
    [
      'POST /api/v1/users HTTP/1.1',
      'Host: 127.0.0.1',
      `Authorization: Bearer ${API_KEY}`,
      'Content-Type: application/json',
      'Content-Length: 100',
      '',
      '{"username":',
    ].join('\r\n'),
  );
  t.equal(await closed, true, 'the server closed the connection');
  t.match(received, /^HTTP\/1\.1 408 /, 'with a 408 Request Timeout');
});

import t from 'tap';
import { recordClientConnected } from '../../shared/domain/client/client.commands.js';
import { openJetStream, openPostgres, startApiHarness, type OpenStore } from './api-harness.js';
import { eventually } from '../../services/projector/test/fixtures.js';

// GET /stats, /users/{id}/stats, /clients/{id}/stats, /mappings/{id}/stats: exact counts over a
// known population, scoped correctly, 404 for what does not exist, 400 for a malformed id.

const KEY = 'stats-test-key-0123456789';
const EDGE = { actor: { kind: 'node' as const, id: 'node-001' } };

function suite(name: string, open: OpenStore): void {
  t.test(name, async (t) => {
    const h = await startApiHarness(t, { open, apiKeys: [KEY], dbPrefix: 'tnx_stats', publicPortRange: { min: 33300, max: 33349 } });
    const empty = await h.send('GET', '/api/v1/stats');
    t.equal(empty.status, 200);
    t.match(empty.json, { users: 0, clients: { total: 0, online: 0 }, mappings: { total: 0, by_status: { pending: 0, active: 0, error: 0, disabled: 0 } } });

    const u1 = (await h.send('POST', '/api/v1/users', { username: 'one', email: 'one@example.com' })).json.user_id;
    const u2 = (await h.send('POST', '/api/v1/users', { username: 'two', email: 'two@example.com' })).json.user_id;
    const a = (await h.send('POST', '/api/v1/clients', { user_id: u1, client_name: 'a' })).json.client_id;
    const b = (await h.send('POST', '/api/v1/clients', { user_id: u1, client_name: 'b' })).json.client_id;
    const c = (await h.send('POST', '/api/v1/clients', { user_id: u2, client_name: 'c' })).json.client_id;
    t.equal((await h.send('PATCH', `/api/v1/clients/${c}`, { enabled: false })).status, 200);
    const pub = await h.send('POST', '/api/v1/mappings', { user_id: u1, target_client_id: b, protocol: 'tcp', target_host: '127.0.0.1', target_port: 80 });
    t.equal(pub.status, 201);
    const c2c = await h.send('POST', '/api/v1/mappings', { user_id: u1, source_client_id: a, target_client_id: b, protocol: 'tcp', target_host: '127.0.0.1', target_port: 22, local_port: 2222 });
    t.equal(c2c.status, 201);
    await recordClientConnected(h.store, { clientId: b, nodeId: 'node-001', sessionId: 's1', remoteAddr: '127.0.0.1:5' }, EDGE);
    t.ok(await eventually(async () => (await h.send('GET', `/api/v1/clients/${b}`)).json.status === 'online'), 'b online');

    const sys = await h.send('GET', '/api/v1/stats');
    t.equal(sys.status, 200);
    t.same(sys.json.clients, { total: 3, online: 1, offline: 2, managed: 3, anonymous: 0, disabled: 1 });
    t.same(sys.json.mappings, { total: 2, public: 1, client_to_client: 1, enabled: 2, disabled: 0, by_status: { pending: 2, active: 0, error: 0, disabled: 0 } });
    t.equal(sys.json.users, 2);
    t.ok(sys.json.events.head > 10, `head ${sys.json.events.head}`);

    const s1 = await h.send('GET', `/api/v1/users/${u1}/stats`);
    t.same(s1.json.clients, { total: 2, online: 1, offline: 1, managed: 2, anonymous: 0, disabled: 0 });
    t.equal(s1.json.mappings.total, 2);
    const s2 = await h.send('GET', `/api/v1/users/${u2}/stats`);
    t.same(s2.json.clients, { total: 1, online: 0, offline: 1, managed: 1, anonymous: 0, disabled: 1 });
    t.equal(s2.json.mappings.total, 0);

    const cb = await h.send('GET', `/api/v1/clients/${b}/stats`);
    t.match(cb.json, { client_id: b, status: 'online', node_id: 'node-001' });
    t.ok(cb.json.last_seen_at);
    t.equal(cb.json.mappings.as_target.total, 2);
    t.equal(cb.json.mappings.as_source.total, 0);
    const ca = await h.send('GET', `/api/v1/clients/${a}/stats`);
    t.equal(ca.json.mappings.as_source.total, 1);
    t.equal(ca.json.mappings.as_source.client_to_client, 1);
    t.equal(ca.json.mappings.as_target.total, 0);

    const ms = await h.send('GET', `/api/v1/mappings/${c2c.json.mapping_id}/stats`);
    t.match(ms.json, { mapping_id: c2c.json.mapping_id, status: 'pending', enabled: true, source: { client_id: a, online: false }, target: { client_id: b, online: true } });
    const mp = await h.send('GET', `/api/v1/mappings/${pub.json.mapping_id}/stats`);
    t.equal(mp.json.source, null, 'a public mapping has no source client');

    t.match(await h.send('GET', '/api/v1/users/100009999/stats'), { status: 404, json: { code: 'TNX_USER_NOT_FOUND' } });
    t.match(await h.send('GET', '/api/v1/clients/600009999/stats'), { status: 404, json: { code: 'TNX_CLIENT_NOT_FOUND' } });
    t.match(await h.send('GET', '/api/v1/mappings/9999/stats'), { status: 404, json: { code: 'TNX_MAPPING_NOT_FOUND' } });
    t.match(await h.send('GET', '/api/v1/clients/01/stats'), { status: 400, json: { field: 'client_id' } });
    t.equal((await h.send('GET', '/api/v1/stats', undefined, {})).status, 401, 'stats need a key');

    // A deleted client leaves the counts.
    t.equal((await h.send('DELETE', `/api/v1/clients/${c}`)).status, 204);
    t.ok(await eventually(async () => (await h.send('GET', '/api/v1/stats')).json.clients.total === 2), 'a deleted client is not counted');
  });
}

suite('PostgreSQL event store', openPostgres);
suite('JetStream event store', openJetStream);

import t from 'tap';
import { openPostgres, startApiHarness } from './api-harness.js';

// PATCH /api/v1/mappings/{id}: success with the new ETag, each 4xx naming its field, If-Match.

const KEY = 'patch-test-key-0123456789';

t.test('PATCH /mappings/{id}', async (t) => {
  const h = await startApiHarness(t, { open: openPostgres, apiKeys: [KEY], dbPrefix: 'tnx_mpatch', publicPortRange: { min: 33400, max: 33409 } });
  const user = (await h.send('POST', '/api/v1/users', { username: 'p', email: 'p@example.com' })).json.user_id;
  const b = (await h.send('POST', '/api/v1/clients', { user_id: user, client_name: 'b' })).json.client_id;
  const created = await h.send('POST', '/api/v1/mappings', { user_id: user, target_client_id: b, protocol: 'tcp', target_host: '127.0.0.1', target_port: 80 });
  t.equal(created.status, 201);
  const id = created.json.mapping_id;
  const url = `/api/v1/mappings/${id}`;

  const off = await h.send('PATCH', url, { enabled: false, target_host: 'db.internal', target_port: 5432 });
  t.equal(off.status, 200, JSON.stringify(off.json));
  t.match(off.json, { mapping_id: id, enabled: false, status: 'disabled', target_host: 'db.internal', target_port: 5432, public_port: created.json.public_port });
  t.equal(off.headers['etag'], 'W/"2"');
  t.equal((await h.send('GET', url)).json.target_port, 5432);

  const same = await h.send('PATCH', url, { enabled: false }, { authorization: `Bearer ${KEY}`, 'if-match': 'W/"2"' });
  t.equal(same.status, 200, 'a PATCH that changes nothing is a 200');
  t.equal(same.headers['etag'], 'W/"2"', 'and no new version');
  const stale = await h.send('PATCH', url, { enabled: true }, { authorization: `Bearer ${KEY}`, 'if-match': 'W/"1"' });
  t.match(stale, { status: 412, json: { code: 'TNX_PRECONDITION_FAILED' } });
  const on = await h.send('PATCH', url, { enabled: true }, { authorization: `Bearer ${KEY}`, 'if-match': 'W/"2"' });
  t.match(on, { status: 200, json: { enabled: true, status: 'pending' } });

  t.match(await h.send('PATCH', url, {}), { status: 400, json: { code: 'TNX_VALIDATION_FAILED' } });
  t.match(await h.send('PATCH', url, { target_port: 70000 }), { status: 400, json: { field: 'target_port' } });
  t.match(await h.send('PATCH', url, { target_host: 'bad host\u0000' }), { status: 400, json: { field: 'target_host' } });
  t.match(await h.send('PATCH', url, { public_port: 33401 }), { status: 400, json: { field: 'public_port' } }, 'a field that cannot change is an unknown key');
  t.match(await h.send('PATCH', url, { enabled: 'yes' }), { status: 400, json: { field: 'enabled' } });
  t.match(await h.send('PATCH', '/api/v1/mappings/9999', { enabled: false }), { status: 404, json: { code: 'TNX_MAPPING_NOT_FOUND' } });
  t.equal((await h.send('DELETE', url)).status, 204);
  t.match(await h.send('PATCH', url, { enabled: false }), { status: 404 }, 'a deleted mapping cannot be patched');

  const events = await h.send('GET', `/api/v1/events?aggregate=mapping:${id}`);
  t.same(events.json.events.map((e: { type: string }) => e.type), ['MappingCreated', 'MappingUpdated', 'MappingUpdated', 'MappingDeleted']);
});

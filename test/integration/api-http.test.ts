import t from 'tap';
import { createApiKey } from '../../shared/domain/apikey/apikey.commands.js';
import { openPostgres, startApiHarness } from './api-harness.js';

// The Management API's cross-cutting HTTP behaviour: CORS for the configured origins only, a rate
// limit per API key (not per address) answered with problem JSON and Retry-After, and the docs UI.

const KEY_A = 'http-test-key-a-0123456789';
const KEY_B = 'http-test-key-b-0123456789';
const bearer = (key: string) => ({ authorization: `Bearer ${key}` });

t.test('CORS: the configured origin gets preflight and response headers; others get none', async (t) => {
  const h = await startApiHarness(t, {
    open: openPostgres,
    apiKeys: [KEY_A],
    dbPrefix: 'tnx_http',
    publicPortRange: { min: 33200, max: 33209 },
    deps: { corsOrigins: ['https://console.example.com'] },
  });
  const pre = await h.app.inject({
    method: 'OPTIONS',
    url: '/api/v1/users',
    headers: { origin: 'https://console.example.com', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type,idempotency-key' },
  });
  t.equal(pre.statusCode, 204, 'a preflight needs no API key');
  t.equal(pre.headers['access-control-allow-origin'], 'https://console.example.com');
  t.match(String(pre.headers['access-control-allow-methods']), /PATCH/);
  t.match(String(pre.headers['access-control-allow-headers']), /idempotency-key/);
  const get = await h.app.inject({ method: 'GET', url: '/api/v1/users', headers: { ...bearer(KEY_A), origin: 'https://console.example.com' } });
  t.equal(get.statusCode, 200);
  t.equal(get.headers['access-control-allow-origin'], 'https://console.example.com');
  t.match(String(get.headers['access-control-expose-headers']), /etag/);

  const evil = await h.app.inject({ method: 'GET', url: '/api/v1/users', headers: { ...bearer(KEY_A), origin: 'https://console.example.com.evil.test' } });
  t.equal(evil.headers['access-control-allow-origin'], undefined, 'a look-alike origin gets no CORS header');
  const evilPre = await h.app.inject({ method: 'OPTIONS', url: '/api/v1/users', headers: { origin: 'https://evil.test', 'access-control-request-method': 'DELETE' } });
  t.equal(evilPre.headers['access-control-allow-origin'], undefined);
});

t.test('CORS off by default: no headers for any origin', async (t) => {
  const h = await startApiHarness(t, { open: openPostgres, apiKeys: [KEY_A], dbPrefix: 'tnx_http', publicPortRange: { min: 33210, max: 33219 } });
  const get = await h.app.inject({ method: 'GET', url: '/api/v1/users', headers: { ...bearer(KEY_A), origin: 'https://console.example.com' } });
  t.equal(get.statusCode, 200);
  t.equal(get.headers['access-control-allow-origin'], undefined);
});

t.test('rate limit per API key: the 11th request in a minute is a 429 problem, other keys unaffected', async (t) => {
  const h = await startApiHarness(t, {
    open: openPostgres,
    apiKeys: [KEY_A, KEY_B],
    dbPrefix: 'tnx_http',
    publicPortRange: { min: 33220, max: 33229 },
    deps: { rateLimitPerMinute: 10 },
  });
  const statuses: number[] = [];
  for (let i = 0; i < 10; i++) {
    // Different source addresses: the budget is the key's, wherever its requests come from.
    const res = await h.app.inject({ method: 'GET', url: '/api/v1/users', headers: bearer(KEY_A), remoteAddress: `127.0.0.${1 + i}` });
    statuses.push(res.statusCode);
    if (i === 0) t.equal(res.headers['x-ratelimit-limit'], '10');
  }
  t.same(statuses, Array(10).fill(200));
  const over = await h.app.inject({ method: 'GET', url: '/api/v1/users', headers: bearer(KEY_A), remoteAddress: '127.0.0.99' });
  t.equal(over.statusCode, 429);
  t.match(over.headers['content-type'], /application\/problem\+json/);
  const body = JSON.parse(over.payload);
  t.match(body, { status: 429, code: 'TNX_RATE_LIMITED', title: 'Too Many Requests', detail: /more than 10 requests per minute/ });
  t.ok(Number(over.headers['retry-after']) > 0, `Retry-After: ${over.headers['retry-after']}`);
  t.equal((await h.send('GET', '/api/v1/users', undefined, bearer(KEY_B))).status, 200, 'another key has its own budget');
  const logKey = await createApiKey(h.store, { name: 'other' }, { actor: { kind: 'operator', id: 'test' } });
  t.equal((await h.send('GET', '/api/v1/users', undefined, bearer(logKey.key))).status, 200, 'and so has a log key');
  const bad = await h.app.inject({ method: 'GET', url: '/api/v1/users', headers: bearer('not-a-key-0123456789') });
  t.equal(bad.statusCode, 401, 'an unknown key is refused before the limit is counted');
  t.equal((await h.app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200, 'health is never limited');
});

t.test('docs UI at /docs over the same OpenAPI document', async (t) => {
  const h = await startApiHarness(t, { open: openPostgres, apiKeys: [KEY_A], dbPrefix: 'tnx_http', publicPortRange: { min: 33230, max: 33239 } });
  const page = await h.app.inject({ method: 'GET', url: '/docs' });
  t.equal(page.statusCode, 200);
  t.match(page.headers['content-type'], /text\/html/);
  t.match(page.payload, /swagger-ui/i);
  const asset = await h.app.inject({ method: 'GET', url: '/docs/static/swagger-ui-bundle.js' });
  t.equal(asset.statusCode, 200, 'its scripts are served locally (no CDN: the API may run offline)');
  t.match(asset.headers['content-type'], /javascript/);
  const spec = await h.app.inject({ method: 'GET', url: '/docs/json' });
  t.equal(spec.statusCode, 200);
  const doc = JSON.parse(spec.payload);
  t.ok(doc.paths['/api/v1/users'], 'the document lists the API');
  t.same(doc.paths, JSON.parse((await h.app.inject({ method: 'GET', url: '/openapi.json' })).payload).paths, 'the same document as /openapi.json');
  t.notOk(Object.keys(doc.paths).some((p) => p.startsWith('/docs')), 'the UI routes are not in the document');
});

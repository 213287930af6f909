import t, { type Test } from 'tap';
import type { EventStore } from '../../shared/eventstore/types.js';
import { createApiKey, hashApiKey, revokeApiKey } from '../../shared/domain/apikey/apikey.commands.js';
import { createDb, createPool } from '../../shared/db/connect.js';
import { silentLogger } from '../../shared/platform/logger.js';
import { buildApp } from '../../services/api/index.js';
import { eventLogApiKeys } from '../../services/api/apikeys.js';
import { openJetStream, openPostgres, startApiHarness, type ApiHarness, type OpenStore } from './api-harness.js';

/**
 * Admin API keys from the event log (`tunnox ctl apikeys`): a key made in the log authenticates at
 * once, its events name its key id as actor, its revocation ends it within the cache's TTL, forged
 * and hostile tokens are refused, and a log or database that cannot be read answers 503, never a
 * pass or a 500.
 */

const ADMIN = 'admin-key-0123456789abcdef';
const OPERATOR = { actor: { kind: 'operator' as const, id: 'ops@test' } };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function harness(t: Test, open: OpenStore): Promise<ApiHarness<EventStore>> {
  return startApiHarness(t, { open, apiKeys: [ADMIN], dbPrefix: 'tnx_apikeys', publicPortRange: { min: 33100, max: 33109 }, deps: { apiKeyCacheMs: 200 } });
}
const bearer = (key: string) => ({ authorization: `Bearer ${key}` });

function suite(name: string, open: OpenStore): void {
  t.test(name, async (t) => {
    t.test('a key made in the log works at once, is the actor of its events, and stops after revoke', async (t) => {
      const h = await harness(t, open);
      const made = await createApiKey(h.store, { name: 'billing' }, OPERATOR);
      t.match(made.key, /^tnx_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
      const created = await h.send('POST', '/api/v1/users', { username: 'alice', email: 'alice@example.com' }, bearer(made.key));
      t.equal(created.status, 201, JSON.stringify(created.json));
      const events = await h.send('GET', `/api/v1/events?aggregate=user:${created.json.user_id}`);
      t.same(events.json.events[0].actor, { kind: 'api_key', id: made.keyId }, 'the event names the key id as actor');

      // Only the digest is in the log, and the API's own audit shows it redacted.
      const keyEvents = await h.send('GET', `/api/v1/events?aggregate=apikey:${made.keyId}`);
      t.equal(keyEvents.status, 200);
      t.match(keyEvents.json.events[0], { type: 'ApiKeyCreated', actor: OPERATOR.actor, data: { apikey_id: made.keyId, name: 'billing', key_hash: '[redacted]' } });
      const raw = (await h.store.readStream(`apikey.${made.keyId}`)).events[0]!;
      t.equal((raw.data as { key_hash: string }).key_hash, hashApiKey(made.key));
      t.notOk(JSON.stringify(raw).includes(made.key.slice(22)), 'the secret part is nowhere in the stored event');

      // The admin key still works beside it; a second log key is independent.
      t.equal((await h.send('GET', '/api/v1/users')).status, 200);
      const other = await createApiKey(h.store, { name: 'ci' }, OPERATOR);
      t.equal((await h.send('GET', '/api/v1/users', undefined, bearer(other.key))).status, 200);

      await revokeApiKey(h.store, { keyId: made.keyId, reason: 'rotated' }, OPERATOR);
      let status = 0;
      const start = Date.now();
      while (Date.now() - start < 5000) {
        status = (await h.send('GET', '/api/v1/users', undefined, bearer(made.key))).status;
        if (status === 401) break;
        await sleep(20);
      }
      t.equal(status, 401, 'the revoked key is refused');
      t.ok(Date.now() - start < 1500, `refused ${Date.now() - start} ms after the revoke (cache TTL 200 ms)`);
      t.equal((await h.send('GET', '/api/v1/users', undefined, bearer(other.key))).status, 200, 'the other key still works');
      const again = await revokeApiKey(h.store, { keyId: made.keyId }, OPERATOR);
      t.equal(again.revoked, false, 'a second revoke appends nothing');

      // The read model lists both, one revoked.
      await h.send('POST', '/api/v1/users', { username: 'sync', email: 'sync@example.com' }); // read-your-writes: the projector is past the revoke
      const rows = await h.tdb.db.selectFrom('api_keys').selectAll().orderBy('name').execute();
      t.match(
        rows.map((r) => [r.name, r.status, r.created_by, r.revoke_reason]),
        [
          ['billing', 'revoked', 'operator:ops@test', 'rotated'],
          ['ci', 'active', 'operator:ops@test', null],
        ],
      );
    });

    t.test('forged and hostile tokens are refused with 401, the log keys intact', async (t) => {
      const h = await harness(t, open);
      const made = await createApiKey(h.store, { name: 'real' }, OPERATOR);
      const keyId = made.keyId;
      const forged = [
        `tnx_${keyId}_${'A'.repeat(43)}`, // right id, wrong secret
        made.key.slice(0, -1) + (made.key.endsWith('A') ? 'B' : 'A'),
        `tnx_${'0'.repeat(15)}a_${made.key.slice(22)}`, // right secret, unknown id
        made.key + 'x',
        made.key.toUpperCase(),
        `tnx_${keyId}_\u0000${made.key.slice(23)}`,
        `tnx_${keyId}_\ud800${made.key.slice(24)}`,
        'tnx_' + 'f'.repeat(10_000),
      ];
      for (const token of forged) {
        const res = await h.app.inject({ method: 'GET', url: '/api/v1/users', headers: { authorization: `Bearer ${token}` } });
        t.equal(res.statusCode, 401, `refused: ${JSON.stringify(token.slice(0, 40))}`);
        t.equal(JSON.parse(res.payload).code, 'TNX_AUTH_UNAUTHORIZED');
      }
      t.equal((await h.send('GET', '/api/v1/users', undefined, bearer(made.key))).status, 200, 'the real key still works');
    });
  });
}

suite('PostgreSQL event store', openPostgres);
suite('JetStream event store', openJetStream);

t.test('an unreadable log on a key lookup is a 503, and a fresh read follows once it is back', async (t) => {
  let down = false;
  const h = await startApiHarness(t, {
    open: openPostgres,
    apiKeys: [ADMIN],
    dbPrefix: 'tnx_apikeys',
    publicPortRange: { min: 33110, max: 33119 },
    deps: { apiKeyCacheMs: 60_000 },
    wrap: (inner) =>
      new Proxy(inner, {
        get(target, prop, receiver) {
          if (prop === 'readLastEvent' && down) return async () => Promise.reject(new Error('log unreachable'));
          const v = Reflect.get(target, prop, receiver);
          return typeof v === 'function' ? v.bind(target) : v;
        },
      }),
  });
  const made = await createApiKey(h.store, { name: 'k' }, OPERATOR);
  down = true;
  const res = await h.send('GET', '/api/v1/users', undefined, bearer(made.key));
  t.equal(res.status, 503);
  t.equal(res.json.code, 'TNX_UNAVAILABLE');
  t.equal((await h.send('GET', '/api/v1/users')).status, 200, 'the configured key needs no log read');
  down = false;
  t.equal((await h.send('GET', '/api/v1/users', undefined, bearer(made.key))).status, 200, 'the failure was not cached');
});

t.test('read-model database down: 503 TNX_UNAVAILABLE, not 500', async (t) => {
  const h = await startApiHarness(t, { open: openPostgres, apiKeys: [ADMIN], dbPrefix: 'tnx_apikeys', publicPortRange: { min: 33120, max: 33129 } });
  // An API whose read-model database refuses connections (nothing listens on port 1).
  const pool = createPool('postgres://postgres@127.0.0.1:1/none', 2, () => undefined);
  const db = createDb(pool);
  t.teardown(() => db.destroy());
  const app = await buildApp({
    store: h.store,
    db,
    waiter: { waitFor: async () => false },
    logger: silentLogger(),
    apiKeys: [ADMIN],
    publicPortRange: { min: 33120, max: 33129 },
  });
  t.teardown(() => app.close());
  for (const url of ['/api/v1/users', '/api/v1/clients', '/api/v1/mappings', '/api/v1/users/100000001']) {
    const res = await app.inject({ method: 'GET', url, headers: bearer(ADMIN) });
    t.equal(res.statusCode, 503, url);
    t.equal(JSON.parse(res.payload).code, 'TNX_UNAVAILABLE', url);
  }

});

t.test('the directory caches per key id, bounded, and never caches a failure', async (t) => {
  let reads = 0;
  let fail = false;
  const store = {
    async readLastEvent(stream: string) {
      reads++;
      if (fail) throw new Error('down');
      return { event: stream === 'apikey.00000000000000aa' ? ({ type: 'ApiKeyCreated', data: { key_hash: hashApiKey('k1') } } as never) : null, revision: null };
    },
  } as unknown as EventStore;
  let now = 0;
  const dir = eventLogApiKeys(store, { ttlMs: 1000, maxEntries: 20, now: () => now });
  t.equal(await dir.verify('00000000000000aa', 'k1'), true);
  t.equal(await dir.verify('00000000000000aa', 'k2'), false, 'a wrong key with a known id');
  t.equal(reads, 1, 'one read for both within the TTL');
  now = 1001;
  t.equal(await dir.verify('00000000000000aa', 'k1'), true);
  t.equal(reads, 2, 'read again after the TTL');
  for (let i = 0; i < 100; i++) await dir.verify(i.toString(16).padStart(16, 'b'), 'x');
  t.equal(reads, 102, 'unknown ids are each read once');
  fail = true;
  now = 5000;
  await t.rejects(dir.verify('00000000000000aa', 'k1'));
  fail = false;
  t.equal(await dir.verify('00000000000000aa', 'k1'), true, 'the failure was not remembered');
});

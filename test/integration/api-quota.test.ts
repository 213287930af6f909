import t, { type Test } from 'tap';
import type { EventStore } from '../../shared/eventstore/types.js';
import { openJetStream, openPostgres, startApiHarness, type ApiHarness, type OpenStore, type Reply } from './api-harness.js';

const API_KEY = 'quota-test-key-0123456789';
const AUTH = { authorization: `Bearer ${API_KEY}` };

async function harness(t: Test, open: OpenStore, defaultTier?: 'unlimited' | 'free' | 'pro' | 'enterprise'): Promise<ApiHarness<EventStore>> {
  return startApiHarness(t, {
    open,
    apiKeys: [API_KEY],
    dbPrefix: 'tnx_quota',
    publicPortRange: { min: 33000, max: 33049 },
    ...(defaultTier ? { deps: { defaultTier } } : {}),
  });
}

function tally(replies: Reply[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of replies) {
    const k = r.status === 201 ? '201' : `${r.status} ${r.json?.code}`;
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
}

function suite(name: string, open: OpenStore): void {
  t.test(name, async (t) => {
    t.test('20 parallel mapping creates against max_mappings 5: exactly 5 created, 15 refused', async (t) => {
      const h = await harness(t, open);
      const user = await h.send('POST', '/api/v1/users', { username: 'racer', email: 'racer@example.com' });
      const quota = await h.send('PUT', `/api/v1/users/${user.json.user_id}/quota`, { max_mappings: 5 });
      t.equal(quota.status, 200);
      t.match(quota.json, { tier: 'custom', max_mappings: 5, max_clients: null, current_mappings: 0 });
      const a = await h.send('POST', '/api/v1/clients', { user_id: user.json.user_id, client_name: 'a' });
      const b = await h.send('POST', '/api/v1/clients', { user_id: user.json.user_id, client_name: 'b' });
      const creates = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          h.send('POST', '/api/v1/mappings', {
            user_id: user.json.user_id,
            source_client_id: a.json.client_id,
            target_client_id: b.json.client_id,
            protocol: 'tcp',
            target_host: '127.0.0.1',
            target_port: 22,
            local_port: 4000 + i,
          }),
        ),
      );
      t.same(tally(creates), { '201': 5, '409 TNX_QUOTA_EXCEEDED': 15 });
      const refused = creates.find((r) => r.status === 409)!;
      t.equal(refused.json.field, 'max_mappings');
      t.match(refused.json.detail, /max_mappings: 5/);
      const listed = await h.send('GET', `/api/v1/mappings?user_id=${user.json.user_id}`);
      t.equal(listed.json.mappings.length, 5, 'the read model holds exactly 5');
      t.equal((await h.send('GET', `/api/v1/users/${user.json.user_id}/quota`)).json.current_mappings, 5);

      const first = creates.find((r) => r.status === 201)!;
      t.equal((await h.send('DELETE', `/api/v1/mappings/${first.json.mapping_id}`)).status, 204);
      t.equal((await h.send('GET', `/api/v1/users/${user.json.user_id}/quota`)).json.current_mappings, 4, 'a delete frees its slot');
      const again = await h.send('POST', '/api/v1/mappings', {
        user_id: user.json.user_id,
        target_client_id: b.json.client_id,
        protocol: 'tcp',
        target_host: '127.0.0.1',
        target_port: 22,
      });
      t.equal(again.status, 201, 'and the freed slot can be used');
      const events = await h.store.readAll(0, 10_000);
      const freed = events.find((e) => e.type === 'AccountSlotFreed')!;
      const deleted = events.find((e) => e.type === 'MappingDeleted')!;
      t.equal(freed.causation_id, deleted.id, 'the cascade names MappingDeleted as its cause');
    });

    t.test('20 parallel client creates against max_clients 3: exactly 3 created', async (t) => {
      const h = await harness(t, open);
      const user = await h.send('POST', '/api/v1/users', { username: 'clients', email: 'c@example.com' });
      await h.send('PUT', `/api/v1/users/${user.json.user_id}/quota`, { max_clients: 3 });
      const creates = await Promise.all(
        Array.from({ length: 20 }, (_, i) => h.send('POST', '/api/v1/clients', { user_id: user.json.user_id, client_name: `c${i}` })),
      );
      t.same(tally(creates), { '201': 3, '409 TNX_QUOTA_EXCEEDED': 17 });
      const listed = await h.send('GET', `/api/v1/clients?user_id=${user.json.user_id}`);
      t.equal(listed.json.clients.length, 3);
      const quota = await h.send('GET', `/api/v1/users/${user.json.user_id}/quota`);
      t.match(quota.json, { current_clients: 3, max_clients: 3 });
    });

    t.test('tiers: named on create, the server default otherwise; PUT replaces; bad input is a 400 naming the field', async (t) => {
      const h = await harness(t, open, 'free');
      const free = await h.send('POST', '/api/v1/users', { username: 'dflt', email: 'd@example.com' });
      t.match((await h.send('GET', `/api/v1/users/${free.json.user_id}/quota`)).json, {
        tier: 'free',
        max_clients: 1,
        max_mappings: 1,
        total_bandwidth_limit: 512 * 1024,
        monthly_traffic_limit: 1024 ** 3,
      });
      const pro = await h.send('POST', '/api/v1/users', { username: 'pro', email: 'p@example.com', tier: 'pro' });
      t.match((await h.send('GET', `/api/v1/users/${pro.json.user_id}/quota`)).json, { tier: 'pro', max_clients: 10, max_mappings: 50 });
      t.equal((await h.send('POST', '/api/v1/clients', { user_id: free.json.user_id, client_name: 'one' })).status, 201);
      const second = await h.send('POST', '/api/v1/clients', { user_id: free.json.user_id, client_name: 'two' });
      t.equal(second.status, 409, 'free allows one client');
      t.equal(second.json.code, 'TNX_QUOTA_EXCEEDED');
      const up = await h.send('PUT', `/api/v1/users/${free.json.user_id}/quota`, { tier: 'pro' });
      t.match(up.json, { tier: 'pro', current_clients: 1 });
      t.equal((await h.send('POST', '/api/v1/clients', { user_id: free.json.user_id, client_name: 'two' })).status, 201, 'raised: allowed');
      const lowered = await h.send('PUT', `/api/v1/users/${free.json.user_id}/quota`, { tier: 'free' });
      t.match(lowered.json, { tier: 'free', max_clients: 1, current_clients: 2 }, 'lowering keeps what exists');
      t.equal((await h.send('POST', '/api/v1/clients', { user_id: free.json.user_id, client_name: 'three' })).status, 409, 'and refuses new ones');
      t.match((await h.send('PUT', `/api/v1/users/${free.json.user_id}/quota`, { tier: 'pro', max_mappings: null })).json, {
        tier: 'custom',
        max_mappings: null,
        max_clients: 10,
      });
      t.match((await h.send('PUT', `/api/v1/users/${free.json.user_id}/quota`, { tier: 'pro', max_clients: 10 })).json, { tier: 'pro' }, 'an override equal to the tier keeps its name');

      for (const [body, field] of [
        [{ max_clients: -1 }, 'max_clients'],
        [{ max_mappings: 1.5 }, 'max_mappings'],
        [{ tier: 'gold' }, 'tier'],
        [{ max_sessions: 1 }, 'max_sessions'],
      ] as const) {
        const res = await h.send('PUT', `/api/v1/users/${free.json.user_id}/quota`, body);
        t.equal(res.status, 400, JSON.stringify(body));
        t.equal(res.json.field, field);
      }
      t.equal((await h.send('GET', '/api/v1/users/100000999/quota')).status, 404);
      t.equal((await h.send('PUT', '/api/v1/users/100000999/quota', { tier: 'free' })).status, 404);
      t.equal((await h.send('POST', '/api/v1/users', { username: 'x', email: 'x@example.com', tier: 'custom' })).status, 400);
    });

    t.test('DELETE /clients/{id} ends the client and cascades to its mappings; PATCH renames', async (t) => {
      const h = await harness(t, open);
      const user = (await h.send('POST', '/api/v1/users', { username: 'del', email: 'del@example.com' })).json.user_id;
      const [a, b, c] = await Promise.all(['a', 'b', 'c'].map(async (n) => (await h.send('POST', '/api/v1/clients', { user_id: user, client_name: n })).json.client_id));
      const c2c = (src: number, dst: number, port: number) =>
        h.send('POST', '/api/v1/mappings', { user_id: user, source_client_id: src, target_client_id: dst, protocol: 'tcp', target_host: '127.0.0.1', target_port: 22, local_port: port });
      const ab = await c2c(a, b, 5001);
      const ca = await c2c(c, a, 5002);
      const pub = await h.send('POST', '/api/v1/mappings', { user_id: user, target_client_id: b, protocol: 'tcp', target_host: '127.0.0.1', target_port: 80, public_port: 33040 });
      t.same([ab.status, ca.status, pub.status], [201, 201, 201]);

      const renamed = await h.send('PATCH', `/api/v1/clients/${b}`, { client_name: 'b-renamed' });
      t.equal(renamed.status, 200);
      t.equal(renamed.json.client_name, 'b-renamed');
      t.equal(renamed.headers['etag'], 'W/"2"');
      t.equal((await h.send('PATCH', `/api/v1/clients/${b}`, {})).status, 400, 'an empty PATCH names nothing to change');
      const bad = await h.send('PATCH', `/api/v1/clients/${b}`, { client_name: 'bad\u0000name' });
      t.equal(bad.status, 400);
      t.equal(bad.json.field, 'client_name');

      const stale = await h.app.inject({ method: 'DELETE', url: `/api/v1/clients/${b}`, headers: { ...AUTH, 'if-match': 'W/"1"' } });
      t.equal(stale.statusCode, 412, 'a stale If-Match deletes nothing');
      t.equal((await h.send('DELETE', `/api/v1/clients/${b}`)).status, 204);
      t.equal((await h.send('GET', `/api/v1/clients/${b}`)).status, 404);
      t.equal((await h.send('GET', `/api/v1/mappings/${ab.json.mapping_id}`)).status, 404, 'the mapping b was the target of is gone');
      t.equal((await h.send('GET', `/api/v1/mappings/${pub.json.mapping_id}`)).status, 404, 'and the public one');
      t.equal((await h.send('GET', `/api/v1/mappings/${ca.json.mapping_id}`)).status, 200, 'a mapping between other clients stays');
      t.match((await h.send('GET', `/api/v1/users/${user}/quota`)).json, { current_clients: 2, current_mappings: 1 });
      const events = await h.store.readAll(0, 10_000);
      const cause = events.find((e) => e.type === 'ClientDeleted')!;
      const causedBy = (id: string) => events.filter((e) => e.causation_id === id);
      const direct = causedBy(cause.id);
      t.same(direct.map((e) => e.type).sort(), ['AccountSlotFreed', 'MappingDeleted', 'MappingDeleted'], 'ClientDeleted causes the slot free and both mapping deletes');
      const indirect = direct.filter((e) => e.type === 'MappingDeleted').flatMap((e) => causedBy(e.id).map((x) => x.type));
      t.same(indirect.sort(), ['AccountSlotFreed', 'AccountSlotFreed', 'LocalPortReleased', 'PublicPortReleased'], 'and each MappingDeleted its own port and slot');
      const again = await h.send('POST', '/api/v1/mappings', { user_id: user, target_client_id: a, protocol: 'tcp', target_host: '127.0.0.1', target_port: 80, public_port: 33040 });
      t.equal(again.status, 201, 'the public port was freed');
      t.equal((await h.send('DELETE', `/api/v1/clients/${b}`)).status, 404, 'deleting again is a 404');
    });

    t.test('PATCH /users renames (the old name is free again); DELETE /users removes the user with its clients and mappings', async (t) => {
      const h = await harness(t, open);
      const u = (await h.send('POST', '/api/v1/users', { username: 'Old', email: 'old@example.com' })).json.user_id;
      const other = (await h.send('POST', '/api/v1/users', { username: 'other', email: 'o@example.com' })).json.user_id;
      t.equal((await h.send('PATCH', `/api/v1/users/${u}`, { username: 'OTHER' })).status, 409, 'a taken name, whatever the case');
      const renamed = await h.send('PATCH', `/api/v1/users/${u}`, { username: 'New', email: 'new@example.com' });
      t.equal(renamed.status, 200);
      t.match(renamed.json, { username: 'New', email: 'new@example.com' });
      t.equal(renamed.headers['etag'], 'W/"2"');
      t.equal((await h.send('PATCH', `/api/v1/users/${u}`, { email: 'not-an-address' })).json.field, 'email');
      t.equal((await h.send('PATCH', `/api/v1/users/${u}`, {})).status, 400);
      t.equal((await h.send('POST', '/api/v1/users', { username: 'old', email: 'x@example.com' })).status, 201, 'the old name is free again');

      const a = (await h.send('POST', '/api/v1/clients', { user_id: u, client_name: 'a' })).json.client_id;
      const b = (await h.send('POST', '/api/v1/clients', { user_id: u, client_name: 'b' })).json.client_id;
      const keep = (await h.send('POST', '/api/v1/clients', { user_id: other, client_name: 'keep' })).json.client_id;
      const m = await h.send('POST', '/api/v1/mappings', { user_id: u, source_client_id: a, target_client_id: b, protocol: 'tcp', target_host: '127.0.0.1', target_port: 22, local_port: 6001 });
      t.equal(m.status, 201);
      const stale = await h.app.inject({ method: 'DELETE', url: `/api/v1/users/${u}`, headers: { ...AUTH, 'if-match': 'W/"1"' } });
      t.equal(stale.statusCode, 412);
      t.equal((await h.send('DELETE', `/api/v1/users/${u}`)).status, 204);
      t.equal((await h.send('GET', `/api/v1/users/${u}`)).status, 404);
      t.equal((await h.send('GET', `/api/v1/clients/${a}`)).status, 404);
      t.equal((await h.send('GET', `/api/v1/clients/${b}`)).status, 404);
      t.equal((await h.send('GET', `/api/v1/mappings/${m.json.mapping_id}`)).status, 404);
      t.equal((await h.send('GET', `/api/v1/clients/${keep}`)).status, 200, "another user's client stays");
      t.equal((await h.send('POST', '/api/v1/clients', { user_id: u, client_name: 'late' })).status, 422, 'no client for a deleted user');
      t.equal((await h.send('POST', '/api/v1/users', { username: 'new', email: 'n@example.com' })).status, 201, 'its username is free');
      t.equal((await h.send('DELETE', `/api/v1/users/${u}`)).status, 404);
      const events = await h.store.readAll(0, 10_000);
      const cause = events.find((e) => e.type === 'UserDeleted')!;
      t.same(
        events.filter((e) => e.causation_id === cause.id).map((e) => e.type).sort(),
        ['ClientDeleted', 'ClientDeleted', 'UsernameReleased'],
        'the cascades name UserDeleted as their cause',
      );
    });

    t.test('usernames are unique regardless of case, also under a race', async (t) => {
      const h = await harness(t, open);
      t.equal((await h.send('POST', '/api/v1/users', { username: 'John', email: 'j1@example.com' })).status, 201);
      const dup = await h.send('POST', '/api/v1/users', { username: 'john', email: 'j2@example.com' });
      t.equal(dup.status, 409);
      t.equal(dup.json.code, 'TNX_USERNAME_TAKEN');
      t.equal(dup.json.field, 'username');
      const race = await Promise.all(Array.from({ length: 10 }, (_, i) => h.send('POST', '/api/v1/users', { username: i % 2 ? 'Racer' : 'RACER', email: `r${i}@example.com` })));
      t.same(tally(race), { '201': 1, '409 TNX_USERNAME_TAKEN': 9 });
      const users = await h.send('GET', '/api/v1/users');
      t.equal(users.json.users.length, 2);
    });
  });
}

suite('PostgreSQL event store', openPostgres);
suite('JetStream event store', openJetStream);

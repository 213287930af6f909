import t, { type Test } from 'tap';
import type { EventEnvelope } from '../../shared/contracts/envelope.js';
import type { AppendOptions, AppendResult, EventStore } from '../../shared/eventstore/types.js';
import { InfrastructureError } from '../../shared/platform/errors.js';
import { verifySecret } from '../../shared/platform/secrets.js';
import { openJetStream, openPostgres, startApiHarness, type ApiHarness, type OpenStore } from './api-harness.js';

const KEY_A = 'key-a-0123456789abcdef0123';
const KEY_B = 'key-b-0123456789abcdef0123';
const auth = (key = KEY_A) => ({ authorization: `Bearer ${key}` });

/**
 * Fault injection around a real store: the next append of an event of type `failAfter` is
 * stored, and then the caller is told it failed, as when the connection drops before the
 * acknowledgement arrives or the API process dies right after the append. `hang` instead never
 * answers that append (a request stuck or a process frozen mid-command) until released.
 */
class FaultyStore implements EventStore {
  failAfter: string | undefined;
  hangAfter: string | undefined;
  private released: (() => void)[] = [];
  constructor(readonly inner: EventStore) {}
  get kind() {
    return this.inner.kind;
  }
  async append(stream: string, event: EventEnvelope, options: AppendOptions): Promise<AppendResult> {
    const res = await this.inner.append(stream, event, options);
    if (this.failAfter === event.type) {
      this.failAfter = undefined;
      throw new InfrastructureError('TNX_STORE_UNAVAILABLE', 'connection lost before the append was acknowledged');
    }
    if (this.hangAfter === event.type) {
      this.hangAfter = undefined;
      await new Promise<void>((resolve) => this.released.push(resolve));
      throw new InfrastructureError('TNX_STORE_UNAVAILABLE', 'gave up');
    }
    return res;
  }
  release(): void {
    for (const r of this.released.splice(0)) r();
  }
  readStream: EventStore['readStream'] = (...a) => this.inner.readStream(...a);
  readLastEvent: EventStore['readLastEvent'] = (s) => this.inner.readLastEvent(s);
  readAll: EventStore['readAll'] = (a, l) => this.inner.readAll(a, l);
  headPosition: EventStore['headPosition'] = () => this.inner.headPosition();
  subscribe: EventStore['subscribe'] = (o) => this.inner.subscribe(o);
  close: EventStore['close'] = () => this.inner.close();
}

interface Harness extends ApiHarness<FaultyStore> {
  /** Events of `type` in the whole log. */
  count(type: string): Promise<number>;
}

async function harness(t: Test, open: OpenStore, leaseMs = 60_000): Promise<Harness> {
  const h = await startApiHarness(t, {
    open,
    apiKeys: [KEY_A, KEY_B],
    dbPrefix: 'tnx_idem',
    publicPortRange: { min: 31000, max: 31009 },
    wrap: (inner) => new FaultyStore(inner),
    deps: { idempotency: { leaseMs } },
  });
  // Runs before the harness's own teardown (tap runs teardowns last-in first-out): a hung append
  // must be let go before the app closes.
  t.teardown(() => h.store.release());
  return {
    ...h,
    async count(type) {
      const events = await h.store.readAll(0, 100_000);
      return events.filter((e) => e.type === type).length;
    },
  };
}

const withKey = (key: string, apiKey = KEY_A) => ({ ...auth(apiKey), 'idempotency-key': key });

function suite(name: string, open: OpenStore): void {
  t.test(name, async (t) => {
    t.test('the same key and body answer the original response once more, without a second event', async (t) => {
      const h = await harness(t, open);
      const body = { username: 'john', email: 'john@example.com' };
      const first = await h.send('POST', '/api/v1/users', body, withKey('k-1'));
      t.equal(first.status, 201);
      const again = await h.send('POST', '/api/v1/users', { email: 'john@example.com', username: 'john' }, withKey('k-1'));
      t.equal(again.status, 201, 'same status');
      t.same(again.json, first.json, 'same body (key order in the request does not matter)');
      t.equal(again.headers['location'], first.headers['location']);
      t.equal(again.headers['etag'], first.headers['etag']);
      t.equal(again.headers['idempotent-replayed'], 'true');
      t.equal(first.headers['idempotent-replayed'], undefined);
      t.equal(await h.count('UserCreated'), 1, 'one UserCreated');
      t.equal(await h.count('IdAllocated'), 1, 'one id allocated');

      const other = await h.send('POST', '/api/v1/users', body, withKey('k-2'));
      t.equal(other.status, 409, 'another key is another request (and the username is taken)');
      t.equal(other.json.code, 'TNX_USERNAME_TAKEN');

      const changed = await h.send('POST', '/api/v1/users', { ...body, email: 'other@example.com' }, withKey('k-1'));
      t.equal(changed.status, 422);
      t.equal(changed.json.code, 'TNX_IDEMPOTENCY_KEY_REUSED');
      t.equal(changed.json.field, 'Idempotency-Key');
      const elsewhere = await h.send('POST', '/api/v1/clients', { user_id: first.json.user_id, client_name: 'x' }, withKey('k-1'));
      t.equal(elsewhere.status, 422, 'the same key on another route is a different request');

      const otherApiKey = await h.send('POST', '/api/v1/users', { username: 'jane', email: 'jane@example.com' }, withKey('k-1', KEY_B));
      t.equal(otherApiKey.status, 201, 'keys are scoped per API key');
      t.equal(await h.count('UserCreated'), 2);
    });

    t.test('an error answer is kept too; a malformed key is a 400 naming the header', async (t) => {
      const h = await harness(t, open);
      const missing = await h.send('POST', '/api/v1/clients', { user_id: 100000999, client_name: 'x' }, withKey('k-err'));
      t.equal(missing.status, 422);
      const again = await h.send('POST', '/api/v1/clients', { user_id: 100000999, client_name: 'x' }, withKey('k-err'));
      t.equal(again.status, 422);
      t.equal(again.headers['idempotent-replayed'], 'true');
      for (const bad of ['has space', 'x'.repeat(256), 'nul\u0000byte', 'é-non-ascii']) {
        const res = await h.app.inject({ method: 'POST', url: '/api/v1/users', headers: { ...auth(), 'idempotency-key': bad }, payload: { username: 'a', email: 'a@example.com' } });
        t.equal(res.statusCode, 400, `refused: ${JSON.stringify(bad.slice(0, 20))}`);
        t.equal(JSON.parse(res.payload).field, 'Idempotency-Key');
      }
      t.equal(await h.count('UserCreated'), 0, 'nothing was created by the refused requests');
    });

    t.test('a command whose append landed but whose answer was lost is answered on retry from the stored events', async (t) => {
      const h = await harness(t, open);
      h.store.failAfter = 'UserCreated';
      const body = { username: 'crash', email: 'crash@example.com' };
      const lost = await h.send('POST', '/api/v1/users', body, withKey('k-crash'));
      t.equal(lost.status, 503, 'the caller saw a failure');
      t.equal(await h.count('UserCreated'), 1, 'yet the event is stored');
      const retry = await h.send('POST', '/api/v1/users', body, withKey('k-crash'));
      t.equal(retry.status, 201, 'the retry answers as the first attempt would have', { body: retry.json });
      t.equal(retry.json.username, 'crash');
      t.equal(await h.count('UserCreated'), 1, 'still one UserCreated');
      t.equal(await h.count('IdAllocated'), 1, 'and one id allocated: the retry got the original id back');
      const users = await h.send('GET', '/api/v1/users');
      t.same(
        users.json.users.map((u: { user_id: number }) => u.user_id),
        [retry.json.user_id],
      );

      // A client create: the retry must hand out the auth code whose hash the stored event holds.
      h.store.failAfter = 'ClientRegistered';
      const clientBody = { user_id: retry.json.user_id, client_name: 'laptop' };
      t.equal((await h.send('POST', '/api/v1/clients', clientBody, withKey('k-client'))).status, 503);
      const client = await h.send('POST', '/api/v1/clients', clientBody, withKey('k-client'));
      t.equal(client.status, 201);
      const events = (await h.store.readAll(0, 1000)).filter((e) => e.type === 'ClientRegistered');
      t.equal(events.length, 1, 'one ClientRegistered');
      const hash = (events[0]!.data as { auth_code_hash: string }).auth_code_hash;
      t.ok(await verifySecret(client.json.auth_code, hash), 'the auth code returned on retry is the registered one');
      const replay = await h.send('POST', '/api/v1/clients', clientBody, withKey('k-client'));
      t.equal(replay.json.auth_code, client.json.auth_code, 'and a later replay returns it again');

      const rows = await h.tdb.db.selectFrom('api_idempotency').selectAll().execute();
      const dump = JSON.stringify(rows);
      t.notOk(dump.includes(client.json.auth_code), 'the kept response and secrets are not readable in the database');
      t.notOk(dump.includes('k-client'), 'nor is the key itself');
    });

    t.test('a retry while the first attempt runs is 409; once its lease ends the retry takes over', async (t) => {
      // The lease is generous so that a loaded machine still asks while it runs.
      const h = await harness(t, open, 5_000);
      h.store.hangAfter = 'UserCreated';
      const body = { username: 'stuck', email: 'stuck@example.com' };
      const stuck = h.send('POST', '/api/v1/users', body, withKey('k-stuck'));
      // Wait until the first attempt has appended (and hangs).
      for (let i = 0; i < 100 && (await h.count('UserCreated')) === 0; i++) await new Promise((r) => setTimeout(r, 20));
      const busy = await h.send('POST', '/api/v1/users', body, withKey('k-stuck'));
      t.equal(busy.status, 409);
      t.equal(busy.json.code, 'TNX_IDEMPOTENCY_IN_PROGRESS');
      t.ok(Number(busy.headers['retry-after']) >= 1, 'with Retry-After');
      await new Promise((r) => setTimeout(r, 5_100));
      const taken = await h.send('POST', '/api/v1/users', body, withKey('k-stuck'));
      t.equal(taken.status, 201, 'the lease ran out: the retry re-ran, deduplicated');
      t.equal(await h.count('UserCreated'), 1);
      t.equal(await h.count('IdAllocated'), 1);
      h.store.release();
      t.equal((await stuck).status, 503);
      const after = await h.send('POST', '/api/v1/users', body, withKey('k-stuck'));
      t.equal(after.status, 201, 'the stuck attempt failing late does not spoil the kept answer');
      t.equal(after.json.user_id, taken.json.user_id);
    });

    t.test('If-Match: a stale ETag is 412 and changes nothing; the current one applies', async (t) => {
      const h = await harness(t, open);
      const user = await h.send('POST', '/api/v1/users', { username: 'ifm', email: 'ifm@example.com' });
      const a = await h.send('POST', '/api/v1/clients', { user_id: user.json.user_id, client_name: 'a' });
      const b = await h.send('POST', '/api/v1/clients', { user_id: user.json.user_id, client_name: 'b' });
      const url = `/api/v1/clients/${a.json.client_id}`;
      const tag = (await h.send('GET', url)).headers['etag'] as string;
      t.equal(tag, 'W/"1"');
      const patch = (ifMatch: string) => h.send('PATCH', url, { enabled: false }, { ...auth(), 'if-match': ifMatch });
      const stale = await patch('W/"0"');
      t.equal(stale.status, 412);
      t.equal(stale.json.code, 'TNX_PRECONDITION_FAILED');
      t.equal(stale.json.field, 'If-Match');
      t.equal((await h.send('GET', url)).json.enabled, true, 'nothing changed');
      for (const bad of ['1', 'W/"x"', '"1", "2"']) {
        const res = await patch(bad);
        t.equal(res.status, 400, `malformed If-Match ${bad}`);
        t.equal(res.json.field, 'If-Match');
      }
      const ok = await patch(tag);
      t.equal(ok.status, 200);
      t.equal(ok.json.enabled, false);
      t.equal(ok.headers['etag'], 'W/"2"');
      t.equal((await patch('"1"')).status, 412, 'the old tag is now stale (strong form accepted too)');
      t.equal((await h.send('PATCH', url, { enabled: true }, { ...auth(), 'if-match': '*' })).status, 200, '* matches any version');

      const m = await h.send('POST', '/api/v1/mappings', {
        user_id: user.json.user_id,
        source_client_id: b.json.client_id,
        target_client_id: a.json.client_id,
        protocol: 'tcp',
        target_host: '127.0.0.1',
        target_port: 22,
        local_port: 2222,
      });
      t.equal(m.status, 201);
      const murl = `/api/v1/mappings/${m.json.mapping_id}`;
      const del = (ifMatch: string) => h.send('DELETE', murl, undefined, { ...auth(), 'if-match': ifMatch });
      t.equal((await del('W/"99"')).status, 412);
      t.equal((await h.send('GET', murl)).status, 200, 'still there');
      t.equal((await del(m.headers['etag'] as string)).status, 204);
      t.equal((await h.send('GET', murl)).status, 404);
    });
  });
}

suite('PostgreSQL event store', openPostgres);
suite('JetStream event store', openJetStream);

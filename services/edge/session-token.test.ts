import { createHmac } from 'node:crypto';
import t from 'tap';
import { SESSION_TOKEN_KEY_LABEL, SessionTokenClaims, SessionTokens, deriveSessionTokenKey, generateSessionTokenKey } from './session-token.js';

const SECRET = 'cluster-secret-for-tests-0123456789';
const T0 = Date.UTC(2025, 0, 1);

t.test('the key is derived per cluster secret, never the secret itself', async (t) => {
  const k = deriveSessionTokenKey(SECRET);
  t.equal(k.length, 32);
  t.ok(k.equals(deriveSessionTokenKey(SECRET)), 'deterministic: every node gets the same key');
  t.notOk(k.equals(deriveSessionTokenKey(`${SECRET}x`)), 'another secret, another key');
  t.notOk(k.equals(Buffer.from(SECRET).subarray(0, 32)), 'not the secret');
  // The bridge MACs with the secret itself: a token MAC is never a bridge MAC.
  t.notOk(k.equals(createHmac('sha256', SECRET).update(SESSION_TOKEN_KEY_LABEL).digest()));
  t.notOk(generateSessionTokenKey().equals(generateSessionTokenKey()));
});

t.test('issue carries client id, epoch, iat, exp (ttl), node and a unique jti; verify returns id and epoch', async (t) => {
  let now = T0;
  const tokens = new SessionTokens({ key: deriveSessionTokenKey(SECRET), nodeId: 'node-007', ttlMs: 600_000, now: () => now });
  const a = tokens.issue(600000001, 4);
  const b = tokens.issue(600000001, 4);
  t.not(a, b, 'every token is distinct (jti)');
  const claims = SessionTokenClaims.parse(JSON.parse(Buffer.from(a.split('.')[1]!, 'base64url').toString()));
  t.match(claims, { sub: '600000001', epoch: 4, iat: T0 / 1000, exp: T0 / 1000 + 600, node: 'node-007' });
  t.match(claims.jti, /^[A-Za-z0-9_-]{22}$/);
  t.same(tokens.verify(a), { ok: true, clientId: 600000001, epoch: 4 });
  now = T0 + 600_000 + 31_000;
  t.same(tokens.verify(a), { ok: false, reason: 'expired' });
});

t.test('another key (another cluster) refuses the token', async (t) => {
  const a = new SessionTokens({ key: deriveSessionTokenKey(SECRET), nodeId: 'node-001' });
  const b = new SessionTokens({ key: deriveSessionTokenKey('another-cluster-secret-0123456789'), nodeId: 'node-001' });
  const peer = new SessionTokens({ key: deriveSessionTokenKey(SECRET), nodeId: 'node-002' });
  const token = a.issue(600000001, 0);
  t.same(peer.verify(token), { ok: true, clientId: 600000001, epoch: 0 }, 'any node of the cluster accepts it');
  t.same(b.verify(token), { ok: false, reason: 'bad-signature' });
});

t.test('options are checked: ttl bounds, key length, node id', async (t) => {
  const key = generateSessionTokenKey();
  t.throws(() => new SessionTokens({ key, nodeId: 'node-001', ttlMs: 1_000 }), /ttl/);
  t.throws(() => new SessionTokens({ key, nodeId: 'node-001', ttlMs: 30 * 24 * 3_600_000 }), /ttl/);
  t.throws(() => new SessionTokens({ key, nodeId: 'node-001', ttlMs: 1.5e6 + 0.5 }), /ttl/);
  t.throws(() => new SessionTokens({ key: key.subarray(0, 16), nodeId: 'node-001' }), /32 bytes/);
  t.throws(() => new SessionTokens({ key, nodeId: 'node\u0000001' }));
  t.equal(new SessionTokens({ key, nodeId: 'node-001' }).ttlMs, 3_600_000, 'default 1 h');
});

t.test('claims refuse what no edge issues', async (t) => {
  const base = { sub: '600000001', epoch: 0, iat: 1, exp: 2, node: 'node-001', jti: 'A'.repeat(22) };
  t.ok(SessionTokenClaims.safeParse(base).success);
  for (const bad of [
    { sub: 600000001 },
    { sub: '0600000001' },
    { sub: '-1' },
    { epoch: -1 },
    { epoch: 1.5 },
    { node: 'node-001\u0000' },
    { node: 'node-\ud800' },
    { jti: 'short' },
    { jti: `${'A'.repeat(22)}\u0000` },
    { alg: 'none' },
  ]) {
    t.notOk(SessionTokenClaims.safeParse({ ...base, ...bad }).success, JSON.stringify(bad));
  }
});

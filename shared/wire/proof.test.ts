import t from 'tap';
import { createHmac } from 'node:crypto';
import { ReplayGuard, computeProof, newNonce, verifyProof, type ProofFields } from './proof.js';

const SECRET = 'mapping-secret-0123456789abcdef0123';
const FIELDS: ProofFields = {
  mapping_id: 1001,
  tunnel_id: '9f1c2a',
  role: 'source',
  client_id: 600000001,
  ts: 1_700_000_000_000,
  nonce: '00112233445566778899aabbccddeeff',
};

t.test('the proof is HMAC-SHA256 over the pinned canonical string', async (t) => {
  const canonical = 'tunnox-tunnel-v1|1001|9f1c2a|source|600000001|1700000000000|00112233445566778899aabbccddeeff';
  t.equal(computeProof(SECRET, FIELDS), createHmac('sha256', SECRET).update(canonical).digest('hex'));
  t.match(computeProof(SECRET, FIELDS), /^[0-9a-f]{64}$/);
});

t.test('verify accepts the genuine proof', async (t) => {
  t.ok(verifyProof(SECRET, FIELDS, computeProof(SECRET, FIELDS)));
});

t.test('any tampered field, a wrong secret or a malformed proof is refused', async (t) => {
  const proof = computeProof(SECRET, FIELDS);
  const tampered: ProofFields[] = [
    { ...FIELDS, mapping_id: 1002 },
    { ...FIELDS, tunnel_id: '9f1c2b' },
    { ...FIELDS, role: 'target' },
    { ...FIELDS, client_id: 600000002 },
    { ...FIELDS, ts: FIELDS.ts + 1 },
    { ...FIELDS, nonce: 'f0112233445566778899aabbccddeeff' },
  ];
  for (const f of tampered) t.notOk(verifyProof(SECRET, f, proof));
  t.notOk(verifyProof(SECRET + 'x', FIELDS, proof), 'wrong secret');
  const flipped = (proof[0] === 'a' ? 'b' : 'a') + proof.slice(1);
  t.notOk(verifyProof(SECRET, FIELDS, flipped), 'one nibble flipped');
  t.notOk(verifyProof(SECRET, FIELDS, proof.slice(0, 62)), 'truncated');
  t.notOk(verifyProof(SECRET, FIELDS, ''), 'empty');
  t.notOk(verifyProof(SECRET, FIELDS, 'zz'.repeat(32)), 'not hex');
});

t.test('nonces are 128-bit hex and distinct', async (t) => {
  const a = newNonce();
  t.match(a, /^[0-9a-f]{32}$/);
  t.not(a, newNonce());
});

t.test('ReplayGuard: a nonce is accepted once within the window', async (t) => {
  let now = 1_000_000;
  const guard = new ReplayGuard(60_000, () => now);
  t.equal(guard.check(now, 'n1'), null);
  t.equal(guard.check(now, 'n1'), 'replayed');
  t.equal(guard.check(now + 5, 'n1'), 'replayed', 'a different ts does not launder a nonce');
  t.equal(guard.check(now, 'n2'), null);
  now += 30_000;
  t.equal(guard.check(now - 30_000, 'n1'), 'replayed');
});

t.test('ReplayGuard: stale or future timestamps are refused', async (t) => {
  const now = 1_000_000;
  const guard = new ReplayGuard(60_000, () => now);
  t.equal(guard.check(now - 60_001, 'a'), 'stale');
  t.equal(guard.check(now + 60_001, 'b'), 'stale');
  t.equal(guard.check(now - 60_000, 'c'), null, 'the window edge is inside');
  t.equal(guard.check(now + 60_000, 'd'), null);
  t.equal(guard.check(now - 60_001, 'a'), 'stale', 'a stale attempt is not remembered, and still stale');
});

t.test('ReplayGuard: old nonces are forgotten, and their timestamps stay refused', async (t) => {
  let now = 1_000_000;
  const guard = new ReplayGuard(1_000, () => now);
  t.equal(guard.check(now, 'old'), null);
  now += 5_000;
  t.equal(guard.check(now, 'fresh'), null, 'triggers a sweep');
  t.equal(guard.check(now - 5_000, 'old'), 'stale', 'a replay of the forgotten nonce is stale');
  t.equal(guard.check(now, 'fresh'), 'replayed');
});

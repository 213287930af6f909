import t from 'tap';
import { createHmac } from 'node:crypto';
import { ReplayGuard, computeProof, computeSessionProof, newNonce, newTicket, newTunnelKey, sameHex, verifySessionProof, type ProofFields, type SessionProofFields } from './proof.js';

const SECRET = 'mapping-secret-0123456789abcdef0123';
const FIELDS: ProofFields = {
  mapping_id: 1001,
  tunnel_id: '9f1c2a',
  role: 'source',
  client_id: 600000001,
  ts: 1_700_000_000_000,
  nonce: '00112233445566778899aabbccddeeff',
};

t.test('the legacy proof is HMAC-SHA256 of the mapping secret over the pinned canonical string', async (t) => {
  const canonical = 'tunnox-tunnel-v1|1001|9f1c2a|source|600000001|1700000000000|00112233445566778899aabbccddeeff';
  t.equal(computeProof(SECRET, FIELDS), createHmac('sha256', SECRET).update(canonical).digest('hex'));
  t.match(computeProof(SECRET, FIELDS), /^[0-9a-f]{64}$/);
});

const TUNNEL_KEY = Buffer.from('a5'.repeat(32), 'hex');
const BOUND: SessionProofFields = { ...FIELDS, session_id: '3f1f6a9e-0c0e-4b8e-9a57-2d7d1b1f0e11' };

t.test('the session-bound proof: keyed by the session tunnel key and the mapping secret, over the pinned string', async (t) => {
  const key = createHmac('sha256', TUNNEL_KEY).update(`tunnox-tunnel-key-v2|${SECRET}`).digest();
  const canonical = 'tunnox-tunnel-v2|3f1f6a9e-0c0e-4b8e-9a57-2d7d1b1f0e11|1001|9f1c2a|source|600000001|1700000000000|00112233445566778899aabbccddeeff|';
  t.equal(computeSessionProof(TUNNEL_KEY, SECRET, BOUND), createHmac('sha256', key).update(canonical).digest('hex'));
  t.equal(computeSessionProof(TUNNEL_KEY.toString('hex'), SECRET, BOUND), computeSessionProof(TUNNEL_KEY, SECRET, BOUND), 'the key as issued (hex) or its bytes');
  const ticket = 'ffeeddccbbaa99887766554433221100';
  t.equal(
    computeSessionProof(TUNNEL_KEY, SECRET, { ...BOUND, ticket }),
    createHmac('sha256', key).update(canonical + ticket).digest('hex'),
    'a target half MACs its ticket last',
  );
  t.not(computeSessionProof(TUNNEL_KEY, SECRET, BOUND), computeProof(SECRET, FIELDS), 'never the legacy proof');
});

t.test('verify accepts the genuine session-bound proof', async (t) => {
  t.ok(verifySessionProof(TUNNEL_KEY, SECRET, BOUND, computeSessionProof(TUNNEL_KEY, SECRET, BOUND)));
});

t.test('any tampered field, another session key, a wrong secret or a malformed proof is refused', async (t) => {
  const proof = computeSessionProof(TUNNEL_KEY, SECRET, BOUND);
  const tampered: SessionProofFields[] = [
    { ...BOUND, mapping_id: 1002 },
    { ...BOUND, tunnel_id: '9f1c2b' },
    { ...BOUND, role: 'target' },
    { ...BOUND, client_id: 600000002 },
    { ...BOUND, ts: FIELDS.ts + 1 },
    { ...BOUND, nonce: 'f0112233445566778899aabbccddeeff' },
    { ...BOUND, session_id: '3f1f6a9e-0c0e-4b8e-9a57-2d7d1b1f0e12' },
    { ...BOUND, ticket: '00000000000000000000000000000000' },
  ];
  for (const f of tampered) t.notOk(verifySessionProof(TUNNEL_KEY, SECRET, f, proof), JSON.stringify(f));
  t.notOk(verifySessionProof(Buffer.from('a6'.repeat(32), 'hex'), SECRET, BOUND, proof), 'another session\'s key');
  t.notOk(verifySessionProof(TUNNEL_KEY, SECRET + 'x', BOUND, proof), 'wrong mapping secret');
  t.notOk(verifySessionProof(TUNNEL_KEY, SECRET, BOUND, computeProof(SECRET, FIELDS)), 'the legacy proof of the same fields');
  const flipped = (proof[0] === 'a' ? 'b' : 'a') + proof.slice(1);
  t.notOk(verifySessionProof(TUNNEL_KEY, SECRET, BOUND, flipped), 'one nibble flipped');
  t.notOk(verifySessionProof(TUNNEL_KEY, SECRET, BOUND, proof.slice(0, 62)), 'truncated');
  t.notOk(verifySessionProof(TUNNEL_KEY, SECRET, BOUND, ''), 'empty');
  t.notOk(verifySessionProof(TUNNEL_KEY, SECRET, BOUND, 'zz'.repeat(32)), 'not hex');
  t.notOk(verifySessionProof(TUNNEL_KEY, SECRET, BOUND, proof.slice(0, 62) + 'zz'), 'hex with a bad tail');
});

t.test('sameHex: equal only for the same well-formed hex', async (t) => {
  const ticket = newTicket();
  t.match(ticket, /^[0-9a-f]{32}$/);
  t.ok(sameHex(ticket, ticket));
  t.notOk(sameHex(ticket, newTicket()));
  t.notOk(sameHex(ticket, ticket.slice(0, 30)));
  t.notOk(sameHex(ticket, ''));
  t.notOk(sameHex('', ''), 'nothing is not a ticket');
  t.equal(newTunnelKey().length, 32);
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

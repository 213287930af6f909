import { createHmac, randomBytes } from 'node:crypto';
import t from 'tap';
import { z } from 'zod';
import { MAX_JWT_LENGTH, signJwt, verifyJwt } from './jwt.js';

const key = randomBytes(32);
const NOW = Date.UTC(2025, 0, 1);
const sec = (ms: number) => Math.floor(ms / 1000);
const Claims = z.strictObject({
  sub: z.string().regex(/^[0-9]{1,16}$/),
  node: z.string().regex(/^[A-Za-z0-9._:-]{1,128}$/),
  iat: z.number().int(),
  exp: z.number().int(),
});
const claims = { sub: '600000000', node: 'node-001', iat: sec(NOW), exp: sec(NOW) + 3600 };
const verify = (token: string, k = key, nowMs = NOW) => verifyJwt(token, k, Claims, { nowMs });

const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
/** A token with any header and payload, correctly MACed with `k`: what only a key holder could make. */
function forge(header: unknown, payload: unknown, k = key): string {
  const input = `${b64(header)}.${b64(payload)}`;
  return `${input}.${createHmac('sha256', k).update(input).digest('base64url')}`;
}

t.test('round trip', async (t) => {
  const token = signJwt(key, claims);
  t.match(token, /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
  t.same(JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString()), { alg: 'HS256', typ: 'JWT' });
  t.same(verify(token), { ok: true, claims });
});

t.test('a short key is refused on both sides', async (t) => {
  t.throws(() => signJwt(randomBytes(16), claims));
  t.throws(() => verifyJwt('a.b.c', randomBytes(31), Claims));
});

t.test('tampered header, payload or signature: bad-signature', async (t) => {
  const [h, p, s] = signJwt(key, claims).split('.') as [string, string, string];
  t.same(verify(`${b64({ alg: 'HS256', typ: 'JWT', kid: 'x' })}.${p}.${s}`), { ok: false, reason: 'bad-signature' });
  t.same(verify(`${h}.${b64({ ...claims, sub: '600000001' })}.${s}`), { ok: false, reason: 'bad-signature' });
  t.same(verify(`${h}.${b64({ ...claims, exp: claims.exp + 1 })}.${s}`), { ok: false, reason: 'bad-signature' });
  const sig = Buffer.from(s, 'base64url');
  sig[0]! ^= 1;
  t.same(verify(`${h}.${p}.${sig.toString('base64url')}`), { ok: false, reason: 'bad-signature' });
  t.same(verify(`${h}.${p}.${sig.subarray(0, 31).toString('base64url')}`), { ok: false, reason: 'bad-signature' }, 'short signature');
  t.same(verify(`${h}.${p}.${Buffer.concat([sig, Buffer.from([0])]).toString('base64url')}`), { ok: false, reason: 'bad-signature' }, 'long signature');
});

t.test('wrong key: bad-signature', async (t) => {
  t.same(verify(signJwt(randomBytes(32), claims)), { ok: false, reason: 'bad-signature' });
});

t.test('alg=none and algorithm confusion are refused', async (t) => {
  const p = b64(claims);
  // Unsigned: an empty signature segment is not even a well-formed JWS for us.
  t.same(verify(`${b64({ alg: 'none', typ: 'JWT' })}.${p}.`), { ok: false, reason: 'malformed' });
  t.same(verify(`${b64({ alg: 'none' })}.${p}.${b64('x')}`), { ok: false, reason: 'bad-signature' });
  // HS512 / RS256 headers with a MAC an attacker cannot make: refused at the MAC.
  t.same(verify(`${b64({ alg: 'HS512', typ: 'JWT' })}.${p}.${randomBytes(64).toString('base64url')}`), { ok: false, reason: 'bad-signature' });
  // Even correctly MACed with our key, a header that is not exactly HS256 is refused.
  for (const header of [{ alg: 'none' }, { alg: 'RS256', typ: 'JWT' }, { alg: 'hs256' }, { alg: 'HS256', crit: ['exp'] }, { typ: 'JWT' }, [], 'HS256', null]) {
    t.same(verify(forge(header, claims)), { ok: false, reason: 'unsupported-header' }, JSON.stringify(header));
  }
  t.same(verify(forge({ alg: 'HS256' }, claims)), { ok: true, claims }, 'typ is optional');
});

t.test('expiry and issue time, with the tolerance', async (t) => {
  const token = signJwt(key, claims);
  t.same(verify(token, key, claims.exp * 1000 + 31_000), { ok: false, reason: 'expired' });
  t.same(verify(token, key, claims.exp * 1000 + 29_000).ok, true, 'within 30 s of clock difference');
  t.same(verifyJwt(token, key, Claims, { nowMs: claims.exp * 1000, clockToleranceMs: 0 }), { ok: false, reason: 'expired' }, 'exp is exclusive');
  t.same(verify(token, key, NOW - 31_000), { ok: false, reason: 'not-yet-valid' });
  t.same(verify(token, key, NOW - 29_000).ok, true);
});

t.test('malformed encodings', async (t) => {
  const token = signJwt(key, claims);
  const [h, p, s] = token.split('.') as [string, string, string];
  const cases: Record<string, string> = {
    empty: '',
    'two parts': `${h}.${p}`,
    'four parts': `${token}.${s}`,
    'empty payload': `${h}..${s}`,
    padding: `${h}.${p}.${s}=`,
    'standard base64 alphabet': `${h}.${p}.${s.slice(0, -2)}+/`,
    'whitespace': `${h}.${p} .${s}`,
    'non-ascii': `${h}.${p}.${s}\u00e9`,
    // One base64url character too many: decodes to the same bytes, but is another spelling.
    'non-canonical trailing bits': `${h}.${p}.${s.slice(0, -1)}${s.endsWith('A') ? 'B' : 'A'}`,
  };
  for (const [name, bad] of Object.entries(cases)) {
    const v = verify(bad);
    t.equal(v.ok, false, name);
    if (!v.ok) t.ok(v.reason === 'malformed' || v.reason === 'bad-signature', `${name}: ${v.reason}`);
  }
  t.same(verify(`${h}.${p}.${s}=`), { ok: false, reason: 'malformed' });
  // An HS256 MAC is 32 bytes = 43 base64url characters; the last carries 2 spare bits, so
  // changing them alone must not give a second valid spelling.
  const last = s[s.length - 1]!;
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  const group = alphabet.indexOf(last) & ~3;
  for (let i = 0; i < 4; i++) {
    const c = alphabet[group + i]!;
    if (c === last) continue;
    t.same(verify(`${h}.${p}.${s.slice(0, -1)}${c}`), { ok: false, reason: 'malformed' }, `trailing bits via ${c}`);
  }
  t.same(verify(forge({ alg: 'HS256' }, '{not json')), { ok: false, reason: 'invalid-claims' }, 'authentic but not JSON');
  t.same(verify(forge({ alg: 'HS256' }, [1, 2])), { ok: false, reason: 'invalid-claims' });
  t.same(verify(forge({ alg: 'HS256' }, { ...claims, extra: 1 })), { ok: false, reason: 'invalid-claims' });
  t.same(verify(forge({ alg: 'HS256' }, { ...claims, exp: String(claims.exp) })), { ok: false, reason: 'invalid-claims' });
});

t.test('huge input is refused before any work', async (t) => {
  t.same(verify('a'.repeat(MAX_JWT_LENGTH + 1)), { ok: false, reason: 'malformed' });
  const huge = forge({ alg: 'HS256' }, { ...claims, node: 'n'.repeat(4 * 1024 * 1024) });
  t.same(verify(huge), { ok: false, reason: 'malformed' });
  t.same(verify('.'.repeat(1000)), { ok: false, reason: 'malformed' });
});

t.test('NUL and lone surrogates in fields never verify as claims', async (t) => {
  for (const node of ['node\u0000001', 'node-\ud800', '\udc00', 'node-001\u0000']) {
    // Signed by a key holder (JSON.stringify escapes a lone surrogate as \\udXXX): still refused.
    t.same(verify(forge({ alg: 'HS256' }, { ...claims, node })), { ok: false, reason: 'invalid-claims' }, JSON.stringify(node));
    t.same(verify(signJwt(key, { ...claims, node })), { ok: false, reason: 'invalid-claims' });
  }
  t.same(verify(forge({ alg: 'HS256', typ: 'JWT\u0000' }, claims)), { ok: false, reason: 'unsupported-header' });
  // Raw invalid UTF-8 in the payload bytes.
  const input = `${b64({ alg: 'HS256' })}.${Buffer.from([0x7b, 0xff, 0xfe, 0x7d]).toString('base64url')}`;
  const bad = `${input}.${createHmac('sha256', key).update(input).digest('base64url')}`;
  t.same(verify(bad), { ok: false, reason: 'invalid-claims' });
});

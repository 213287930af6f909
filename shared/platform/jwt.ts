import { createHmac, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';

/**
 * A deliberately small JWT (RFC 7519) codec: compact JWS with HS256 only (RFC 8725's advice: one
 * algorithm, fixed by the verifier, never chosen by the token). Nothing here trusts the header:
 * the MAC over `header.payload` is checked first, in constant time, with the verifier's key, and
 * only an authenticated header is parsed, and then refused unless it says exactly HS256. So
 * `alg: none`, RS256/HS256 confusion and any other header trick fail at the MAC or right after.
 */

/** A compact JWS a caller may hand us; anything longer is refused before any work. */
export const MAX_JWT_LENGTH = 2048;
/** HS256 keys shorter than the hash output are refused (RFC 7518 §3.2). */
export const MIN_JWT_KEY_BYTES = 32;

const HEADER = { alg: 'HS256', typ: 'JWT' } as const;
const ENCODED_HEADER = b64url(JSON.stringify(HEADER));
const SEGMENT = /^[A-Za-z0-9_-]+$/;
const HeaderSchema = z.strictObject({ alg: z.literal('HS256'), typ: z.literal('JWT').optional() });

/** Registered claims the codec itself checks; `exp` and `iat` are NumericDates (seconds). */
export interface JwtTimes {
  iat: number;
  exp: number;
}

export type JwtFailure =
  /** Not a compact JWS we could ever have issued: wrong shape, size, or encoding. */
  | 'malformed'
  /** The MAC does not match: another key, or a changed header, payload or signature. */
  | 'bad-signature'
  /** Authentic, but the header names something other than HS256 (should never happen). */
  | 'unsupported-header'
  /** Authentic, but the payload is not the claims the caller expects. */
  | 'invalid-claims'
  | 'expired'
  /** Issued in the future by more than the tolerance. */
  | 'not-yet-valid';

export type JwtVerdict<T> = { ok: true; claims: T } | { ok: false; reason: JwtFailure };

function b64url(s: string | Buffer): string {
  return Buffer.from(s).toString('base64url');
}

/**
 * Decodes one base64url segment, refusing anything that would not re-encode to itself (padding,
 * stray characters Node would skip, non-zero trailing bits): every token has exactly one spelling.
 */
function decodeSegment(s: string): Buffer | undefined {
  if (!SEGMENT.test(s)) return undefined;
  const bytes = Buffer.from(s, 'base64url');
  return bytes.toString('base64url') === s ? bytes : undefined;
}

/** JSON of a segment, or undefined (which no schema here accepts). */
function parseJson(bytes: Buffer): unknown {
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch {
    return undefined;
  }
}

function mac(key: Buffer, signingInput: string): Buffer {
  return createHmac('sha256', key).update(signingInput, 'ascii').digest();
}

function checkKey(key: Buffer): void {
  if (key.length < MIN_JWT_KEY_BYTES) throw new Error(`HS256 key must be at least ${MIN_JWT_KEY_BYTES} bytes`);
}

/** Signs `claims` (a JSON object carrying at least `iat` and `exp`) as an HS256 compact JWS. */
export function signJwt(key: Buffer, claims: JwtTimes & Record<string, unknown>): string {
  checkKey(key);
  const signingInput = `${ENCODED_HEADER}.${b64url(JSON.stringify(claims))}`;
  return `${signingInput}.${mac(key, signingInput).toString('base64url')}`;
}

export interface VerifyJwtOptions {
  /** Default Date.now(). */
  nowMs?: number;
  /** Clock difference tolerated between the issuing and the verifying node; default 30 s. */
  clockToleranceMs?: number;
}

/**
 * Verifies an HS256 compact JWS with `key` and parses its payload with `schema` (which must
 * require numeric `iat` and `exp`). Never throws on hostile input; every refusal names its reason.
 */
export function verifyJwt<T extends JwtTimes>(token: string, key: Buffer, schema: z.ZodType<T>, opts: VerifyJwtOptions = {}): JwtVerdict<T> {
  checkKey(key);
  const fail = (reason: JwtFailure): JwtVerdict<T> => ({ ok: false, reason });
  if (typeof token !== 'string' || token.length > MAX_JWT_LENGTH) return fail('malformed');
  const parts = token.split('.');
  if (parts.length !== 3) return fail('malformed');
  const [h, p, s] = parts as [string, string, string];
  const header = decodeSegment(h);
  const payload = decodeSegment(p);
  const signature = decodeSegment(s);
  if (!header || !payload || !signature) return fail('malformed');
  const expected = mac(key, `${h}.${p}`);
  // Same length first (timingSafeEqual demands it); the length of a MAC is no secret.
  if (signature.length !== expected.length || !timingSafeEqual(signature, expected)) return fail('bad-signature');
  if (!HeaderSchema.safeParse(parseJson(header)).success) return fail('unsupported-header');
  const parsed = schema.safeParse(parseJson(payload));
  if (!parsed.success) return fail('invalid-claims');
  const claims = parsed.data;
  const now = opts.nowMs ?? Date.now();
  const tolerance = opts.clockToleranceMs ?? 30_000;
  if (claims.exp * 1000 <= now - tolerance) return fail('expired');
  if (claims.iat * 1000 > now + tolerance) return fail('not-yet-valid');
  return { ok: true, claims };
}

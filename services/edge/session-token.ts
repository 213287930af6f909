import { hkdfSync, randomBytes } from 'node:crypto';
import { z } from 'zod';
import { signJwt, verifyJwt, type JwtFailure } from '../../shared/platform/jwt.js';

/**
 * Session tokens: what an agent presents on reconnect instead of its auth code, so a reconnect
 * storm after an edge dies costs an HMAC per agent instead of ~50 ms of scrypt. An HS256 JWT
 * signed with a key every edge of the cluster shares, carrying the client id, the client's auth
 * epoch when it was issued (revocation: any later disable, rotation, kick or delete changes the
 * epoch in every edge's view), a short expiry, the issuing node and a unique id. Verified with
 * the key and the edge's view alone: no scrypt, no database.
 */

/** HKDF info for the token key: the cluster secret is never used as the MAC key itself. */
export const SESSION_TOKEN_KEY_LABEL = 'tunnox session token v1';
export const DEFAULT_SESSION_TOKEN_TTL_MS = 3_600_000;
const MIN_TTL_MS = 10_000;
const MAX_TTL_MS = 7 * 24 * 3_600_000;

/** The token key for a cluster secret (`--cluster-secret`), the same on every node. */
export function deriveSessionTokenKey(clusterSecret: string | Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', clusterSecret, Buffer.alloc(0), SESSION_TOKEN_KEY_LABEL, 32));
}

/** A random key, for a server that shares tokens with no other node (kept in its data dir). */
export function generateSessionTokenKey(): Buffer {
  return randomBytes(32);
}

const NodeId = z.string().regex(/^[A-Za-z0-9._:-]{1,128}$/);
export const SessionTokenClaims = z.strictObject({
  /** The client id, as a decimal string (JWT `sub` is a string). */
  sub: z.string().regex(/^[1-9][0-9]{0,15}$/),
  epoch: z.number().int().nonnegative(),
  iat: z.number().int().positive(),
  exp: z.number().int().positive(),
  /** The node that issued it (diagnostics; any node accepts it). */
  node: NodeId,
  jti: z.string().regex(/^[A-Za-z0-9_-]{16,64}$/),
});
export type SessionTokenClaims = z.infer<typeof SessionTokenClaims>;

export interface SessionTokenOptions {
  key: Buffer;
  /** Lifetime of an issued token; default 1 h. Sessions get a fresh one every half of it. */
  ttlMs?: number;
}

export type TokenVerdict = { ok: true; clientId: number; epoch: number } | { ok: false; reason: JwtFailure };

export class SessionTokens {
  readonly ttlMs: number;
  private readonly key: Buffer;
  private readonly nodeId: string;
  private readonly now: () => number;

  constructor(o: SessionTokenOptions & { nodeId: string; now?: () => number }) {
    this.ttlMs = o.ttlMs ?? DEFAULT_SESSION_TOKEN_TTL_MS;
    if (!Number.isInteger(this.ttlMs) || this.ttlMs < MIN_TTL_MS || this.ttlMs > MAX_TTL_MS) {
      throw new Error(`session token ttl must be an integer between ${MIN_TTL_MS} and ${MAX_TTL_MS} ms`);
    }
    // signJwt and verifyJwt refuse short keys too; failing here names the option.
    if (o.key.length < 32) throw new Error('session token key must be at least 32 bytes');
    this.key = Buffer.from(o.key);
    this.nodeId = NodeId.parse(o.nodeId);
    this.now = o.now ?? Date.now;
  }

  issue(clientId: number, epoch: number): string {
    const iat = Math.floor(this.now() / 1000);
    const claims: SessionTokenClaims = {
      sub: String(clientId),
      epoch,
      iat,
      exp: iat + Math.ceil(this.ttlMs / 1000),
      node: this.nodeId,
      jti: randomBytes(16).toString('base64url'),
    };
    return signJwt(this.key, claims);
  }

  /** Signature, shape and expiry; the caller checks the epoch against its view. */
  verify(token: string): TokenVerdict {
    const v = verifyJwt(token, this.key, SessionTokenClaims, { nowMs: this.now() });
    if (!v.ok) return v;
    return { ok: true, clientId: Number(v.claims.sub), epoch: v.claims.epoch };
  }
}

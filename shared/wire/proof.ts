import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Tunnel-open proofs: the agent proves, without sending either, that it holds the mapping's secret
 * and the tunnel key of the live control session the tunnel belongs to.
 *
 * Session-bound (what edges accept, AgentFeature.TunnelKey):
 *   key   = HMAC-SHA256(session tunnel key, "tunnox-tunnel-key-v2|" + mapping secret)
 *   proof = HMAC-SHA256(key, "tunnox-tunnel-v2|session|mapping|tunnel|role|client|ts|nonce|ticket")
 * `ticket` is the one-time ticket of the `tunnel.open` a target half answers, empty for a source.
 * Every field but the tunnel id has a fixed, `|`-free format, and the string ends with such fields,
 * so no two field tuples give the same string.
 *
 * Legacy (older agents and edges): proof = HMAC-SHA256(mapping secret,
 * "tunnox-tunnel-v1|mapping|tunnel|role|client|ts|nonce"). An agent sends it only to an edge that
 * issued no tunnel key (a release before session-bound tunnels); edges of this release refuse it.
 *
 * Replays are refused by the edge's ReplayGuard (nonce seen within the timestamp window).
 */
export interface ProofFields {
  mapping_id: number;
  tunnel_id: string;
  role: 'source' | 'target';
  client_id: number;
  ts: number;
  nonce: string;
}

export interface SessionProofFields extends ProofFields {
  session_id: string;
  ticket?: string | undefined;
}

/** The legacy proof (mapping secret alone). */
export function computeProof(secret: string, f: ProofFields): string {
  const msg = `tunnox-tunnel-v1|${f.mapping_id}|${f.tunnel_id}|${f.role}|${f.client_id}|${f.ts}|${f.nonce}`;
  return createHmac('sha256', secret).update(msg).digest('hex');
}

/** A session's tunnel key: 32 random bytes, issued by the edge at the handshake. */
export function newTunnelKey(): Buffer {
  return randomBytes(32);
}

/** A `tunnel.open`'s one-time ticket: 128 random bits, hex. */
export function newTicket(): string {
  return randomBytes(16).toString('hex');
}

/** The session-bound proof; `tunnelKey` as issued (HandshakeResp.tunnel_key, hex) or its bytes. */
export function computeSessionProof(tunnelKey: Buffer | string, mappingSecret: string, f: SessionProofFields): string {
  const keyBytes = typeof tunnelKey === 'string' ? Buffer.from(tunnelKey, 'hex') : tunnelKey;
  const key = createHmac('sha256', keyBytes).update(`tunnox-tunnel-key-v2|${mappingSecret}`).digest();
  const msg = `tunnox-tunnel-v2|${f.session_id}|${f.mapping_id}|${f.tunnel_id}|${f.role}|${f.client_id}|${f.ts}|${f.nonce}|${f.ticket ?? ''}`;
  return createHmac('sha256', key).update(msg).digest('hex');
}

/** Constant-time check of a presented session-bound proof. */
export function verifySessionProof(tunnelKey: Buffer, mappingSecret: string, f: SessionProofFields, presented: string): boolean {
  return sameHex(computeSessionProof(tunnelKey, mappingSecret, f), presented);
}

/** Constant-time equality of two hex strings (a ticket, a proof); false for malformed input. */
export function sameHex(expected: string, presented: string): boolean {
  const a = Buffer.from(expected, 'hex');
  const b = Buffer.from(presented, 'hex');
  return a.length > 0 && a.length === b.length && b.length * 2 === presented.length && timingSafeEqual(a, b);
}

export function newNonce(): string {
  return randomBytes(16).toString('hex');
}

/**
 * Refuses a (ts, nonce) pair that is outside ±windowMs of now or was already seen. Memory is
 * bounded: nonces older than the window are forgotten, since their timestamps would be refused.
 */
export class ReplayGuard {
  private seen = new Map<string, number>();
  private lastSweep = 0;

  constructor(private readonly windowMs = 60_000, private readonly now: () => number = Date.now) {}

  /** Returns null if accepted (and remembers it), otherwise the reason it was refused. */
  check(ts: number, nonce: string): 'stale' | 'replayed' | null {
    const now = this.now();
    if (Math.abs(now - ts) > this.windowMs) return 'stale';
    if (now - this.lastSweep > this.windowMs) this.sweep(now);
    if (this.seen.has(nonce)) return 'replayed';
    this.seen.set(nonce, ts);
    return null;
  }

  private sweep(now: number): void {
    this.lastSweep = now;
    for (const [nonce, ts] of this.seen) if (now - ts > this.windowMs) this.seen.delete(nonce);
  }
}

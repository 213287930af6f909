import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Tunnel-open proof: the agent proves it holds the mapping's secret without sending it.
 * proof = HMAC-SHA256(secret, "tunnox-tunnel-v1|mapping|tunnel|role|client|ts|nonce").
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

export function computeProof(secret: string, f: ProofFields): string {
  const msg = `tunnox-tunnel-v1|${f.mapping_id}|${f.tunnel_id}|${f.role}|${f.client_id}|${f.ts}|${f.nonce}`;
  return createHmac('sha256', secret).update(msg).digest('hex');
}

export function newNonce(): string {
  return randomBytes(16).toString('hex');
}

/** Constant-time comparison of a presented proof against the expected one. */
export function verifyProof(secret: string, f: ProofFields, presented: string): boolean {
  const expected = Buffer.from(computeProof(secret, f), 'hex');
  const got = Buffer.from(presented, 'hex');
  return got.length === expected.length && timingSafeEqual(got, expected);
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

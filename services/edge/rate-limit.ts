/**
 * Token bucket per key (remote IP). Anonymous registration is the one thing an unauthenticated
 * peer can make the edge write to the event log, so it is rationed. Memory is bounded: idle,
 * full buckets are forgotten, and the map is capped (oldest dropped first).
 */
export class KeyedRateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly perMinute: number,
    private readonly burst: number = perMinute,
    private readonly maxKeys = 100_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** True when `key` has no token left right now (nothing is taken). */
  exhausted(key: string): boolean {
    if (this.perMinute <= 0) return true;
    const b = this.buckets.get(key);
    return b !== undefined && this.tokensNow(b, this.now()) < 1;
  }

  private tokensNow(b: { tokens: number; at: number }, now: number): number {
    return Math.min(this.burst, b.tokens + ((now - b.at) * this.perMinute) / 60_000);
  }

  /** Takes one token for `key`; false when the key is over its rate. */
  take(key: string): boolean {
    if (this.perMinute <= 0) return false;
    const now = this.now();
    const b = this.buckets.get(key) ?? { tokens: this.burst, at: now };
    b.tokens = this.tokensNow(b, now);
    b.at = now;
    this.buckets.delete(key);
    if (b.tokens < 1) {
      this.buckets.set(key, b);
      return false;
    }
    b.tokens -= 1;
    this.buckets.set(key, b);
    if (this.buckets.size > this.maxKeys) this.buckets.delete(this.buckets.keys().next().value!);
    return true;
  }
}

/** Bounds how many expensive operations (scrypt checks) run at once; excess callers are refused. */
export class ConcurrencyCap {
  private running = 0;
  constructor(private readonly max: number) {}

  tryAcquire(): boolean {
    if (this.running >= this.max) return false;
    this.running++;
    return true;
  }

  release(): void {
    this.running = Math.max(0, this.running - 1);
  }
}

import type { Logger } from '../../shared/platform/logger.js';

/**
 * Token bucket per key (remote IP). Anonymous registration is the one thing an unauthenticated
 * peer can make the edge write to the event log, so it is rationed. Memory is bounded: buckets
 * that have refilled are forgotten as new keys arrive (forgetIdle), and the map is capped (least
 * recently used dropped first).
 */
export class KeyedRateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly perMinute: number,
    private readonly burst: number = perMinute,
    private readonly maxKeys = 100_000,
    private readonly now: () => number = Date.now,
  ) {}

  private tokensNow(b: { tokens: number; at: number }, now: number): number {
    return Math.min(this.burst, b.tokens + ((now - b.at) * this.perMinute) / 60_000);
  }

  /** Gives back a token taken for an attempt that turned out not to count (capped at the burst). */
  refund(key: string): void {
    const b = this.buckets.get(key);
    if (!b) return;
    const now = this.now();
    b.tokens = Math.min(this.burst, this.tokensNow(b, now) + 1);
    b.at = now;
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
    this.forgetIdle(now);
    return true;
  }

  /** Keys currently remembered (for tests and metrics). */
  get size(): number {
    return this.buckets.size;
  }

  /**
   * A full bucket behaves exactly like no bucket, so it can be dropped without changing any answer.
   * The map is in least-recently-taken order: each take looks at the two oldest keys and drops
   * those that have refilled, so idle keys are forgotten at twice the rate new ones arrive.
   */
  private forgetIdle(now: number): void {
    for (let i = 0; i < 2; i++) {
      const oldest = this.buckets.entries().next().value;
      if (!oldest || this.tokensNow(oldest[1], now) < this.burst) return;
      this.buckets.delete(oldest[0]);
    }
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

/** What a login attempt admitted by LoginRationer reports back once its credential check is over. */
export interface LoginTicket {
  /** Right code: every token reserved for this attempt is given back. */
  succeeded(): void;
  /** Wrong code or unknown id: the reserved tokens stay spent. */
  failed(): void;
  /** No verdict (edge busy, internal error, client not projected yet): given back. */
  abandoned(): void;
}

export interface LoginRationerOptions {
  failuresPerMinutePerAddress: number;
  failuresPerMinutePerClient: number;
  /** How long an address stays known-good for a client after a successful login; default 24 h. */
  knownAddressTtlMs?: number;
  /** Known-good addresses remembered per client (most recent kept); default 4. */
  knownAddressesPerClient?: number;
  /** Clients whose known-good addresses are remembered (oldest forgotten first); default 100 000. */
  maxKnownClients?: number;
  now?: () => number;
}

/**
 * Rations failed logins by remote address AND by claimed client id (sshd/fail2ban ration by
 * address, account lockout by account; either alone fails: one address is shared by a NAT and an
 * attacker, and an attacker has many addresses). The rule, also in docs/protocol.md:
 *
 * 1. Every attempt reserves its tokens before the (slow) scrypt check, so concurrent attempts
 *    cannot overshoot a budget; a success, or an attempt that reached no verdict, refunds them.
 * 2. Address and client id both within budget: the attempt is charged to both.
 * 3. Address over budget, client id within budget: the id is not under attack, so the attempt may
 *    proceed, charged to the id alone. An agent sharing an attacker's address still logs in.
 * 4. Client id over budget: refused, except from an address where this id logged in successfully
 *    in the last 24 h (and that address is within its own budget). Attackers elsewhere can keep
 *    an id's budget spent forever, but they cannot lock out the agent at its usual address.
 * 5. Both over budget: refused.
 *
 * Accepted cost of rule 3: one address spraying many ids gets each id's budget. Auth codes are
 * 192-bit random tokens, so guessing is hopeless anyway; the budgets bound the scrypt work an
 * attacker can cause per target, and the concurrency cap bounds it overall.
 */
export class LoginRationer {
  private readonly byAddress: KeyedRateLimiter;
  private readonly byClient: KeyedRateLimiter;
  /** client id → (address → last successful login time), most recent last. */
  private readonly known = new Map<number, Map<string, number>>();
  private readonly now: () => number;

  constructor(private readonly o: LoginRationerOptions) {
    this.now = o.now ?? Date.now;
    this.byAddress = new KeyedRateLimiter(o.failuresPerMinutePerAddress, o.failuresPerMinutePerAddress, 100_000, this.now);
    this.byClient = new KeyedRateLimiter(o.failuresPerMinutePerClient, o.failuresPerMinutePerClient, 100_000, this.now);
  }

  /** Reserves budget for one attempt; undefined when the attempt must be refused now. */
  admit(address: string, clientId: number): LoginTicket | undefined {
    const clientKey = String(clientId);
    const addressOk = this.byAddress.take(address);
    const clientOk = this.byClient.take(clientKey);
    let charged: (() => void)[];
    if (clientOk) {
      charged = addressOk ? [() => this.byAddress.refund(address), () => this.byClient.refund(clientKey)] : [() => this.byClient.refund(clientKey)];
    } else if (addressOk && this.isKnown(clientId, address)) {
      charged = [() => this.byAddress.refund(address)];
    } else {
      if (addressOk) this.byAddress.refund(address);
      return undefined;
    }
    let settled = false;
    const settle = (refund: boolean): void => {
      if (settled) return;
      settled = true;
      if (refund) for (const give of charged) give();
    };
    return {
      succeeded: () => {
        if (!settled) this.remember(clientId, address);
        settle(true);
      },
      failed: () => settle(false),
      abandoned: () => settle(true),
    };
  }

  private isKnown(clientId: number, address: string): boolean {
    const at = this.known.get(clientId)?.get(address);
    return at !== undefined && this.now() - at <= (this.o.knownAddressTtlMs ?? 24 * 3_600_000);
  }

  private remember(clientId: number, address: string): void {
    const addresses = this.known.get(clientId) ?? new Map<string, number>();
    this.known.delete(clientId);
    addresses.delete(address);
    addresses.set(address, this.now());
    if (addresses.size > (this.o.knownAddressesPerClient ?? 4)) addresses.delete(addresses.keys().next().value!);
    this.known.set(clientId, addresses);
    if (this.known.size > (this.o.maxKnownClients ?? 100_000)) this.known.delete(this.known.keys().next().value!);
  }
}

export interface LogRationerOptions {
  /** Lines logged per reason per interval before further ones are only counted; default 20. */
  perInterval?: number;
  /** Default 10 s. */
  intervalMs?: number;
}

/**
 * Keeps hostile traffic from flooding the log: each reason (e.g. "bad first frame") gets
 * `perInterval` warning lines per interval; the rest are counted and summed up in one line,
 * "suppressed K similar warnings", when the interval ends.
 */
export class LogRationer {
  private readonly counts = new Map<string, number>();
  private readonly timer: NodeJS.Timeout;
  private readonly perInterval: number;
  private readonly intervalMs: number;

  constructor(private readonly log: Logger, o: LogRationerOptions = {}) {
    this.perInterval = o.perInterval ?? 20;
    this.intervalMs = o.intervalMs ?? 10_000;
    this.timer = setInterval(() => this.flush(), this.intervalMs);
    this.timer.unref();
  }

  warn(reason: string, fields: Record<string, unknown>, msg: string): void {
    const n = (this.counts.get(reason) ?? 0) + 1;
    this.counts.set(reason, n);
    if (n <= this.perInterval) this.log.warn(fields, msg);
  }

  /** Ends the interval: one summary line per reason that went over, and the counts start again. */
  flush(): void {
    for (const [reason, n] of this.counts) {
      const suppressed = n - this.perInterval;
      if (suppressed > 0) this.log.warn({ reason, suppressed, intervalMs: this.intervalMs }, `suppressed ${suppressed} similar warnings: ${reason}`);
    }
    this.counts.clear();
  }

  stop(): void {
    clearInterval(this.timer);
    this.flush();
  }
}

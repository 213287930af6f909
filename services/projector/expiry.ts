import { sql } from 'kysely';
import type { Db } from '../../shared/db/connect.js';
import { expireAnonymousClient } from '../../shared/domain/index.js';
import type { EventStore } from '../../shared/eventstore/types.js';
import type { Logger } from '../../shared/platform/logger.js';

/** `--anonymous-ttl` default: anonymous clients unused for 30 days expire. */
export const DEFAULT_ANONYMOUS_TTL_MS = 30 * 24 * 3_600_000;

export interface AnonymousExpiryOptions {
  db: Db;
  store: EventStore;
  logger: Logger;
  /** Inactivity after which an anonymous client expires; whole seconds are used. */
  ttlMs: number;
  /** Between sweeps; default ttl / 4, bounded to [1 s, 1 h]. */
  intervalMs?: number;
  /** Candidates looked at per sweep (the oldest first); default 500. */
  batch?: number;
  /** Who the expiries are attributed to in the event log. */
  actorId: string;
}

export interface AnonymousExpiry {
  /** One sweep now (tests, and the timer); resolves with how many clients it expired. */
  sweep(): Promise<number>;
  stop(): Promise<void>;
}

/**
 * The process manager behind `--anonymous-ttl` (issue 7: anonymous clients must not make rows and
 * events grow for ever). Every interval it takes from the read model the anonymous clients that
 * are offline and were last seen (or, never seen, registered) longer than the TTL ago, and issues
 * ExpireClient for each through expireAnonymousClient, which re-checks the inactivity against the
 * event log itself and records ClientExpired with the event that began the inactivity as its
 * causation. The read model only nominates candidates; a stale row costs a look, never a wrong
 * expiry. Several sweepers (one per projector or server process) are safe together: the second
 * finds the client gone.
 */
export function startAnonymousExpiry(o: AnonymousExpiryOptions): AnonymousExpiry {
  const log = o.logger.child({ component: 'anonymous-expiry' });
  const ttlSeconds = Math.max(1, Math.floor(o.ttlMs / 1000));
  const batch = o.batch ?? 500;
  let running: Promise<number> | undefined;
  let stopped = false;

  const sweepOnce = async (): Promise<number> => {
    const cutoff = new Date(Date.now() - ttlSeconds * 1000);
    const candidates = await o.db
      .selectFrom('clients')
      .select(['client_id'])
      .where('client_type', '=', 'anonymous')
      .where('deleted_at', 'is', null)
      .where('status', '=', 'offline')
      .where(sql<Date>`coalesce(last_seen_at, created_at)`, '<', cutoff)
      .orderBy(sql`coalesce(last_seen_at, created_at)`)
      .limit(batch)
      .execute();
    let expired = 0;
    for (const c of candidates) {
      if (stopped) break;
      try {
        const res = await expireAnonymousClient(
          o.store,
          { clientId: c.client_id, ttlSeconds },
          { actor: { kind: 'system', id: o.actorId }, correlationId: `anonymous-expiry.${c.client_id}` },
        );
        if (!res.expired) {
          log.debug({ clientId: c.client_id, reason: res.reason }, 'anonymous client not expired');
          continue;
        }
        expired++;
        log.info({ clientId: c.client_id, inactiveSince: res.inactiveSince, ttlSeconds, causationId: res.causationId }, 'anonymous client expired');
      } catch (err) {
        log.warn({ err, clientId: c.client_id }, 'could not expire an anonymous client; retrying next sweep');
      }
    }
    return expired;
  };

  const sweep = (): Promise<number> => {
    running ??= sweepOnce().finally(() => (running = undefined));
    return running;
  };
  const intervalMs = o.intervalMs ?? Math.min(3_600_000, Math.max(1_000, Math.floor(o.ttlMs / 4)));
  const timer = setInterval(() => {
    if (stopped) return;
    sweep().catch((err: unknown) => log.warn({ err }, 'anonymous expiry sweep failed; retrying next interval'));
  }, intervalMs);
  timer.unref();
  log.info({ ttlSeconds, intervalMs }, 'anonymous clients expire after this long unused');
  return {
    sweep,
    async stop() {
      stopped = true;
      clearInterval(timer);
      await running?.catch(() => undefined);
    },
  };
}

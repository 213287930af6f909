import type { NodeDirectory } from '../../shared/cluster/node-registry.js';
import type { Db } from '../../shared/db/connect.js';
import type { EventStore } from '../../shared/eventstore/types.js';
import type { Logger } from '../../shared/platform/logger.js';
import type { IdempotencyOptions } from './idempotency.js';
import type { QuotaTier } from '../../shared/domain/account/account.decider.js';

/** Everything the Management API needs; the caller (main/server) owns and closes all of it. */
export interface ApiDeps {
  store: EventStore;
  db: Db;
  /** Resolves true once the read models include `position`, false after timeoutMs. */
  waiter: { waitFor(position: number, timeoutMs: number): Promise<boolean> };
  logger: Logger;
  /**
   * Accepted `Authorization: Bearer` keys (the server's admin key). Keys made with `tunnox ctl
   * apikeys create` are found in the event log (services/api/apikeys.ts) besides these.
   */
  apiKeys: string[];
  /** How long a log API key's lookup is cached (its revocation's delay); default 1000 ms. */
  apiKeyCacheMs?: number;
  /** Ports public mappings may use; omitted public_port takes the first free one. */
  publicPortRange: { min: number; max: number };
  /** How long a command waits for its read-your-writes projection; default 5000 ms. */
  projectionTimeoutMs?: number;
  /**
   * Where `GET /api/v1/nodes` reads the live nodes: kvNodeDirectory(node bucket) in cluster mode,
   * localNodeDirectory(the running edge) standalone (shared/cluster/node-registry.ts). Without it
   * those routes answer 503.
   */
  nodes?: NodeDirectory;
  /** HTTP timeouts once listening (app.listen); defaults in app.ts API_TIMEOUT_DEFAULTS. */
  timeouts?: { requestMs?: number; idleMs?: number };
  /** Quota tier of users created without one (and of accounts that have no event yet). Default unlimited. */
  defaultTier?: Exclude<QuotaTier, 'custom'>;
  /** Idempotency-Key retention and lease (services/api/idempotency.ts). */
  idempotency?: IdempotencyOptions;
  /**
   * Browser origins allowed to call the API (CORS), exactly as a browser sends them
   * (`https://console.example.com`); `*` allows any. Empty (the default): no CORS headers, so
   * browsers on other origins cannot read answers.
   */
  corsOrigins?: string[];
  /** Requests per minute per API key (429 TNX_RATE_LIMITED beyond, with Retry-After); 0 is no limit. Default 6000. */
  rateLimitPerMinute?: number;
  /** Told about every answered request, for the process's metrics (services/cli/metrics.ts). */
  metrics?: ApiMetrics;
}

export interface ApiMetrics {
  /**
   * `route` is the route's pattern (`/api/v1/clients/:client_id`), never the raw URL, so the
   * series stay few; requests that matched no route are `unmatched`.
   */
  requestAnswered(method: string, route: string, statusCode: number, seconds: number): void;
}

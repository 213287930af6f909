import { Kvm, type KV, type KvEntry } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/nats-core';
import { z } from 'zod';
import type { Logger } from '../platform/logger.js';
import { InfrastructureError, errorMessage } from '../platform/errors.js';
import { isRevisionConflict } from './node-registry.js';

/**
 * Where a client is connected: the value under its client id in the routes bucket. Which of two
 * routes is newer is decided by the KV revision (the bucket stream's sequence, one total order for
 * the whole cluster), never by clocks; `connected_at` is for people.
 */
export const ClientRouteSchema = z.object({
  node_id: z.string().min(1),
  session_id: z.string().min(1),
  /** The client's credential epoch at login (0 until session tokens carry one). */
  epoch: z.number().int().min(0),
  connected_at: z.string(),
});
export type ClientRoute = z.infer<typeof ClientRouteSchema>;

export interface ClientRouteEntry {
  clientId: number;
  route: ClientRoute;
  /** KV revision of this value; changes with every refresh. */
  revision: number;
}

/** A route change seen on the watch: `route` undefined means deleted. */
export interface ClientRouteChange {
  clientId: number;
  route: ClientRoute | undefined;
  revision: number;
}

/**
 * The route TTL matches the node registry's (services/cli/server.ts claims node ids with 15 s):
 * a killed edge's node id and its routes disappear together.
 */
export const DEFAULT_ROUTE_TTL_MS = 15_000;

/** `replicas`: JetStream replicas if the bucket is created here (an existing one keeps its own). */
export async function openRouteBucket(nc: NatsConnection, bucket: string, ttlMs: number, replicas = 1): Promise<KV> {
  // history 1: only the current route matters; max_age is what ages out a dead edge's routes.
  return new Kvm(nc).create(bucket, { ttl: ttlMs, history: 1, replicas });
}

function keyOf(clientId: number): string {
  return String(clientId);
}

function parseEntry(e: KvEntry): ClientRouteChange | undefined {
  const clientId = Number(e.key);
  if (!Number.isSafeInteger(clientId) || keyOf(clientId) !== e.key) return undefined;
  if (e.operation !== 'PUT') return { clientId, route: undefined, revision: e.revision };
  let raw: unknown;
  try {
    raw = e.json();
  } catch {
    return undefined;
  }
  const parsed = ClientRouteSchema.safeParse(raw);
  return parsed.success ? { clientId, route: parsed.data, revision: e.revision } : undefined;
}

function routeError(what: string, clientId: number, err: unknown): InfrastructureError {
  return new InfrastructureError('TNX_CLUSTER_ROUTE_FAILED', `could not ${what} the route of client ${clientId}: ${errorMessage(err)}`, { cause: err });
}

export interface ClientRoutesOptions {
  nc: NatsConnection;
  /** KV bucket name; one per cluster. */
  bucket: string;
  /** Bucket-level TTL (NATS 2.9 has no per-key TTL): a route not re-put within it disappears. */
  ttlMs?: number;
  /** JetStream replicas if the bucket is created here. Default 1. */
  replicas?: number;
  logger: Logger;
}

/**
 * Client routes in a NATS KV bucket, client id → {node_id, session_id, epoch, connected_at}.
 * Writes are revision-checked except the login's own put (a new login always wins); a KV watch
 * keeps a local copy so lookup() costs no round trip, and tells listeners about every change.
 * The caller owns the connection; close() stops the watch.
 */
export class ClientRoutes {
  readonly ttlMs: number;
  private readonly cache = new Map<number, { entry: ClientRouteEntry; seenAt: number }>();
  private readonly listeners = new Set<(change: ClientRouteChange) => void>();
  private stopWatch: (() => void) | undefined;
  private watching: Promise<void> = Promise.resolve();

  private constructor(
    private readonly kv: KV,
    ttlMs: number,
    private readonly log: Logger,
  ) {
    this.ttlMs = ttlMs;
  }

  /** Opens (creating if needed) the bucket and starts the watch; resolves once the current routes are loaded. */
  static async open(opts: ClientRoutesOptions): Promise<ClientRoutes> {
    const ttlMs = opts.ttlMs ?? DEFAULT_ROUTE_TTL_MS;
    let kv: KV;
    try {
      kv = await openRouteBucket(opts.nc, opts.bucket, ttlMs, opts.replicas);
    } catch (err) {
      throw new InfrastructureError('TNX_CLUSTER_ROUTE_FAILED', `could not open the routes bucket ${opts.bucket}: ${errorMessage(err)}`, { cause: err });
    }
    const routes = new ClientRoutes(kv, ttlMs, opts.logger);
    await routes.startWatch();
    return routes;
  }

  private async startWatch(): Promise<void> {
    const iter = await this.kv.watch({ key: '>' });
    this.stopWatch = () => iter.stop();
    let loaded!: () => void;
    const initial = new Promise<void>((resolve) => (loaded = resolve));
    // An empty bucket sends no initial value: the pending count says when the backlog is done.
    const status = await this.kv.status();
    if (status.values === 0) loaded();
    this.watching = (async () => {
      for await (const e of iter) {
        const change = parseEntry(e);
        if (change) this.apply(change, e.created.getTime());
        else this.log.warn({ key: e.key }, 'ignoring a malformed client route');
        if (e.delta === 0 || e.isUpdate) loaded();
      }
    })().catch((err: unknown) => this.log.error({ err }, 'client route watch ended'));
    // Bounded: a backlog entry that ages out between status() and its delivery never arrives.
    let timer: NodeJS.Timeout | undefined;
    const fallback = new Promise<void>((resolve) => (timer = setTimeout(resolve, 5_000)));
    await Promise.race([initial, this.watching, fallback]);
    clearTimeout(timer);
  }

  private apply(change: ClientRouteChange, createdMs: number): void {
    const known = this.cache.get(change.clientId);
    // The watch is ordered, but our own writes are cached before their echo arrives (see remember()).
    if (!known || known.entry.revision < change.revision) {
      if (change.route) {
        // Expiry is judged from the older of "written" and "seen" so a backlog entry is not given a second TTL.
        const entry = { clientId: change.clientId, route: change.route, revision: change.revision };
        this.cache.set(change.clientId, { entry, seenAt: Math.min(Date.now(), createdMs) });
      } else {
        this.cache.delete(change.clientId);
      }
    }
    for (const l of this.listeners) {
      try {
        l(change);
      } catch (err) {
        this.log.error({ err, clientId: change.clientId }, 'client route listener failed');
      }
    }
  }

  /** Writes the route of a new login, whatever was there (the newest login wins). Returns its revision. */
  async put(clientId: number, route: ClientRoute): Promise<number> {
    let revision: number;
    try {
      revision = await this.kv.put(keyOf(clientId), JSON.stringify(route));
    } catch (err) {
      throw routeError('write', clientId, err);
    }
    return this.remember(clientId, route, revision);
  }

  /** Read-your-writes for lookup(): the echo on the watch comes later (and is then skipped). */
  private remember(clientId: number, route: ClientRoute, revision: number): number {
    const known = this.cache.get(clientId);
    if (!known || known.entry.revision < revision) this.cache.set(clientId, { entry: { clientId, route, revision }, seenAt: Date.now() });
    return revision;
  }

  /**
   * Re-puts a live route so it does not age out. Returns the new revision, or undefined when the
   * stored route is no longer the one at `revision` (a newer login elsewhere, or it expired).
   */
  async refresh(clientId: number, route: ClientRoute, revision: number): Promise<number | undefined> {
    try {
      return this.remember(clientId, route, await this.kv.update(keyOf(clientId), JSON.stringify(route), revision));
    } catch (err) {
      if (isRevisionConflict(err)) return undefined;
      throw routeError('refresh', clientId, err);
    }
  }

  /** Writes the route only if the client has none (absent, deleted or aged out). Undefined if one exists. */
  async create(clientId: number, route: ClientRoute): Promise<number | undefined> {
    try {
      return this.remember(clientId, route, await this.kv.create(keyOf(clientId), JSON.stringify(route)));
    } catch (err) {
      if (isRevisionConflict(err)) return undefined;
      throw routeError('write', clientId, err);
    }
  }

  /** Deletes the route only if it is still the one at `revision`; false if it changed (a newer login owns it). */
  async delete(clientId: number, revision: number): Promise<boolean> {
    try {
      await this.kv.delete(keyOf(clientId), { previousSeq: revision });
      return true;
    } catch (err) {
      if (isRevisionConflict(err)) return false;
      throw routeError('delete', clientId, err);
    }
  }

  /** The stored route, read from the server (one round trip). */
  async get(clientId: number): Promise<ClientRouteEntry | undefined> {
    let e: KvEntry | null;
    try {
      e = await this.kv.get(keyOf(clientId));
    } catch (err) {
      throw routeError('read', clientId, err);
    }
    const change = e ? parseEntry(e) : undefined;
    return change?.route ? { clientId, route: change.route, revision: change.revision } : undefined;
  }

  /**
   * The route from the local copy, no round trip. max_age expiry sends nothing on a watch, so an
   * entry not refreshed within the TTL is treated as gone here too.
   */
  lookup(clientId: number): ClientRouteEntry | undefined {
    const c = this.cache.get(clientId);
    if (!c) return undefined;
    if (Date.now() - c.seenAt >= this.ttlMs) {
      this.cache.delete(clientId);
      return undefined;
    }
    return c.entry;
  }

  /** Every change seen on the watch (puts, deletes), in bucket order. Returns the unsubscribe. */
  watch(listener: (change: ClientRouteChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    this.listeners.clear();
    this.stopWatch?.();
    await this.watching;
  }
}

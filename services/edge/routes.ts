import type { ClientRouteChange, ClientRoute, ClientRoutes } from '../../shared/cluster/routes.js';
import type { Logger } from '../../shared/platform/logger.js';
import { SessionCloseReason } from '../../shared/wire/codes.js';

export interface EdgeRoutesOptions {
  routes: ClientRoutes;
  nodeId: string;
  logger: Logger;
  /**
   * Time between two refreshes of every held route; default a third of the bucket TTL (as the node
   * heartbeat), so one missed round still leaves the routes alive.
   */
  refreshIntervalMs?: number;
  /** Refresh writes in flight at once; default 64. They are pipelined on one connection. */
  refreshConcurrency?: number;
}

/** Enough of a control session to hold its route. */
export interface RoutedSession {
  readonly clientId: number;
  readonly sessionId: string;
}

export interface EdgeRoutesHooks {
  /** Closes the session if it is still the client's session here. */
  closeSession: (clientId: number, sessionId: string, reason: SessionCloseReason) => void;
}

interface Held {
  readonly sessionId: string;
  readonly route: ClientRoute;
  /** KV revision of our latest write; 0 while the first write is pending or failed. */
  revision: number;
}

/**
 * This edge's side of the client routes: it writes a route at login, deletes it at logout (only
 * while it is still ours), re-puts every held route before the bucket TTL ages it out, and closes a
 * session whose client logged in elsewhere (a newer route on the watch, or a refresh that finds one).
 *
 * All KV work for one client runs in order on a per-client chain, so a logout never overtakes its
 * login's write, and "is that route newer than ours" is only judged once our own write has its
 * revision.
 */
export class EdgeRoutes {
  private readonly held = new Map<number, Held>();
  private readonly chains = new Map<number, Promise<void>>();
  private readonly log: Logger;
  private readonly refreshIntervalMs: number;
  private readonly concurrency: number;
  private hooks: EdgeRoutesHooks | undefined;
  private unwatch: (() => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private refreshing: Promise<void> | undefined;

  constructor(private readonly o: EdgeRoutesOptions) {
    this.log = o.logger;
    this.refreshIntervalMs = o.refreshIntervalMs ?? Math.max(100, Math.floor(o.routes.ttlMs / 3));
    this.concurrency = o.refreshConcurrency ?? 64;
    if (this.refreshIntervalMs >= o.routes.ttlMs) {
      throw new RangeError(`route refresh interval ${this.refreshIntervalMs} ms must be shorter than the bucket TTL ${o.routes.ttlMs} ms`);
    }
  }

  /** Routes this edge holds right now. */
  get size(): number {
    return this.held.size;
  }

  start(hooks: EdgeRoutesHooks): void {
    this.hooks = hooks;
    this.unwatch = this.o.routes.watch((change) => this.onChange(change));
    this.timer = setInterval(() => {
      // One round at a time: a slow round (NATS trouble) is not stacked with the next.
      this.refreshing ??= this.refreshAll().finally(() => (this.refreshing = undefined));
    }, this.refreshIntervalMs);
    this.timer.unref();
  }

  /** Stops refreshing and watching; waits for the writes already queued (the logouts' deletes). */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.unwatch?.();
    await this.refreshing;
    await Promise.all([...this.chains.values()]);
  }

  loggedIn(session: RoutedSession, epoch = 0): void {
    const held: Held = {
      sessionId: session.sessionId,
      route: { node_id: this.o.nodeId, session_id: session.sessionId, epoch, connected_at: new Date().toISOString() },
      revision: 0,
    };
    this.held.set(session.clientId, held);
    this.enqueue(session.clientId, async () => {
      if (this.held.get(session.clientId) !== held) return; // already logged out or replaced here
      held.revision = await this.o.routes.put(session.clientId, held.route);
    });
  }

  loggedOut(session: RoutedSession): void {
    const held = this.held.get(session.clientId);
    // Not ours any more: replaced by a newer session here (which holds the route), or elsewhere.
    if (!held || held.sessionId !== session.sessionId) return;
    this.held.delete(session.clientId);
    this.enqueue(session.clientId, async () => {
      // A conflict means a newer login elsewhere already owns the route: leave it.
      if (held.revision > 0) await this.o.routes.delete(session.clientId, held.revision);
    });
  }

  /** Resolves when every KV write queued so far has finished (tests, shutdown). */
  async settled(): Promise<void> {
    await Promise.all([...this.chains.values()]);
  }

  /** Re-puts every held route, `concurrency` writes at a time. */
  async refreshAll(): Promise<void> {
    const clientIds = [...this.held.keys()];
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < clientIds.length) {
        const clientId = clientIds[next++]!;
        await this.enqueue(clientId, () => this.refreshOne(clientId));
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.concurrency, clientIds.length) }, worker));
  }

  private async refreshOne(clientId: number): Promise<void> {
    const held = this.held.get(clientId);
    if (!held) return;
    if (held.revision === 0) {
      // The login's write failed (NATS trouble): try again.
      held.revision = await this.o.routes.put(clientId, held.route);
      return;
    }
    const revision = await this.o.routes.refresh(clientId, held.route, held.revision);
    if (revision !== undefined) {
      held.revision = revision;
      return;
    }
    // The stored route is not ours any more: a newer login (then we are replaced), or it aged out
    // while NATS was unreachable (then we write it again, unless someone took it meanwhile).
    const current = await this.o.routes.get(clientId);
    if (current && current.route.session_id !== held.sessionId) {
      if (current.revision > held.revision) this.replaced(clientId, held, current.route);
      return;
    }
    if (current) {
      held.revision = current.revision;
      return;
    }
    const created = await this.o.routes.create(clientId, held.route);
    if (created !== undefined) held.revision = created;
  }

  private onChange(change: ClientRouteChange): void {
    const held = this.held.get(change.clientId);
    const route = change.route;
    // Deletes are never about our route (we delete ours only after letting go of it).
    if (!held || !route || route.session_id === held.sessionId) return;
    // Judged in the client's chain, once our own write (if pending) has its revision: the echo of
    // an older write must not count as a newer login.
    void this.enqueue(change.clientId, async () => {
      if (this.held.get(change.clientId) === held && change.revision > held.revision) this.replaced(change.clientId, held, route);
    });
  }

  private replaced(clientId: number, held: Held, by: ClientRoute): void {
    this.held.delete(clientId);
    this.log.info({ clientId, sessionId: held.sessionId, byNodeId: by.node_id, bySessionId: by.session_id }, 'client logged in elsewhere; closing its session here');
    this.hooks?.closeSession(clientId, held.sessionId, SessionCloseReason.Replaced);
  }

  private enqueue(clientId: number, op: () => Promise<void>): Promise<void> {
    const run = (this.chains.get(clientId) ?? Promise.resolve()).then(op).catch((err: unknown) => {
      // The refresher retries while the route can still be alive; a lost delete ages out.
      this.log.warn({ err, clientId }, 'client route write failed');
    });
    this.chains.set(clientId, run);
    void run.then(() => {
      if (this.chains.get(clientId) === run) this.chains.delete(clientId);
    });
    return run;
  }
}

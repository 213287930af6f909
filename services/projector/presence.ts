import type { Db } from '../../shared/db/connect.js';
import { recordClientDisconnected } from '../../shared/domain/index.js';
import type { EventStore } from '../../shared/eventstore/types.js';
import type { Logger } from '../../shared/platform/logger.js';

/**
 * What the sweeper needs to know about the cluster right now: the live node ids (node registry)
 * and, per client, the session its route names (client routes; undefined = no route).
 */
export interface PresenceSource {
  liveNodes(): Promise<ReadonlySet<string>>;
  routedSession(clientId: number): string | undefined;
  /** Whether this process is the one that sweeps (one per cluster: the lowest live instance). */
  isLeader(): Promise<boolean>;
}

export interface PresenceSweeperOptions {
  db: Db;
  store: EventStore;
  source: PresenceSource;
  logger: Logger;
  /** Default 30 s. A session is closed after it looked dead at two sweeps in a row. */
  intervalMs?: number;
  /** Who the disconnects are attributed to in the event log. */
  actorId: string;
}

export interface PresenceSweeper {
  /** One sweep now (tests, and the timer); resolves with the sessions it closed. */
  sweep(): Promise<number>;
  stop(): Promise<void>;
}

/**
 * Presence for sessions whose edge cannot say goodbye. An edge records ClientConnected and
 * ClientDisconnected itself; a killed edge records nothing, and in a cluster its node id may never
 * come back (or come back as a new process that knows nothing of the old sessions). The read model
 * would show those clients online forever.
 *
 * The sweeper compares the read model's online sessions with the cluster's own truth: a session is
 * dead when its node is not in the node registry, or when its client's route names no session or
 * another one (the route is written before the login's ClientConnected, so a live session always
 * has it). To ride out a route write or a heartbeat in flight, a session must look dead at two
 * sweeps in a row before its ClientDisconnected is recorded. Session facts are never rejected and
 * the projection ignores a disconnect of a session that is not current, so a race with the edge's
 * own disconnect (or with a second sweeper) only adds a harmless duplicate fact.
 */
export function startPresenceSweeper(o: PresenceSweeperOptions): PresenceSweeper {
  const log = o.logger.child({ component: 'presence-sweeper' });
  let suspects = new Set<string>();
  let running: Promise<number> | undefined;
  let stopped = false;

  const sweepOnce = async (): Promise<number> => {
    if (!(await o.source.isLeader())) {
      suspects = new Set();
      return 0;
    }
    const [online, live] = await Promise.all([
      o.db.selectFrom('clients').select(['client_id', 'node_id', 'session_id']).where('status', '=', 'online').execute(),
      o.source.liveNodes(),
    ]);
    const next = new Set<string>();
    let closed = 0;
    for (const c of online) {
      if (!c.session_id || !c.node_id) continue;
      const nodeGone = !live.has(c.node_id);
      const routed = o.source.routedSession(c.client_id);
      if (!nodeGone && routed === c.session_id) continue;
      const key = `${c.client_id}/${c.session_id}`;
      if (!suspects.has(key)) {
        next.add(key);
        continue;
      }
      const reason = nodeGone ? 'node lost' : 'session lost';
      try {
        await recordClientDisconnected(
          o.store,
          { clientId: c.client_id, nodeId: c.node_id, sessionId: c.session_id, reason },
          { actor: { kind: 'system', id: o.actorId }, correlationId: c.session_id },
        );
        closed++;
        log.info({ clientId: c.client_id, nodeId: c.node_id, sessionId: c.session_id, reason }, 'closed a session its edge could not close');
      } catch (err) {
        next.add(key); // try again next time
        log.warn({ err, clientId: c.client_id }, 'could not record the disconnect of a dead session');
      }
    }
    suspects = next;
    return closed;
  };

  const sweep = (): Promise<number> => {
    running ??= sweepOnce().finally(() => (running = undefined));
    return running;
  };
  const timer = setInterval(() => {
    if (stopped) return;
    sweep().catch((err: unknown) => log.warn({ err }, 'presence sweep failed; retrying next interval'));
  }, o.intervalMs ?? 30_000);
  timer.unref();
  return {
    sweep,
    async stop() {
      stopped = true;
      clearInterval(timer);
      await running?.catch(() => undefined);
    },
  };
}

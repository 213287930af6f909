import type { CommandMetadata } from '../../shared/eventstore/command.js';
import type { Db } from '../../shared/db/connect.js';
import type { EventStore } from '../../shared/eventstore/types.js';
import { recordClientConnected, recordClientDisconnected, recordMappingAgentStatus } from '../../shared/domain/index.js';
import type { Logger } from '../../shared/platform/logger.js';
import type { MappingStatusReport } from './session.js';

/**
 * Records session facts (ClientConnected / ClientDisconnected / MappingAgentStatusReported) in order per client: a replacing
 * session's connect is appended only after the facts of the session it replaced, so the event log
 * tells the story in the order it happened. Failures are logged, never thrown: a lost fact must
 * not break a live session (the projection only drives presence).
 */
export class SessionFacts {
  private readonly queues = new Map<number, Promise<void>>();
  private readonly meta: CommandMetadata;

  constructor(
    private readonly store: EventStore,
    private readonly nodeId: string,
    private readonly log: Logger,
  ) {
    this.meta = { actor: { kind: 'node', id: nodeId } };
  }

  connected(clientId: number, sessionId: string, remoteAddr: string): void {
    this.enqueue(clientId, () =>
      recordClientConnected(this.store, { clientId, nodeId: this.nodeId, sessionId, remoteAddr }, { ...this.meta, correlationId: sessionId }),
    );
  }

  disconnected(clientId: number, sessionId: string, reason: string): void {
    this.enqueue(clientId, () =>
      recordClientDisconnected(this.store, { clientId, nodeId: this.nodeId, sessionId, reason }, { ...this.meta, correlationId: sessionId }),
    );
  }

  /**
   * An agent's outcome for one side of a mapping changed (see ControlSession.onMappingStatus).
   * Queued with the session's other facts, so it lands after its ClientConnected and before its
   * ClientDisconnected: the projection ties the side to the session that reported it. The agent's
   * text is bounded and cleaned by the decider (cleanAgentText) before it becomes an event.
   */
  mappingStatus(clientId: number, sessionId: string, r: MappingStatusReport): void {
    this.enqueue(clientId, () =>
      recordMappingAgentStatus(
        this.store,
        {
          mapping_id: r.mapping_id,
          client_id: clientId,
          role: r.role,
          status: r.status,
          ...(r.error === undefined ? {} : { error: r.error }),
          config_version: r.config_version,
          node_id: this.nodeId,
          session_id: sessionId,
        },
        { ...this.meta, correlationId: sessionId },
      ),
    );
  }

  /** Resolves when every queued fact has been appended (or has failed and been logged). */
  async drain(): Promise<void> {
    while (this.queues.size > 0) await Promise.all([...this.queues.values()]);
  }

  private enqueue(clientId: number, append: () => Promise<unknown>): void {
    const prev = this.queues.get(clientId) ?? Promise.resolve();
    const next: Promise<void> = prev
      .then(append)
      .then(
        () => undefined,
        (err: unknown) => this.log.error({ err, clientId }, 'could not record a session fact'),
      )
      .finally(() => {
        if (this.queues.get(clientId) === next) this.queues.delete(clientId);
      });
    this.queues.set(clientId, next);
  }
}

/**
 * A node id is only ever held by one live edge, so when an edge starts, any session the read model
 * still shows on its node id belongs to a previous incarnation that died without saying goodbye
 * (crash, kill -9, power loss). Records those sessions as ended so presence is right again.
 * Call it once the read model has caught up with the event log, before accepting agents.
 */
export async function closeStaleSessions(opts: { db: Db; store: EventStore; nodeId: string; log: Logger }): Promise<number> {
  const stale = await opts.db
    .selectFrom('clients')
    .select(['client_id', 'session_id'])
    .where('node_id', '=', opts.nodeId)
    .where('status', '=', 'online')
    .execute();
  const facts = new SessionFacts(opts.store, opts.nodeId, opts.log);
  for (const s of stale) if (s.session_id) facts.disconnected(s.client_id, s.session_id, 'node restarted');
  await facts.drain();
  if (stale.length > 0) opts.log.info({ sessions: stale.length }, 'closed sessions left over from a previous run of this node');
  return stale.length;
}

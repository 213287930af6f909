import type { StoredEvent } from '../../shared/contracts/envelope.js';
import { EventSkipped, parseStoredEvent, skipStreamFor, type TypedStoredEvent } from '../../shared/contracts/events.js';
import type { ChangeBus, ChangeNotice } from '../../shared/contracts/notices.js';
import type { Db, DbTx } from '../../shared/db/connect.js';
import type { EventStore } from '../../shared/eventstore/types.js';
import type { Logger } from '../../shared/platform/logger.js';
import { isTransientDbError } from '../../shared/db/errors.js';
import { ensureCheckpoint, lockCheckpoint, readCheckpoint, saveCheckpoint } from './checkpoints.js';
import { BadEventError, ProjectionHaltedError } from './errors.js';
import { handlerFor, type Projection, type ProjectionContext } from './projection.js';
import type { CommitHook } from './state-feed.js';

export interface RunnerOptions {
  /** Checkpoint row and durable subscriber name. [A-Za-z0-9_-]+ */
  name: string;
  /** Applied in this order, all in the same transaction as the checkpoint. */
  projections: readonly Projection[];
  store: EventStore;
  db: Db;
  bus: ChangeBus;
  logger: Logger;
  /** Called once when the projection halts (bad event, failing handler, lost subscription). */
  onHalt?: (err: ProjectionHaltedError) => void;
  /** Suffix of the durable subscriber name, so runners of one projection do not share a consumer. */
  instance?: string;
  /** Longest pause between retries while PostgreSQL is unreachable; default 5 s. */
  maxRetryDelayMs?: number;
  /**
   * Runs around the handlers in each event's transaction and after each commit (the state
   * stream's outbox, see state-feed.ts); its start() runs once before subscribing, to finish what
   * a previous run committed but did not get out.
   */
  commitHook?: CommitHook;
}

export interface RunningProjection {
  readonly name: string;
  /** The last position this runner saw committed (its own commits or another runner's). */
  readonly position: number;
  /** Null while running; the reason once halted. */
  readonly halted: ProjectionHaltedError | null;
  stop(): Promise<void>;
}

/** Collects a transaction's notices, one per client / kind, published only after commit. */
class NoticeBuffer {
  private readonly notices = new Map<string, ChangeNotice>();

  add(notice: ChangeNotice): void {
    const key = notice.kind === 'client-config' ? `client-config:${notice.clientId}` : notice.kind;
    this.notices.set(key, notice);
  }

  drain(): ChangeNotice[] {
    const out = [...this.notices.values()];
    this.notices.clear();
    return out;
  }
}

export function parseForProjection(name: string, raw: StoredEvent): TypedStoredEvent {
  try {
    return parseStoredEvent(raw);
  } catch (cause) {
    throw new BadEventError(name, raw.position, raw.type, { cause });
  }
}

/** An operator's EventSkipped for one stored event: what the runner logs when it passes the event. */
export interface OperatorSkip {
  /** Position of the EventSkipped itself. */
  skipPosition: number;
  eventId: string;
  reason: string;
  actor: string;
  occurredAt: string;
}

/**
 * The operator's skip for `raw`, if `tunnox ctl events skip` recorded one: an EventSkipped in
 * stream skip.<position> naming both this position and this envelope id (a skip written against
 * another log, or a position that now holds another event, does not match).
 */
export async function findOperatorSkip(store: EventStore, raw: StoredEvent): Promise<OperatorSkip | null> {
  const { events } = await store.readStream(skipStreamFor(raw.position));
  for (const e of events) {
    if (e.type !== 'EventSkipped') continue;
    const parsed = EventSkipped.safeParse(e.data);
    if (!parsed.success || parsed.data.position !== raw.position || parsed.data.event_id !== raw.id) continue;
    return {
      skipPosition: e.position,
      eventId: parsed.data.event_id,
      reason: parsed.data.reason,
      actor: `${e.actor.kind}:${e.actor.id}`,
      occurredAt: e.occurred_at,
    };
  }
  return null;
}

/** Runs every projection's handler for one event inside the caller's transaction. */
export async function applyEvent(
  tx: DbTx,
  projections: readonly Projection[],
  event: TypedStoredEvent,
  ctx: ProjectionContext,
): Promise<void> {
  for (const projection of projections) {
    const handler = handlerFor(projection, event);
    if (handler) await handler(tx, event, ctx);
  }
}

/**
 * Subscribes from the committed checkpoint and, per event, commits the read-model changes and the
 * new checkpoint in one transaction (STYLE.md habit 4), then publishes the change notices and acks.
 * Any error halts the projection: it is logged, the subscription stops, and the checkpoint stays
 * before the failing event so a restart retries that very event. The one exception is an event an
 * operator has skipped (EventSkipped naming its position and id, see findOperatorSkip): then only
 * the checkpoint moves past it, with a warning, and projection goes on.
 */
export async function runProjection(opts: RunnerOptions): Promise<RunningProjection> {
  const { name, projections, store, db, bus } = opts;
  const log = opts.logger.child({ projection: name });
  await ensureCheckpoint(db, name);
  let position = await readCheckpoint(db, name);
  let halted: ProjectionHaltedError | null = null;
  let stopping: Promise<void> | undefined;

  const halt = (err: unknown, failedAt: number | null): void => {
    if (halted) return;
    halted = new ProjectionHaltedError(name, position, failedAt, { cause: err });
    log.error(
      { err, position, failedAt },
      failedAt === null
        ? 'projection halted; fix the cause and restart (no event was skipped)'
        : `projection halted; fix the cause and restart (the event was not skipped). An event that can never be projected: tunnox ctl events skip ${failedAt} --reason TEXT (docs/events.md)`,
    );
    opts.onHalt?.(halted);
  };

  const publish = async (notices: readonly ChangeNotice[]): Promise<void> => {
    for (const notice of notices) {
      try {
        await bus.publish(notice);
      } catch (err) {
        // Notices are hints (receivers re-read the read models and waiters poll), so a lost one
        // only delays; it must not halt the projection.
        log.warn({ err, notice }, 'publishing a change notice failed');
      }
    }
  };

  const project = async (raw: StoredEvent): Promise<void> => {
    if (halted) throw halted;
    if (raw.position <= position) return; // redelivery of a committed event
    const event = parseForProjection(name, raw);
    const notices = new NoticeBuffer();
    const ctx: ProjectionContext = { logger: log, notify: (n) => notices.add(n) };
    const committed = await db.transaction().execute(async (tx) => {
      const checkpoint = await lockCheckpoint(tx, name);
      if (event.position <= checkpoint) return { applied: false, checkpoint };
      if (opts.commitHook) await opts.commitHook.inTransaction(tx, event, () => applyEvent(tx, projections, event, ctx));
      else await applyEvent(tx, projections, event, ctx);
      await saveCheckpoint(tx, name, event.position);
      return { applied: true, checkpoint: event.position };
    });
    position = Math.max(position, committed.checkpoint);
    if (!committed.applied) {
      log.debug({ position: event.position, checkpoint: committed.checkpoint }, 'event already projected; skipped');
      return;
    }
    await opts.commitHook?.afterCommit();
    await publish([...notices.drain(), { kind: 'projection', name, position: event.position }]);
  };

  // The failed event's transaction rolled back; passing it commits only the checkpoint, so the
  // read models hold nothing of it, and the EventSkipped in the log says who decided and why.
  const passSkipped = async (raw: StoredEvent, failure: unknown): Promise<boolean> => {
    let skip: OperatorSkip | null;
    try {
      skip = await findOperatorSkip(store, raw);
      if (!skip) return false;
      await db.transaction().execute(async (tx) => {
        const checkpoint = await lockCheckpoint(tx, name);
        if (checkpoint < raw.position) await saveCheckpoint(tx, name, raw.position);
      });
    } catch (err) {
      // Halting on the original failure is the safe answer; a restart looks again.
      log.warn({ err, position: raw.position }, 'could not look for or record an operator skip of the failing event');
      return false;
    }
    position = Math.max(position, raw.position);
    log.warn(
      { err: failure, position: raw.position, eventId: raw.id, type: raw.type, stream: raw.stream, skip },
      'event skipped by operator (EventSkipped in the log); its read-model changes were not applied',
    );
    await publish([{ kind: 'projection', name, position: raw.position }]);
    return true;
  };

  // An unreachable database is not a bad event: keep the event (unacked) and retry the same
  // transaction with backoff until PostgreSQL is back or we are stopped. Anything else halts.
  const maxDelay = opts.maxRetryDelayMs ?? 5_000;
  const projectWithRetry = async (raw: StoredEvent): Promise<void> => {
    for (let attempt = 0; ; attempt++) {
      try {
        return await project(raw);
      } catch (err) {
        if (stopping || !isTransientDbError(err)) throw err;
        const delay = Math.min(maxDelay, 100 * 2 ** Math.min(attempt, 10));
        log.warn({ err, position: raw.position, attempt, delayMs: delay }, 'read-model database unavailable; retrying the event');
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  };

  log.info({ position, projections: projections.map((p) => `${p.name}@${p.version}`) }, 'projection starting');
  await opts.commitHook?.start();
  const subscription = await store.subscribe({
    name: opts.instance ? `${name}-${opts.instance}` : name,
    afterPosition: position,
    handler: async (raw) => {
      try {
        await projectWithRetry(raw);
      } catch (err) {
        if (!stopping && !halted && (await passSkipped(raw, err))) return;
        halt(err, raw.position);
        throw err;
      }
    },
    // Reached with the handler's own error (already reported above) or a failure of the
    // subscription itself (e.g. the event log became unreadable).
    onError: (err) => halt(err, null),
  });

  return {
    name,
    get position() {
      return position;
    },
    get halted() {
      return halted;
    },
    stop() {
      stopping ??= (async () => {
        try {
          await subscription.stop();
          await opts.commitHook?.stop();
        } finally {
          log.info({ position }, 'projection stopped');
        }
      })();
      return stopping;
    },
  };
}

export interface RebuildOptions {
  name: string;
  projections: readonly Projection[];
  /** Every table the projections write; emptied before the replay. */
  tables: readonly ('users' | 'clients' | 'mappings' | 'api_keys')[];
  store: EventStore;
  db: Db;
  logger: Logger;
  batchSize?: number;
}

/**
 * Replays the log from position 0 into emptied read-model tables in ONE transaction, ending with the
 * checkpoint at the last replayed position. See rebuildReadModels in index.ts for the contract.
 */
export async function rebuildProjection(opts: RebuildOptions): Promise<{ position: number; events: number }> {
  const { name, store } = opts;
  const batchSize = opts.batchSize ?? 500;
  const log = opts.logger.child({ projection: name, rebuild: true });
  // Operator skips met so far (position -> envelope id). A failed handler aborts the PostgreSQL
  // transaction, so an event found to be skipped only after it failed is passed by replaying again
  // from the start; skips are rare, and the rebuild stays one transaction.
  const skipped = new Map<number, string>();
  for (;;) {
    try {
      const result = await replayAll(opts, batchSize, log, skipped);
      log.info({ ...result, skipped: [...skipped.keys()] }, 'read models rebuilt');
      return result;
    } catch (err) {
      if (!(err instanceof ReplayFailure)) throw err;
      const skip = skipped.has(err.event.position) ? null : await findOperatorSkip(store, err.event);
      if (!skip) throw err.cause;
      log.warn(
        { err: err.cause, position: err.event.position, eventId: err.event.id, type: err.event.type, skip },
        'event skipped by operator (EventSkipped in the log); replaying again without it',
      );
      skipped.set(err.event.position, err.event.id);
    }
  }
}

/** The event a replay failed on, carried out of the (rolled back) rebuild transaction. */
class ReplayFailure extends Error {
  constructor(
    readonly event: StoredEvent,
    override readonly cause: unknown,
  ) {
    super(`replay failed at position ${event.position}`);
  }
}

async function replayAll(
  opts: RebuildOptions,
  batchSize: number,
  log: Logger,
  skipped: ReadonlyMap<number, string>,
): Promise<{ position: number; events: number }> {
  const { name, projections, store, db } = opts;
  return db.transaction().execute(async (tx) => {
    // Holding the checkpoint lock keeps a live projector of the same name waiting; when we commit
    // it sees our checkpoint and skips what we already replayed.
    const locked = await lockCheckpoint(tx, name);
    // Read the head only now: everything the live projector committed is at or below it, so the
    // replay covers it and the checkpoint never moves backwards. Later events are left to the live
    // projector, which resumes after our checkpoint.
    const head = Math.max(await store.headPosition(), locked);
    log.info({ head }, 'rebuilding read models');
    // DELETE rather than TRUNCATE: readers keep seeing the old rows (MVCC) until the rebuild commits,
    // instead of blocking on TRUNCATE's exclusive lock for the whole replay.
    for (const table of opts.tables) await tx.deleteFrom(table).execute();
    const ctx: ProjectionContext = { logger: log, notify: () => undefined };
    let position = 0;
    let events = 0;
    while (position < head) {
      const batch = await store.readAll(position, batchSize);
      if (batch.length === 0) break;
      for (const raw of batch) {
        if (raw.position <= position) throw new Error(`event store returned position ${raw.position} after ${position}`);
        if (skipped.get(raw.position) !== raw.id) {
          try {
            await applyEvent(tx, projections, parseForProjection(name, raw), ctx);
          } catch (err) {
            throw new ReplayFailure(raw, err);
          }
        }
        position = raw.position;
        events++;
      }
    }
    await saveCheckpoint(tx, name, position);
    return { position, events };
  });
}

import type { StoredEvent } from '../../shared/contracts/envelope.js';
import { parseStoredEvent, type TypedStoredEvent } from '../../shared/contracts/events.js';
import type { ChangeBus, ChangeNotice } from '../../shared/contracts/notices.js';
import type { Db, DbTx } from '../../shared/db/connect.js';
import type { EventStore } from '../../shared/eventstore/types.js';
import type { Logger } from '../../shared/platform/logger.js';
import { isTransientDbError } from '../../shared/db/errors.js';
import { ensureCheckpoint, lockCheckpoint, readCheckpoint, saveCheckpoint } from './checkpoints.js';
import { BadEventError, ProjectionHaltedError } from './errors.js';
import { handlerFor, type Projection, type ProjectionContext } from './projection.js';

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
 * before the failing event so a restart retries that very event.
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
    log.error({ err, position, failedAt }, 'projection halted; fix the cause and restart (the event was not skipped)');
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
      await applyEvent(tx, projections, event, ctx);
      await saveCheckpoint(tx, name, event.position);
      return { applied: true, checkpoint: event.position };
    });
    position = Math.max(position, committed.checkpoint);
    if (!committed.applied) {
      log.debug({ position: event.position, checkpoint: committed.checkpoint }, 'event already projected; skipped');
      return;
    }
    await publish([...notices.drain(), { kind: 'projection', name, position: event.position }]);
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
  const subscription = await store.subscribe({
    name: opts.instance ? `${name}-${opts.instance}` : name,
    afterPosition: position,
    handler: async (raw) => {
      try {
        await projectWithRetry(raw);
      } catch (err) {
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
  tables: readonly ('users' | 'clients' | 'mappings')[];
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
  const { name, projections, store, db } = opts;
  const batchSize = opts.batchSize ?? 500;
  const log = opts.logger.child({ projection: name, rebuild: true });
  const result = await db.transaction().execute(async (tx) => {
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
        await applyEvent(tx, projections, parseForProjection(name, raw), ctx);
        position = raw.position;
        events++;
      }
    }
    await saveCheckpoint(tx, name, position);
    return { position, events };
  });
  log.info(result, 'read models rebuilt');
  return result;
}

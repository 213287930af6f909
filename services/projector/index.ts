import type { ChangeBus } from '../../shared/contracts/notices.js';
import type { Db } from '../../shared/db/connect.js';
import type { EventStore } from '../../shared/eventstore/types.js';
import type { Logger } from '../../shared/platform/logger.js';
import type { ProjectionHaltedError } from './errors.js';
import { READ_MODEL_PROJECTION, READ_MODEL_PROJECTIONS, READ_MODEL_TABLES } from './readModels.js';
import { rebuildProjection, runProjection } from './runner.js';
import { createProjectionWaiter as createWaiter, type ProjectionWaiter } from './waiter.js';
import { createStateOutbox } from './state-feed.js';
import type { StatePublisher } from '../../shared/bus/state.js';
export { createStateOutbox, type CommitHook } from './state-feed.js';

export { READ_MODEL_PROJECTION } from './readModels.js';
export type { ProjectionWaiter } from './waiter.js';
export { BadEventError, ProjectionHaltedError } from './errors.js';
export { rebuildAndCompare, RebuildError, SHADOW_SCHEMA, type RebuildReport, type RowDifference } from './shadow.js';

export interface ProjectorOptions {
  store: EventStore;
  db: Db;
  bus: ChangeBus;
  logger: Logger;
  /** Checkpoint and durable subscriber name; default READ_MODEL_PROJECTION. */
  name?: string;
  /**
   * Distinguishes this runner's durable subscription when several processes run the same
   * projection (one per node in JetStream mode): each gets its own consumer, and the checkpoint
   * row lock makes sure every event is applied exactly once among them. Default: none.
   */
  instance?: string;
  /**
   * Called once if the projector halts (bad event, failing handler, lost subscription). The error
   * is already logged; a process would typically shut down so a supervisor restarts it.
   */
  onHalt?: (err: ProjectionHaltedError) => void;
  /**
   * Where the new state of every changed client and mapping goes after commit (the JetStream
   * state stream edges build their view from; shared/bus/state.ts). Omitted in standalone mode,
   * where the edge reads the read models itself.
   */
  statePublisher?: StatePublisher;
}

export interface RunningProjector {
  readonly name: string;
  stop(): Promise<void>;
  /** The last committed position (the checkpoint). */
  readonly position: number;
}

/**
 * Starts folding events into the read models (users, clients, mappings) from the committed
 * checkpoint. Per event: one transaction for the read-model rows and the checkpoint (and, with a
 * state publisher, the state outbox), then the entity states on the state stream and change
 * notices (client-config, public-mappings, projection) on the bus. A bad event halts it loudly.
 */
export function startProjector(opts: ProjectorOptions): Promise<RunningProjector> {
  return runProjection({
    name: opts.name ?? READ_MODEL_PROJECTION,
    projections: READ_MODEL_PROJECTIONS,
    store: opts.store,
    db: opts.db,
    bus: opts.bus,
    logger: opts.logger,
    ...(opts.instance ? { instance: opts.instance } : {}),
    ...(opts.onHalt ? { onHalt: opts.onHalt } : {}),
    ...(opts.statePublisher ? { commitHook: createStateOutbox({ db: opts.db, publisher: opts.statePublisher, logger: opts.logger, checkpoint: opts.name ?? READ_MODEL_PROJECTION }) } : {}),
  });
}

/** Waits for the read-model projector (or the named projection) to reach a position. */
export function createProjectionWaiter(opts: { db: Db; bus: ChangeBus; name?: string; pollMs?: number }): ProjectionWaiter {
  return createWaiter({ ...opts, name: opts.name ?? READ_MODEL_PROJECTION });
}

/**
 * Rebuilds the read models from the whole event log (no command runs it yet; the projector tests do):
 * 1. notes the store's head position;
 * 2. in ONE transaction: locks the `read-models` checkpoint row, empties users, clients and
 *    mappings, replays every event from position 0 up to that head through the same handlers as
 *    the live projector, and sets the checkpoint to the last replayed position;
 * 3. commits, so readers switch from the old rows to the rebuilt ones at once.
 * A live projector may keep running: it waits on the checkpoint lock and afterwards skips what the
 * rebuild covered. No change notices are published (connected agents resync on their next notice
 * or reconnect). A bad event aborts the rebuild with BadEventError and leaves the old rows intact.
 * Returns the checkpoint position and the number of events replayed.
 */
export function rebuildReadModels(opts: { store: EventStore; db: Db; logger: Logger }): Promise<{ position: number; events: number }> {
  return rebuildProjection({
    name: READ_MODEL_PROJECTION,
    projections: READ_MODEL_PROJECTIONS,
    tables: READ_MODEL_TABLES,
    store: opts.store,
    db: opts.db,
    logger: opts.logger,
  });
}

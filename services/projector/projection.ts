import type { StoredEvent } from '../../shared/contracts/envelope.js';
import type { EventData, EventType, TypedStoredEvent } from '../../shared/contracts/events.js';
import type { ChangeNotice } from '../../shared/contracts/notices.js';
import type { DbTx } from '../../shared/db/connect.js';
import type { Logger } from '../../shared/platform/logger.js';

/** What a handler may do besides writing through `tx`. */
export interface ProjectionContext {
  readonly logger: Logger;
  /** Queues a notice; the runner publishes it only after the transaction commits (deduplicated). */
  notify(notice: ChangeNotice): void;
}

export type ProjectionHandler<T extends EventType> = (
  tx: DbTx,
  event: StoredEvent<T, EventData<T>>,
  ctx: ProjectionContext,
) => Promise<void>;

/**
 * A projection folds events into read-model tables (STYLE.md habit 4). Handlers must be idempotent
 * (a replay over existing rows leaves the same state) and must never reject a recorded fact
 * (habit 5): an event that does not fit the current rows is logged and ignored, not thrown.
 * Bump `version` when a handler's output changes. The version is only logged at start: nothing
 * rebuilds by itself, so a changed handler also needs a migration or a rebuild of the read models.
 */
export interface Projection {
  readonly name: string;
  readonly version: number;
  readonly handlers: { readonly [T in EventType]?: ProjectionHandler<T> };
}

type AnyHandler = (tx: DbTx, event: TypedStoredEvent, ctx: ProjectionContext) => Promise<void>;

/** The handler for this event's type; the mapped type guarantees it matches the payload. */
export function handlerFor(projection: Projection, event: TypedStoredEvent): AnyHandler | undefined {
  return projection.handlers[event.type] as AnyHandler | undefined;
}

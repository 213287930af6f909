import type { StoredEvent } from '../contracts/envelope.js';
import type { EventStore } from './types.js';

export interface ScanQuery {
  /** One aggregate stream (`mapping.1001`); absent: the whole log. */
  stream?: string;
  /** Only events of these types; absent: all. */
  types?: ReadonlySet<string>;
  /** Events with a position above this one. */
  after: number;
  /** At most this many events. */
  limit: number;
  /**
   * With a type filter, at most this many events are read per call (default 5000), matching or
   * not, so a rare type costs a bounded amount per page rather than a walk over the whole log.
   */
  budget?: number;
}

export interface ScanPage {
  events: StoredEvent[];
  /**
   * Where the next page starts (pass as `after`): null when this page reached the end of the log
   * (or stream) as it was read. A page cut short by the budget may hold fewer than `limit` events,
   * even none, and still have a next position.
   */
  next: number | null;
  /** Position of the last event read, matching or not (`after` when none): where a follower polls from. */
  last: number;
}

const FILTERED_BATCH = 500;

/** A page of the log, or of one stream, in position order (GET /api/v1/events, `tunnox ctl events tail`). */
export async function scanEvents(store: EventStore, q: ScanQuery): Promise<ScanPage> {
  const budget = q.budget ?? 5_000;
  const read = (after: number, n: number): Promise<StoredEvent[]> =>
    q.stream === undefined ? store.readAll(after, n) : store.readStream(q.stream, { afterPosition: after, limit: n }).then((r) => r.events);
  const events: StoredEvent[] = [];
  let cursor = q.after;
  let scanned = 0;
  for (;;) {
    // Unfiltered, one read of limit + 1 tells whether anything follows the page.
    const want = q.types ? Math.max(1, Math.min(FILTERED_BATCH, budget - scanned)) : q.limit + 1;
    const batch = await read(cursor, want);
    for (const e of batch) {
      if (events.length === q.limit) return { events, next: cursor, last: cursor };
      cursor = e.position;
      if (!q.types || q.types.has(e.type)) events.push(e);
    }
    if (batch.length < want) return { events, next: null, last: cursor };
    scanned += batch.length;
    if (q.types && scanned >= budget) return { events, next: cursor, last: cursor };
  }
}

import { auditEvent, type AuditEvent } from '../../shared/contracts/audit.js';
import type { StoredEvent } from '../../shared/contracts/envelope.js';
import { scanEvents } from '../../shared/eventstore/scan.js';
import type { EventStore } from '../../shared/eventstore/types.js';

// `tunnox ctl events tail`: the event log as an operator reads it, from the log itself.

export interface TailOptions {
  /** One aggregate stream (`mapping.1001`). */
  stream?: string;
  types?: ReadonlySet<string>;
  /** Print everything after this position; absent: the last `lines` events (that match). */
  after?: number;
  lines: number;
  /** Keep printing new events until `signal` aborts. */
  follow?: boolean;
  signal?: AbortSignal;
  /** How often a follower looks for new events; default 250 ms. */
  pollMs?: number;
  json?: boolean;
  /** Receives one line per event, without the newline. */
  write: (line: string) => void;
}

const PAGE = 500;

/** One readable line: position, time, stream@version, type, actor, then the (redacted) payload. */
export function formatEvent(e: AuditEvent): string {
  const actor = e.actor ? `${e.actor.kind}:${e.actor.id}` : '-';
  const data = JSON.stringify(e.data);
  return `${e.position}  ${e.occurred_at ?? '-'}  ${e.stream}@${e.version}  ${e.type}  ${actor}  ${data}`;
}

/**
 * The last `n` matching events at or before `head`, oldest first. The log reads only forwards, so
 * windows before the head are read until enough match or the start is reached.
 */
async function lastEvents(store: EventStore, o: TailOptions, head: number): Promise<StoredEvent[]> {
  const matches = (e: StoredEvent): boolean => !o.types || o.types.has(e.type);
  if (o.lines === 0) return [];
  if (o.stream !== undefined) {
    const { events } = await store.readStream(o.stream);
    return events.filter((e) => e.position <= head && matches(e)).slice(-o.lines);
  }
  let found: StoredEvent[] = [];
  let hi = head;
  let window = Math.max(2 * o.lines, PAGE);
  while (hi > 0 && found.length < o.lines) {
    const lo = Math.max(0, hi - window);
    const part: StoredEvent[] = [];
    // PostgreSQL positions may have gaps, so a window can hold fewer events than its width; and
    // readAll may go on past hi when it does: keep only (lo, hi].
    for (let after = lo; ; ) {
      const batch = await store.readAll(after, PAGE);
      const inWindow = batch.filter((e) => e.position <= hi);
      part.push(...inWindow.filter(matches));
      if (inWindow.length < batch.length || batch.length < PAGE) break;
      after = batch[batch.length - 1]!.position;
    }
    found = [...part, ...found];
    hi = lo;
    window *= 2;
  }
  return found.slice(-o.lines);
}

/** Prints the tail (and, following, every new event) and resolves when done or aborted. */
export async function tailEvents(store: EventStore, o: TailOptions): Promise<{ printed: number }> {
  let printed = 0;
  const print = (events: readonly StoredEvent[]): void => {
    for (const e of events) {
      const view = auditEvent(e);
      o.write(o.json ? JSON.stringify(view) : formatEvent(view));
      printed++;
    }
  };
  const scanFrom = async (after: number): Promise<number> => {
    for (let cursor = after; ; ) {
      const page = await scanEvents(store, {
        ...(o.stream !== undefined ? { stream: o.stream } : {}),
        ...(o.types ? { types: o.types } : {}),
        after: cursor,
        limit: PAGE,
      });
      print(page.events);
      cursor = page.last;
      if (page.next === null || o.signal?.aborted) return cursor;
    }
  };

  let cursor: number;
  if (o.after !== undefined) {
    cursor = await scanFrom(o.after);
  } else {
    cursor = await store.headPosition();
    print(await lastEvents(store, o, cursor));
  }
  if (!o.follow) return { printed };
  const pollMs = o.pollMs ?? 250;
  while (!o.signal?.aborted) {
    await sleep(pollMs, o.signal);
    if (o.signal?.aborted) break;
    cursor = await scanFrom(cursor);
  }
  return { printed };
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

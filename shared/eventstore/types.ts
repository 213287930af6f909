import type { EventEnvelope, StoredEvent } from '../contracts/envelope.js';

/**
 * Expected state of the aggregate stream before an append:
 * - 'no_stream': the stream must not exist (create-if-absent);
 * - 'any': no check (used for session facts such as ClientConnected);
 * - a number: the stream's current revision as returned by readStream/append.
 *
 * A revision is opaque to callers: JetStream uses the stream sequence of the subject's last
 * message, PostgreSQL the stream's event count. Compare revisions only for equality.
 */
export type ExpectedRevision = 'no_stream' | 'any' | number;

export interface AppendOptions {
  expectedRevision: ExpectedRevision;
}

export interface AppendResult {
  /** Global position of the appended (or, for a duplicate, the originally appended) event. */
  position: number;
  /** The stream's revision after the append; pass it as expectedRevision for the next append. */
  revision: number;
  /** True when an event with the same envelope id was already stored (dedup); nothing was written. */
  duplicate: boolean;
}

export interface ReadStreamOptions {
  /** Only events with a position above this one (a page after the last event the caller saw). Default 0. */
  afterPosition?: number;
  /** At most this many events (the first ones after `afterPosition`). Default: all of them. */
  limit?: number;
}

export interface ReadStreamResult {
  /**
   * Events in stream order, `version` 1..n (a page of them with ReadStreamOptions). Empty when the
   * stream does not exist.
   */
  events: StoredEvent[];
  /** The stream's revision (also for a page: that of its last event, not the page's); null when the stream does not exist. */
  revision: number | null;
}

export interface SubscribeOptions {
  /** Durable subscriber name (JetStream durable consumer name / checkpoint owner). [A-Za-z0-9_-]+ */
  name: string;
  /** Deliver events with position > afterPosition (the caller's committed checkpoint). */
  afterPosition: number;
  /**
   * Called for each event strictly in position order, one at a time. The event counts as
   * delivered (acked) only when the promise resolves; if it rejects, the subscription stops and
   * `onError` is called (a bad event halts the projection loudly; it is never skipped).
   */
  handler: (event: StoredEvent) => Promise<void>;
  onError: (err: unknown) => void;
}

export interface Subscription {
  /** Stops delivery after the in-flight handler (if any) completes. */
  stop(): Promise<void>;
}

/**
 * The event log. Both implementations (JetStream, PostgreSQL) pass the same contract suite in
 * shared/eventstore/contract.ts. Exactly one event per append: NATS 2.9 has no atomic batch.
 */
export interface EventStore {
  readonly kind: 'jetstream' | 'postgres';
  /**
   * Appends one event to `stream` (e.g. `mapping.1001`). Throws WrongExpectedRevisionError
   * when the expectation fails. An event whose envelope id was already appended is not stored
   * again (`duplicate: true`).
   */
  append(stream: string, event: EventEnvelope, options: AppendOptions): Promise<AppendResult>;
  /**
   * The stream's events, or one page of them (`options`), whose cost is that of the page, not of
   * the stream: audit reads of streams that grow without bound (sequences, client sessions).
   */
  readStream(stream: string, options?: ReadStreamOptions): Promise<ReadStreamResult>;
  /**
   * The stream's last event and revision in one round trip (null/null when the stream does not
   * exist). For aggregates whose state is a function of their last event only, such as id
   * sequences, whose streams grow without bound.
   */
  readLastEvent(stream: string): Promise<{ event: StoredEvent | null; revision: number | null }>;
  /** Reads up to `limit` events with position > afterPosition, across all streams, in order. */
  readAll(afterPosition: number, limit: number): Promise<StoredEvent[]>;
  /** The position of the last stored event (0 when empty). */
  headPosition(): Promise<number>;
  subscribe(options: SubscribeOptions): Promise<Subscription>;
  close(): Promise<void>;
}

import { randomUUID } from 'node:crypto';
import type { Actor, EventEnvelope, StoredEvent } from '../contracts/envelope.js';
import { EVENT_SCHEMAS, parseStoredEvent, type DomainEvent } from '../contracts/events.js';
import type { Decider } from '../domain/decider.js';
import { ConflictError } from '../platform/errors.js';
import { WrongExpectedRevisionError } from './errors.js';
import type { EventStore, ExpectedRevision } from './types.js';

/** Who is acting and why; copied into every envelope the command produces. */
export interface CommandMetadata {
  actor: Actor;
  correlationId?: string;
  causationId?: string | null;
  traceparent?: string;
}

export interface HandleCommandResult<State> {
  /** The appended event, or null when the decider decided nothing. */
  event: StoredEvent | null;
  /** State after the command (evolved with the new event). */
  state: State;
  /** Global position of the appended event (or of the stream's last event when nothing was appended). */
  position: number;
  /** Stream revision after the command; null if the stream still does not exist. */
  revision: number | null;
  /** Number of events in the stream (the aggregate version, used for ETags). */
  version: number;
}

export interface AggregateState<State> {
  state: State;
  revision: number | null;
  version: number;
  position: number;
}

export async function loadAggregate<State, Cmd>(
  store: EventStore,
  stream: string,
  decider: Decider<State, Cmd>,
  lastEventOnly = false,
): Promise<AggregateState<State>> {
  if (lastEventOnly) {
    const { event, revision } = await store.readLastEvent(stream);
    const state = event ? decider.evolve(decider.initialState(), parseStoredEvent(event)) : decider.initialState();
    return { state, revision, version: event?.version ?? 0, position: event?.position ?? 0 };
  }
  const { events, revision } = await store.readStream(stream);
  let state = decider.initialState();
  for (const e of events) state = decider.evolve(state, parseStoredEvent(e));
  const last = events[events.length - 1];
  return { state, revision, version: events.length, position: last?.position ?? 0 };
}

export function buildEnvelope(stream: string, event: DomainEvent, meta: CommandMetadata, now: Date = new Date()): EventEnvelope {
  const dot = stream.indexOf('.');
  const id = randomUUID();
  return {
    id,
    type: event.type,
    schema_version: EVENT_SCHEMAS[event.type].version,
    aggregate_type: stream.slice(0, dot),
    aggregate_id: stream.slice(dot + 1),
    occurred_at: now.toISOString(),
    actor: meta.actor,
    correlation_id: meta.correlationId ?? id,
    causation_id: meta.causationId ?? null,
    ...(meta.traceparent ? { trace: { traceparent: meta.traceparent } } : {}),
    data: event.data,
  };
}

export interface HandleCommandOptions {
  /** Retries after a concurrency conflict, re-reading and re-deciding each time. Default 5. */
  maxRetries?: number;
  /** Require the aggregate to be at this version (If-Match); a mismatch is a ConflictError, not retried. */
  expectedVersion?: number;
  /**
   * Fold only the stream's last event (one read, whatever the stream's length). Only for deciders
   * whose state is fully determined by their last event, e.g. id sequences.
   */
  lastEventOnly?: boolean;
}

/**
 * Read → decide → append with the stream's revision as the concurrency check. On a conflict the
 * whole cycle repeats against fresh state, so the decision is always made on the latest facts.
 */
export async function handleCommand<State, Cmd>(
  store: EventStore,
  stream: string,
  decider: Decider<State, Cmd>,
  command: Cmd,
  meta: CommandMetadata,
  options: HandleCommandOptions = {},
): Promise<HandleCommandResult<State>> {
  const maxRetries = options.maxRetries ?? 5;
  for (let attempt = 0; ; attempt++) {
    const current = await loadAggregate(store, stream, decider, options.lastEventOnly ?? false);
    if (options.expectedVersion !== undefined && options.expectedVersion !== current.version) {
      throw new ConflictError('TNX_CONFLICT_VERSION', `${stream} is at version ${current.version}, not ${options.expectedVersion}`);
    }
    const events = decider.decide(command, current.state);
    if (events.length > 1) throw new Error(`decider for ${stream} returned ${events.length} events; at most one is allowed`);
    const domainEvent = events[0];
    if (!domainEvent) return { event: null, ...current };
    const envelope = buildEnvelope(stream, domainEvent, meta);
    const expectedRevision: ExpectedRevision = current.revision ?? 'no_stream';
    try {
      const res = await store.append(stream, envelope, { expectedRevision });
      const stored: StoredEvent = { ...envelope, position: res.position, version: current.version + 1, stream };
      return {
        event: stored,
        state: decider.evolve(current.state, parseStoredEvent(stored)),
        position: res.position,
        revision: res.revision,
        version: current.version + 1,
      };
    } catch (err) {
      if (err instanceof WrongExpectedRevisionError && attempt < maxRetries) continue;
      if (err instanceof WrongExpectedRevisionError) {
        throw new ConflictError('TNX_CONFLICT_RETRIES_EXHAUSTED', `${stream}: too much contention, try again`, { cause: err });
      }
      throw err;
    }
  }
}

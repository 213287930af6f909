import { createHash, randomUUID } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import type { Actor, EventEnvelope, StoredEvent } from '../contracts/envelope.js';
import { EVENT_SCHEMAS, parseStoredEvent, type DomainEvent } from '../contracts/events.js';
import type { Decider } from '../domain/decider.js';
import { ConflictError, PreconditionFailedError } from '../platform/errors.js';
import { WrongExpectedRevisionError } from './errors.js';
import type { EventStore, ExpectedRevision } from './types.js';

/** Who is acting and why; copied into every envelope the command produces. */
export interface CommandMetadata {
  actor: Actor;
  correlationId?: string;
  causationId?: string | null;
  traceparent?: string;
  /**
   * Set when the request carried an Idempotency-Key: envelope ids are derived from it (see
   * envelopeId), so a retried command appends the same ids and the store's dedup returns the
   * original events instead of storing second ones.
   */
  idempotency?: IdempotencyScope;
}

/**
 * One idempotent request. `seed` is secret-free (a hash of the API key id and the key); `appended`
 * counts this request's successful appends per stream, so the n-th append to a stream gets the
 * same id on every retry of the request.
 */
export interface IdempotencyScope {
  readonly seed: string;
  readonly appended: Map<string, number>;
  /**
   * A secret the command generates (an auth code), kept with the request so that a retry after a
   * crash reuses the one whose hash the deduplicated event holds. `make` is called at most once
   * per request key and name.
   */
  secret(name: string, make: () => string): Promise<string>;
}

/** A secret for this command: the request's own on an idempotent retry, else a fresh one. */
export async function commandSecret(meta: CommandMetadata, name: string, make: () => string): Promise<string> {
  return meta.idempotency ? meta.idempotency.secret(name, make) : make();
}

/** A UUID (version 8, RFC 9562 custom) derived from the request seed, the stream and the append's ordinal. */
function derivedId(scope: IdempotencyScope, stream: string): string {
  const n = scope.appended.get(stream) ?? 0;
  const h = createHash('sha256').update(`tunnox-envelope-v1|${scope.seed}|${stream}|${n}`).digest();
  h[6] = (h[6]! & 0x0f) | 0x80;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

/** Records a successful append to `stream` (the next one gets the next derived id). */
export function noteAppended(meta: CommandMetadata, stream: string): void {
  const scope = meta.idempotency;
  if (scope) scope.appended.set(stream, (scope.appended.get(stream) ?? 0) + 1);
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
  const id = meta.idempotency ? derivedId(meta.idempotency, stream) : randomUUID();
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
  /**
   * Before each retry, wait a random time up to this many ms times the attempt number (capped at
   * 8): contenders on one hot aggregate then spread out instead of colliding again at once.
   */
  retryBackoffMs?: number;
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
      throw new PreconditionFailedError('TNX_PRECONDITION_FAILED', `${stream} is at version ${current.version}, not ${options.expectedVersion}`);
    }
    let events: readonly DomainEvent[];
    try {
      events = decider.decide(command, current.state);
    } catch (err) {
      // A retried idempotent request whose first attempt was stored: the decider now refuses
      // what that attempt did (the user it created exists). The original is the answer.
      const own = meta.idempotency ? await findOwnEvent(store, stream, derivedId(meta.idempotency, stream)) : undefined;
      if (!own) throw err;
      noteAppended(meta, stream);
      return originalOutcome(store, stream, decider, own.id, own.position, options);
    }
    if (events.length > 1) throw new Error(`decider for ${stream} returned ${events.length} events; at most one is allowed`);
    const domainEvent = events[0];
    if (!domainEvent) return { event: null, ...current };
    const envelope = buildEnvelope(stream, domainEvent, meta);
    const expectedRevision: ExpectedRevision = current.revision ?? 'no_stream';
    try {
      const res = await store.append(stream, envelope, { expectedRevision });
      noteAppended(meta, stream);
      if (res.duplicate) return await originalOutcome(store, stream, decider, envelope.id, res.position, options);
      const stored: StoredEvent = { ...envelope, position: res.position, version: current.version + 1, stream };
      return {
        event: stored,
        state: decider.evolve(current.state, parseStoredEvent(stored)),
        position: res.position,
        revision: res.revision,
        version: current.version + 1,
      };
    } catch (err) {
      if (err instanceof WrongExpectedRevisionError && attempt < maxRetries) {
        if (options.retryBackoffMs) await delay(Math.random() * options.retryBackoffMs * Math.min(attempt + 1, 8));
        continue;
      }
      if (err instanceof WrongExpectedRevisionError) {
        throw new ConflictError('TNX_CONFLICT_RETRIES_EXHAUSTED', `${stream}: too much contention, try again`, { cause: err });
      }
      throw err;
    }
  }
}

async function findOwnEvent(store: EventStore, stream: string, id: string): Promise<StoredEvent | undefined> {
  const { events } = await store.readStream(stream);
  return events.find((e) => e.id === id);
}

/**
 * The outcome of an append the store recognised as a duplicate (a retried idempotent request whose
 * first attempt was stored): the original event, and the state with it, not the event decided now
 * (which may differ: a sequence would have decided the next id).
 */
async function originalOutcome<State, Cmd>(
  store: EventStore,
  stream: string,
  decider: Decider<State, Cmd>,
  eventId: string,
  position: number,
  options: HandleCommandOptions,
): Promise<HandleCommandResult<State>> {
  const [original] = await store.readAll(position - 1, 1);
  if (!original || original.id !== eventId || original.stream !== stream) {
    throw new Error(`${stream}: the store reported event ${eventId} as a duplicate at position ${position}, but it is not there`);
  }
  if (options.lastEventOnly) {
    const { revision } = await store.readLastEvent(stream);
    return {
      event: original,
      state: decider.evolve(decider.initialState(), parseStoredEvent(original)),
      position,
      revision,
      version: original.version,
    };
  }
  const current = await loadAggregate(store, stream, decider);
  return { event: original, state: current.state, position, revision: current.revision, version: current.version };
}

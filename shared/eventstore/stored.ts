import { EnvelopeSchema, type EventEnvelope, type StoredEvent } from '../contracts/envelope.js';
import { EVENT_SCHEMAS, isEventType } from '../contracts/events.js';
import { findUnstorableText, type TextProblem } from '../contracts/text.js';
import { CorruptEventError, InvalidStreamNameError, UnstorableEventError } from './errors.js';
import type { ReadStreamOptions } from './types.js';

// Tokens are NATS-subject safe so both stores accept exactly the same names: `mapping.1001`.
const STREAM_NAME = /^[^\s.*>]+(\.[^\s.*>]+)*$/;

export function assertStreamName(stream: string): void {
  if (!STREAM_NAME.test(stream)) throw new InvalidStreamNameError(stream);
}

/**
 * The one check both stores run before an append: an envelope that could not be projected would,
 * once appended, halt the projector (and every command that loads its stream) at it on every
 * start, so it is refused before anything is written. Refused are:
 * - text PostgreSQL cannot hold (shared/contracts/text.ts), anywhere in data or metadata, keys
 *   and values: the PostgreSQL log would refuse it, and JetStream would store it;
 * - an envelope whose metadata fails EnvelopeSchema (a non-UUID id, an occurred_at that is not an
 *   ISO time, a missing actor...): projections write these into typed columns;
 * - for a known type (EVENT_SCHEMAS), a schema_version other than the one this build reads, or a
 *   payload that fails the type's schema: exactly what parseStoredEvent would throw on when reading.
 *
 * An unknown type is stored. It is what a newer writer appends during a rolling upgrade, before
 * this node runs the build that knows it; refusing it here would fail that writer's requests on
 * old nodes, whereas a projector that meets it halts loudly and names it (and `tunnox ctl events
 * skip` exists for an event that can never be projected). Our own writers cannot produce one:
 * deciders return DomainEvent, whose type is an EventType.
 *
 * The envelope is only inspected: zod builds a parsed copy that is discarded, so the store writes
 * exactly what the caller gave (unknown data keys included, which readers' schemas strip). It is
 * checked in memory, before JSON.stringify; the schemas use only JSON types, so the stored form
 * reads back the same. Cost: one walk over the envelope and one zod parse of a small object.
 */
export function assertStorable(event: EventEnvelope): void {
  const type = typeof event.type === 'string' ? event.type : '?';
  const problem = findUnstorableText(event) ?? findSchemaProblem(event) ?? findEnvelopeProblem(event);
  if (problem) throw new UnstorableEventError(type, problem.path, problem.reason);
}

function findEnvelopeProblem(event: EventEnvelope): TextProblem | null {
  const parsed = EnvelopeSchema.safeParse(event);
  if (parsed.success) return null;
  const issue = parsed.error.issues[0]!;
  return { path: pathOf(issue.path), reason: `is not a valid envelope field: ${issue.message}` };
}

function findSchemaProblem(event: EventEnvelope): TextProblem | null {
  if (typeof event.type !== 'string' || !isEventType(event.type)) return null;
  const spec = EVENT_SCHEMAS[event.type];
  if (event.schema_version !== spec.version) {
    return {
      path: 'schema_version',
      reason: `is ${JSON.stringify(event.schema_version) ?? 'absent'}; this build reads version ${spec.version} only`,
    };
  }
  const parsed = spec.schema.safeParse(event.data);
  if (parsed.success) return null;
  const issue = parsed.error.issues[0]!;
  const more = parsed.error.issues.length - 1;
  return {
    path: pathOf(['data', ...issue.path]),
    reason: `does not match its schema: ${issue.message}${more > 0 ? ` (and ${more} more)` : ''}`,
  };
}

/** `data.extra[0].k`, the same spelling findUnstorableText uses. */
function pathOf(segments: readonly PropertyKey[]): string {
  let path = '';
  for (const s of segments) path += typeof s === 'number' ? `[${s}]` : path ? `.${String(s)}` : String(s);
  return path;
}

/**
 * Builds a StoredEvent from a decoded envelope. The structural check is deliberately shallow:
 * payloads are validated per event type by parseStoredEvent, but an envelope without an id or type
 * would poison every reader, so it is refused here.
 */
export function toStoredEvent(raw: unknown, position: number, version: number, stream: string): StoredEvent {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new CorruptEventError(position, 'envelope is not a JSON object');
  }
  const envelope = raw as EventEnvelope;
  if (typeof envelope.id !== 'string' || typeof envelope.type !== 'string') {
    throw new CorruptEventError(position, 'envelope has no string id/type');
  }
  return { ...envelope, position, version, stream };
}

/** ReadStreamOptions checked and defaulted; a page that is not a whole number is a programming error. */
export function pageOf(options: ReadStreamOptions): { afterPosition: number; limit: number | undefined } {
  const afterPosition = options.afterPosition ?? 0;
  const { limit } = options;
  if (!Number.isSafeInteger(afterPosition) || afterPosition < 0) throw new RangeError(`readStream: afterPosition ${afterPosition} is not a position`);
  if (limit !== undefined && (!Number.isSafeInteger(limit) || limit < 1)) throw new RangeError(`readStream: limit ${limit} is not a positive whole number`);
  return { afterPosition, limit };
}

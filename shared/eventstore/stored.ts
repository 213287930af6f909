import type { EventEnvelope, StoredEvent } from '../contracts/envelope.js';
import { findUnstorableText } from '../contracts/text.js';
import { CorruptEventError, InvalidStreamNameError, UnstorableEventError } from './errors.js';

// Tokens are NATS-subject safe so both stores accept exactly the same names: `mapping.1001`.
const STREAM_NAME = /^[^\s.*>]+(\.[^\s.*>]+)*$/;

export function assertStreamName(stream: string): void {
  if (!STREAM_NAME.test(stream)) throw new InvalidStreamNameError(stream);
}

/**
 * The one check both stores run before an append: an envelope whose text PostgreSQL cannot hold
 * (shared/contracts/text.ts) would be refused by the PostgreSQL log and, in JetStream, be stored
 * and then halt the projector at it on every start. Covers data and metadata, keys and values.
 */
export function assertStorable(event: EventEnvelope): void {
  const problem = findUnstorableText(event);
  if (problem) throw new UnstorableEventError(typeof event.type === 'string' ? event.type : '?', problem.path, problem.reason);
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

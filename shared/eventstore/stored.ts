import type { EventEnvelope, StoredEvent } from '../contracts/envelope.js';
import { CorruptEventError, InvalidStreamNameError } from './errors.js';

// Tokens are NATS-subject safe so both stores accept exactly the same names: `mapping.1001`.
const STREAM_NAME = /^[^\s.*>]+(\.[^\s.*>]+)*$/;

export function assertStreamName(stream: string): void {
  if (!STREAM_NAME.test(stream)) throw new InvalidStreamNameError(stream);
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

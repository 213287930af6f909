import { InfrastructureError, TunnoxError } from '../platform/errors.js';

/** The stream's revision was not the expected one (someone else appended first). */
export class WrongExpectedRevisionError extends TunnoxError {
  constructor(stream: string, expected: string, options?: { cause?: unknown }) {
    super('TNX_EVENTSTORE_WRONG_REVISION', `stream ${stream}: expected revision ${expected} did not match`, {
      ...options,
      details: { stream, expected },
    });
  }
}

export class EventStoreUnavailableError extends InfrastructureError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('TNX_EVENTSTORE_UNAVAILABLE', message, options);
  }
}

/** A stream name that cannot be an aggregate stream (`<aggregate>.<id>`, no spaces or wildcards). */
export class InvalidStreamNameError extends TunnoxError {
  constructor(stream: string) {
    super('TNX_EVENTSTORE_INVALID_STREAM', `invalid event stream name ${JSON.stringify(stream)}`, { details: { stream } });
  }
}

/** A stored event could not be decoded. Never skipped: readers halt on it loudly. */
export class CorruptEventError extends TunnoxError {
  constructor(position: number, reason: string, options?: { cause?: unknown }) {
    super('TNX_EVENTSTORE_CORRUPT_EVENT', `event at position ${position} is corrupt: ${reason}`, {
      ...options,
      details: { position },
    });
  }
}

/** The backing JetStream stream exists with a configuration this store cannot use safely. */
export class EventStoreMisconfiguredError extends InfrastructureError {
  constructor(message: string) {
    super('TNX_EVENTSTORE_MISCONFIGURED', message);
  }
}

/**
 * The event could never be projected: it holds text no reader can store (NUL, a lone surrogate),
 * or it is of a known type with another schema_version or a payload that fails the type's schema.
 * Appended, it would halt every projection at it for good, so both stores refuse it before
 * writing (shared/eventstore/stored.ts). `path` names the offending value (`data.client_id`).
 */
export class UnstorableEventError extends TunnoxError {
  readonly path: string;
  constructor(type: string, path: string, reason: string) {
    super('TNX_EVENTSTORE_UNSTORABLE_EVENT', `${type} refused: ${path} ${reason}`, { details: { type, path } });
    this.path = path;
  }
}

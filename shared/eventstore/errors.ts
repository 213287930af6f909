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

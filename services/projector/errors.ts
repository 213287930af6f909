import { TunnoxError } from '../../shared/platform/errors.js';

/**
 * The stored event cannot be projected: unknown type, unsupported schema version or a payload that
 * fails its schema. The projection halts on it rather than skipping a fact (DESIGN.md section 6).
 */
export class BadEventError extends TunnoxError {
  constructor(projection: string, position: number, type: string, options?: { cause?: unknown }) {
    super('TNX_PROJECTION_BAD_EVENT', `projection ${projection}: cannot parse ${type} at position ${position}`, {
      ...options,
      details: { projection, position, type },
    });
  }
}

/** A projection stopped on an error; its checkpoint stays before the event that failed. */
export class ProjectionHaltedError extends TunnoxError {
  /**
   * @param checkpoint the committed position, which stays put
   * @param failedAt the event that could not be projected (null when the subscription itself failed)
   */
  constructor(projection: string, checkpoint: number, failedAt: number | null, options?: { cause?: unknown }) {
    const where = failedAt === null ? '' : ` at position ${failedAt}`;
    super('TNX_PROJECTION_HALTED', `projection ${projection} halted${where}; checkpoint stays at ${checkpoint}`, {
      ...options,
      details: { projection, checkpoint, failedAt },
    });
  }
}

/**
 * Base error with a stable machine-readable code (`TNX_<AREA>_<WHAT>`).
 * Codes are part of the public contract (API problem objects, CLI exit messages): never rename one.
 */
export class TunnoxError extends Error {
  readonly code: string;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: string, message: string, options?: { cause?: unknown; details?: Record<string, unknown> }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.details = options?.details;
  }
}

/** A command was rejected by a decider: the caller asked for something the current state forbids. */
export class DomainError extends TunnoxError {}

/** The aggregate was not found (no stream, or deleted). */
export class NotFoundError extends TunnoxError {}

/** Optimistic concurrency check failed and retries were exhausted, or If-Match did not match. */
export class ConflictError extends TunnoxError {}

/** Input failed validation; `field` names the offending field (dot path). */
export class ValidationError extends TunnoxError {
  readonly field: string;
  constructor(field: string, message: string) {
    super('TNX_VALIDATION_FAILED', message, { details: { field } });
    this.field = field;
  }
}

/** The caller's precondition (If-Match: the aggregate version it last saw) no longer holds. */
export class PreconditionFailedError extends ConflictError {}

/** An infrastructure dependency (NATS, PostgreSQL) failed. */
export class InfrastructureError extends TunnoxError {}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

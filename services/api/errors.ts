import type { FastifyReply, FastifyRequest } from 'fastify';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import { UnstorableEventError, WrongExpectedRevisionError } from '../../shared/eventstore/errors.js';
import { ConflictError, DomainError, InfrastructureError, NotFoundError, PreconditionFailedError, TunnoxError, ValidationError } from '../../shared/platform/errors.js';
import { RuleViolationError } from '../../shared/domain/errors.js';
import type { Problem } from './schemas.js';

/** Stable codes produced by the API layer itself (domain codes come from shared/domain/errors.ts). */
export const API_ERRORS = {
  validation: 'TNX_VALIDATION_FAILED',
  unauthorized: 'TNX_AUTH_UNAUTHORIZED',
  routeNotFound: 'TNX_ROUTE_NOT_FOUND',
  badRequest: 'TNX_REQUEST_INVALID',
  unavailable: 'TNX_SERVICE_UNAVAILABLE',
  /** The read-model database or the event log cannot be reached: retry later. */
  storeUnavailable: 'TNX_UNAVAILABLE',
  /** The API key made more requests in the last minute than the server's --api-rate-limit. */
  rateLimited: 'TNX_RATE_LIMITED',
  internal: 'TNX_INTERNAL',
} as const;

const TITLES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  412: 'Precondition Failed',
  413: 'Payload Too Large',
  415: 'Unsupported Media Type',
  422: 'Unprocessable Content',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

export function problem(status: number, code: string, detail: string, extra: Partial<Problem> = {}): Problem {
  return { type: `urn:tunnox:problem:${code}`, title: TITLES[status] ?? 'Error', status, code, detail, ...extra };
}

export function sendProblem(reply: FastifyReply, p: Problem): FastifyReply {
  return reply.code(p.status).type('application/problem+json').send(p);
}

function fieldOf(err: TunnoxError): string | undefined {
  const f = err.details?.['field'];
  return typeof f === 'string' ? f : undefined;
}

/** zod issue → dotted field path; an unknown key names the key itself. */
function validationField(v: { instancePath: string; params: Record<string, unknown> }): string | undefined {
  const path = v.instancePath.replace(/^\//, '').split('/').filter(Boolean).join('.');
  const keys = v.params['keys'];
  if (Array.isArray(keys) && typeof keys[0] === 'string') return path ? `${path}.${keys[0]}` : keys[0];
  return path || undefined;
}

/**
 * Translates every error into a problem object, in one place. Domain and request errors carry
 * their own stable codes; anything else is a 500 whose detail never includes internals (the
 * error itself goes to the log with the request id).
 */
export function toProblem(err: unknown): Problem {
  if (hasZodFastifySchemaValidationErrors(err)) {
    const issues = err.validation.map((v) => {
      const field = validationField(v);
      return { ...(field === undefined ? {} : { field }), message: v.message ?? 'invalid' };
    });
    const first = issues[0];
    const where = (err as { validationContext?: string }).validationContext ?? 'request';
    const field = first?.field;
    return problem(400, API_ERRORS.validation, `${where}${field ? `.${field}` : ''}: ${first?.message ?? 'invalid'}`, {
      ...(field === undefined ? {} : { field }),
      errors: issues,
    });
  }
  if (err instanceof ValidationError) return problem(400, err.code, err.message, { field: err.field });
  if (err instanceof RuleViolationError) {
    return problem(422, err.code, err.message, err.field === undefined ? {} : { field: err.field });
  }
  if (err instanceof NotFoundError) return problem(404, err.code, err.message);
  if (err instanceof PreconditionFailedError) return problem(412, err.code, `${err.message}: GET it again for the current ETag`, { field: 'If-Match' });
  if (err instanceof DomainError || err instanceof ConflictError) {
    const field = fieldOf(err);
    return problem(409, err.code, err.message, field === undefined ? {} : { field });
  }
  if (err instanceof UnstorableEventError) {
    // The schemas refuse such text first; this is the event store's own guard answering for an
    // input the schemas missed. Still the caller's input, never a 500, and nothing was appended.
    const field = err.path.startsWith('data.') ? err.path.slice('data.'.length) : undefined;
    return problem(400, err.code, err.message, field === undefined ? {} : { field });
  }
  if (err instanceof WrongExpectedRevisionError) return problem(409, err.code, 'concurrent modification, retry the request');
  if (err instanceof InfrastructureError) return problem(503, err.code, 'a dependency is unavailable; retry later');
  if (isDatabaseUnavailable(err)) return problem(503, API_ERRORS.storeUnavailable, 'the database is unavailable; retry later');
  if (err instanceof RateLimitedError) return problem(429, API_ERRORS.rateLimited, err.message);
  if (isClientHttpError(err)) {
    // fastify's own request errors (malformed JSON, wrong content type, body too large ...).
    return problem(err.statusCode, API_ERRORS.badRequest, err.message);
  }
  return problem(500, API_ERRORS.internal, 'internal error');
}

/** Thrown by the per-key rate limit (app.ts); its 429 carries Retry-After. */
export class RateLimitedError extends Error {
  readonly statusCode = 429;
}

/** Socket-level errors and the SQLSTATEs PostgreSQL answers when it cannot serve a connection. */
const UNAVAILABLE_ERRNOS = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EPIPE', 'EAI_AGAIN']);
const UNAVAILABLE_SQLSTATES = new Set(['57P01', '57P02', '57P03', '53300', '53400']);

/**
 * The read-model database is down or unreachable (node-postgres passes socket errnos through and
 * PostgreSQL's own codes on `code`; a connection lost mid-query or a pool connect timeout has only
 * its message). Class 08 is "connection exception".
 */
export function isDatabaseUnavailable(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; typeof e === 'object' && e !== null && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && (UNAVAILABLE_ERRNOS.has(code) || UNAVAILABLE_SQLSTATES.has(code) || /^08[0-9A-Z]{3}$/.test(code))) return true;
    const message = (e as { message?: unknown }).message;
    if (typeof message === 'string' && /^(Connection terminated|timeout exceeded when trying to connect)/.test(message)) return true;
    if (e instanceof AggregateError && e.errors.some((x) => isDatabaseUnavailable(x))) return true;
  }
  return false;
}

function isClientHttpError(err: unknown): err is { statusCode: number; message: string } {
  if (typeof err !== 'object' || err === null) return false;
  const status = (err as { statusCode?: unknown }).statusCode;
  return typeof status === 'number' && status >= 400 && status < 500;
}

export function errorHandler(err: unknown, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const p = toProblem(err);
  if (p.status >= 500) request.log.error({ err, code: p.code }, 'request failed');
  else request.log.info({ code: p.code, status: p.status, field: p.field }, 'request refused');
  return sendProblem(reply, p);
}

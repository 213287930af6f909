import type { FastifyRequest } from 'fastify';
import type { IdempotencyScope } from '../../shared/eventstore/command.js';

/** Per-request facts established by hooks, read when the route builds its command metadata. */
export const authenticatedKey = new WeakMap<FastifyRequest, string>();
export const idempotencyScopes = new WeakMap<FastifyRequest, IdempotencyScope>();

import { randomUUID } from 'node:crypto';
import fastifyCors from '@fastify/cors';
import fastifyRateLimit from '@fastify/rate-limit';
import fastifySwagger from '@fastify/swagger';
import fastifySwaggerUi from '@fastify/swagger-ui';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { jsonSchemaTransform, serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import { createAuthHook, requestKeyId } from './auth.js';
import type { ApiDeps } from './deps.js';
import { API_ERRORS, errorHandler, problem, RateLimitedError, sendProblem } from './errors.js';
import { clientsRoutes } from './modules/clients/routes.js';
import { eventsRoutes } from './modules/events/routes.js';
import { healthRoutes } from './modules/health/routes.js';
import { registerIdempotency } from './idempotency.js';
import { eventLogApiKeys } from './apikeys.js';
import { mappingsRoutes } from './modules/mappings/routes.js';
import { nodesRoutes } from './modules/nodes/routes.js';
import { statsRoutes } from './modules/stats/routes.js';
import { usersRoutes } from './modules/users/routes.js';

export type { ApiDeps } from './deps.js';

export const API_PREFIX = '/api/v1';

/** Requests per minute per API key unless the server says otherwise (--api-rate-limit). */
export const DEFAULT_RATE_LIMIT_PER_MINUTE = 6000;

/**
 * - requestMs: the whole request, headers and body, must arrive within it (else 408 and close), so
 *   a client that declares a body and never sends it cannot hold a connection and its handler.
 * - idleMs: a connection on which nothing moves for this long is closed (covers a request that
 *   drips in, and idle keep-alive sockets).
 */
export const API_TIMEOUT_DEFAULTS = { requestMs: 30_000, idleMs: 60_000 } as const;

/**
 * Builds the Management API from its dependencies; never listens (the caller owns listen/close).
 * Commands go to the event store through the command services in shared/domain; queries read the
 * PostgreSQL read models, which only the projector writes.
 */
export async function buildApp(deps: ApiDeps): Promise<FastifyInstance> {
  const requestMs = deps.timeouts?.requestMs ?? API_TIMEOUT_DEFAULTS.requestMs;
  const idleMs = deps.timeouts?.idleMs ?? API_TIMEOUT_DEFAULTS.idleMs;
  const root: FastifyInstance = Fastify({
    // Upcast: fastify is generic over the logger type, and callers expect the default instance type.
    loggerInstance: deps.logger as FastifyBaseLogger,
    genReqId: () => randomUUID(),
    // Bodies are small JSON documents; anything larger is a mistake or an attack.
    bodyLimit: 64 * 1024,
    requestTimeout: requestMs,
    connectionTimeout: idleMs,
    http: {
      headersTimeout: requestMs,
      // Node checks request deadlines only this often (default 30 s): keep the slack small.
      connectionsCheckingInterval: Math.max(100, Math.min(1_000, Math.floor(requestMs / 2))),
    },
  });
  // A POST without a body (disconnect, rotate-auth-code) sent with `content-type: application/json`,
  // as generic API clients and curl helpers do, is a request without a body, not a 400; anything
  // else goes to fastify's own parser (prototype-poisoning checks included).
  const jsonParser = root.getDefaultJsonParser('error', 'error');
  root.removeContentTypeParser('application/json');
  root.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (body === '') return done(null, undefined);
    return jsonParser(request, body as string, done);
  });
  const app = root.withTypeProvider<ZodTypeProvider>();

  if (deps.apiKeys.length === 0) deps.logger.warn('no API key configured: only keys made with `tunnox ctl apikeys create` are accepted');
  const logKeys = eventLogApiKeys(deps.store, deps.apiKeyCacheMs === undefined ? {} : { ttlMs: deps.apiKeyCacheMs });
  const metrics = deps.metrics;
  if (metrics) {
    // onResponse runs for every answered request, refused and failed ones included.
    root.addHook('onResponse', async (request, reply) => {
      metrics.requestAnswered(request.method, request.routeOptions.url ?? 'unmatched', reply.statusCode, reply.elapsedTime / 1000);
    });
  }

  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler((request, reply) =>
    sendProblem(reply, problem(404, API_ERRORS.routeNotFound, `no route ${request.method} ${request.url.split('?')[0]}`)),
  );

  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'Tunnox Management API', version: '1' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
    transform: jsonSchemaTransform,
  });

  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  // The interactive reference (Swagger UI) over the same document; static, no key needed to read it.
  await app.register(fastifySwaggerUi, { routePrefix: '/docs', uiConfig: { deepLinking: true }, staticCSP: true });
  const corsOrigins = deps.corsOrigins ?? [];
  if (corsOrigins.length > 0) {
    await app.register(fastifyCors, {
      origin: corsOrigins.includes('*') ? '*' : corsOrigins,
      methods: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'],
      allowedHeaders: ['authorization', 'content-type', 'idempotency-key', 'if-match', 'traceparent', 'tracestate'],
      exposedHeaders: ['etag', 'location', 'retry-after', 'x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset'],
      maxAge: 600,
    });
  }
  await app.register(healthRoutes, { deps });

  await app.register(
    async (api) => {
      api.addHook('onRequest', createAuthHook(deps.apiKeys, logKeys));
      const perMinute = deps.rateLimitPerMinute ?? DEFAULT_RATE_LIMIT_PER_MINUTE;
      if (perMinute > 0) {
        // After authentication (preHandler), so the bucket is the key's, not the caller's address:
        // every integrator gets its own budget, wherever its requests come from.
        await api.register(fastifyRateLimit, {
          global: true,
          hook: 'preHandler',
          max: perMinute,
          timeWindow: 60_000,
          keyGenerator: (request) => requestKeyId(request),
          errorResponseBuilder: (_request, ctx) => new RateLimitedError(`more than ${ctx.max} requests per minute with this API key; retry in ${ctx.after}`),
        });
      }
      registerIdempotency(api, deps.db, deps.idempotency);
      await api.register(usersRoutes, { deps });
      await api.register(clientsRoutes, { deps });
      await api.register(mappingsRoutes, { deps });
      await api.register(nodesRoutes, { deps });
      await api.register(eventsRoutes, { deps });
      await api.register(statsRoutes, { deps });
    },
    { prefix: API_PREFIX },
  );

  await app.ready();
  return root;
}

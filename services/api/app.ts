import { randomUUID } from 'node:crypto';
import fastifySwagger from '@fastify/swagger';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { jsonSchemaTransform, serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import { createAuthHook } from './auth.js';
import type { ApiDeps } from './deps.js';
import { API_ERRORS, errorHandler, problem, sendProblem } from './errors.js';
import { clientsRoutes } from './modules/clients/routes.js';
import { healthRoutes } from './modules/health/routes.js';
import { mappingsRoutes } from './modules/mappings/routes.js';
import { usersRoutes } from './modules/users/routes.js';

export type { ApiDeps } from './deps.js';

export const API_PREFIX = '/api/v1';

/**
 * Builds the Management API from its dependencies; never listens (the caller owns listen/close).
 * Commands go to the event store through the command services in shared/domain; queries read the
 * PostgreSQL read models, which only the projector writes.
 */
export async function buildApp(deps: ApiDeps): Promise<FastifyInstance> {
  const root: FastifyInstance = Fastify({
    // Upcast: fastify is generic over the logger type, and callers expect the default instance type.
    loggerInstance: deps.logger as FastifyBaseLogger,
    genReqId: () => randomUUID(),
    // Bodies are small JSON documents; anything larger is a mistake or an attack.
    bodyLimit: 64 * 1024,
  });
  const app = root.withTypeProvider<ZodTypeProvider>();

  if (deps.apiKeys.length === 0) deps.logger.warn('no API keys configured: every /api request will be refused');

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
  await app.register(healthRoutes, { deps });

  await app.register(
    async (api) => {
      api.addHook('onRequest', createAuthHook(deps.apiKeys));
      await api.register(usersRoutes, { deps });
      await api.register(clientsRoutes, { deps });
      await api.register(mappingsRoutes, { deps });
    },
    { prefix: API_PREFIX },
  );

  await app.ready();
  return root;
}

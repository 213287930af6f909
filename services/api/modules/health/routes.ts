import { sql } from 'kysely';
import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { ApiDeps } from '../../deps.js';
import { API_ERRORS, problem, sendProblem } from '../../errors.js';
import { ProblemSchema } from '../../schemas.js';

/** Liveness and readiness; no API key (load balancers and orchestrators call them). */
export const healthRoutes: FastifyPluginAsyncZod<{ deps: ApiDeps }> = async (app, { deps }) => {
  app.get(
    '/healthz',
    { schema: { tags: ['health'], summary: 'Liveness: the process answers', response: { 200: z.object({ status: z.literal('ok') }) } } },
    async () => ({ status: 'ok' as const }),
  );

  app.get(
    '/readyz',
    {
      schema: {
        tags: ['health'],
        summary: 'Readiness: the read-model database and the event store answer',
        response: { 200: z.object({ status: z.literal('ready') }), 503: ProblemSchema },
      },
    },
    async (request, reply) => {
      try {
        await sql`select 1`.execute(deps.db);
        await deps.store.headPosition();
        return { status: 'ready' as const };
      } catch (err) {
        request.log.warn({ err }, 'not ready');
        return sendProblem(reply, problem(503, API_ERRORS.unavailable, 'database or event store unavailable'));
      }
    },
  );
};

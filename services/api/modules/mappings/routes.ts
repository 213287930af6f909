import { z } from 'zod';
import { TIERS } from '../../../../shared/domain/account/account.decider.js';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { DOMAIN_ERRORS } from '../../../../shared/domain/errors.js';
import { createMapping, deleteMapping, rotateMappingSecret, updateMapping } from '../../../../shared/domain/mapping/mapping.commands.js';
import { commandMeta } from '../../auth.js';
import type { ApiDeps } from '../../deps.js';
import { problem, sendProblem } from '../../errors.js';
import { waitForProjection } from '../../readYourWrites.js';
import { ClientIdParam, COMMON_PROBLEMS, IfMatchHeader, MappingId, MappingIdParam, ProblemSchema, UserIdParam, etag, ifMatchVersion } from '../../schemas.js';
import { findMapping, listMappings } from './queries.js';
import { DEFAULT_PAGE_SIZE, NextCursor, PageQuery, page } from '../../pagination.js';
import { CreateMappingBody, MappingAccepted, MappingStatus, MappingView, PatchMappingBody, mappingView } from './schemas.js';

const SecretRotated = z.object({
  mapping_id: MappingId,
  /** What the new secret is derived from; never the secret. */
  secret_generation: z.number().int().min(2),
});

export const mappingsRoutes: FastifyPluginAsyncZod<{ deps: ApiDeps }> = async (app, { deps }) => {
  app.post(
    '/mappings',
    {
      schema: {
        tags: ['mappings'],
        summary: 'Create a tcp mapping (client-to-client or public)',
        description:
          'The mapping secret is never returned: agents receive it over their control connection. Fields that do not go together ' +
          'are 422 TNX_MAPPING_INVALID; a public port or local_port already taken is 409. The new mapping is pending until its agents report it running.',
        body: CreateMappingBody,
        response: { 201: MappingView, 202: MappingAccepted, ...COMMON_PROBLEMS, 409: ProblemSchema, 422: ProblemSchema },
      },
    },
    async (request, reply) => {
      const b = request.body;
      const { mappingId, publicPort, position } = await createMapping(
        deps.store,
        {
          userId: b.user_id,
          protocol: b.protocol,
          sourceClientId: b.source_client_id ?? null,
          targetClientId: b.target_client_id,
          targetHost: b.target_host,
          targetPort: b.target_port,
          localHost: b.local_host ?? null,
          localPort: b.local_port ?? null,
          publicPort: b.public_port ?? null,
          idleTimeout: b.idle_timeout ?? null,
          maxConnections: b.max_connections ?? null,
          maxPendingOpens: b.max_pending_opens ?? null,
          publicPortRange: deps.publicPortRange,
          defaultQuota: TIERS[deps.defaultTier ?? 'unlimited'],
        },
        commandMeta(request),
      );
      const location = `/api/v1/mappings/${mappingId}`;
      const row = (await waitForProjection(deps, position)) ? await findMapping(deps.db, mappingId) : undefined;
      if (!row) return reply.code(202).header('location', location).send({ mapping_id: mappingId, public_port: publicPort });
      return reply.code(201).header('location', location).header('etag', etag(row.version)).send(mappingView(row));
    },
  );

  app.get(
    '/mappings/:mapping_id',
    {
      schema: {
        tags: ['mappings'],
        summary: 'Get a mapping (without its secret)',
        params: z.object({ mapping_id: MappingIdParam }),
        response: { 200: MappingView, ...COMMON_PROBLEMS, 404: ProblemSchema },
      },
    },
    async (request, reply) => {
      const row = await findMapping(deps.db, request.params.mapping_id);
      if (!row) return sendProblem(reply, problem(404, DOMAIN_ERRORS.mappingNotFound, `mapping ${request.params.mapping_id} not found`));
      return reply.header('etag', etag(row.version)).send(mappingView(row));
    },
  );

  app.delete(
    '/mappings/:mapping_id',
    {
      schema: {
        tags: ['mappings'],
        summary: 'Delete a mapping (frees its public port or local port)',
        params: z.object({ mapping_id: MappingIdParam }),
        headers: IfMatchHeader,
        response: {
          204: z.null().describe('Deleted, and the read model no longer shows it'),
          202: z.object({ mapping_id: MappingId }).describe('Deleted; the read model has not caught up yet'),
          ...COMMON_PROBLEMS,
          404: ProblemSchema,
          409: ProblemSchema,
          412: ProblemSchema,
        },
      },
    },
    async (request, reply) => {
      const mappingId = request.params.mapping_id;
      const { position } = await deleteMapping(
        deps.store,
        { mappingId, expectedVersion: ifMatchVersion(request.headers['if-match']) },
        commandMeta(request),
      );
      if (!(await waitForProjection(deps, position))) return reply.code(202).send({ mapping_id: mappingId });
      return reply.code(204).send(null);
    },
  );

  app.patch(
    '/mappings/:mapping_id',
    {
      schema: {
        tags: ['mappings'],
        summary: 'Enable or disable a mapping, or point it at another target; pushed live to its agents and edges',
        description:
          'Records MappingUpdated (nothing when nothing changes). Disabling closes the public listener and resets running tunnels at every edge; ' +
          'a new target_host/target_port applies to tunnels opened from then on. 200 with the mapping once the read model shows it, 202 if it has not caught up yet.',
        params: z.object({ mapping_id: MappingIdParam }),
        headers: IfMatchHeader,
        body: PatchMappingBody,
        response: { 200: MappingView, 202: MappingAccepted, ...COMMON_PROBLEMS, 404: ProblemSchema, 409: ProblemSchema, 412: ProblemSchema, 422: ProblemSchema },
      },
    },
    async (request, reply) => {
      const mappingId = request.params.mapping_id;
      const b = request.body;
      const { position, publicPort } = await updateMapping(
        deps.store,
        { mappingId, enabled: b.enabled, targetHost: b.target_host, targetPort: b.target_port, expectedVersion: ifMatchVersion(request.headers['if-match']) },
        commandMeta(request),
      );
      const row = (await waitForProjection(deps, position)) ? await findMapping(deps.db, mappingId) : undefined;
      if (!row) return reply.code(202).send({ mapping_id: mappingId, public_port: publicPort });
      return reply.header('etag', etag(row.version)).send(mappingView(row));
    },
  );

  app.post(
    '/mappings/:mapping_id/rotate-secret',
    {
      schema: {
        tags: ['mappings'],
        summary: "Replace the mapping's secret: its agents are pushed the new one, the old one stops opening tunnels (running tunnels go on)",
        description:
          'Records the next secret generation (MappingSecretRotated); the secret is derived from it by the edges and never stored or returned. ' +
          '200 once the read model shows the new generation, 202 if it has not caught up yet.',
        params: z.object({ mapping_id: MappingIdParam }),
        headers: IfMatchHeader,
        response: {
          200: SecretRotated.describe('Rotated, and the read model shows it'),
          202: SecretRotated.describe('Rotated; the read model has not caught up yet'),
          ...COMMON_PROBLEMS,
          404: ProblemSchema,
          409: ProblemSchema,
          412: ProblemSchema,
        },
      },
    },
    async (request, reply) => {
      const mappingId = request.params.mapping_id;
      const { position, generation } = await rotateMappingSecret(
        deps.store,
        { mappingId, expectedVersion: ifMatchVersion(request.headers['if-match']) },
        commandMeta(request),
      );
      const body = { mapping_id: mappingId, secret_generation: generation };
      if (!(await waitForProjection(deps, position))) return reply.code(202).send(body);
      return reply.code(200).send(body);
    },
  );

  app.get(
    '/mappings',
    {
      schema: {
        tags: ['mappings'],
        summary: 'List mappings in id order, a page at a time, optionally by user, client (source or target) and status',
        querystring: z.strictObject({
          user_id: UserIdParam.optional(),
          client_id: ClientIdParam.optional(),
          status: MappingStatus.optional(),
          ...PageQuery,
        }),
        response: { 200: z.object({ mappings: z.array(MappingView), next_cursor: NextCursor }), ...COMMON_PROBLEMS },
      },
    },
    async (request) => {
      const { user_id, client_id, status, cursor } = request.query;
      const limit = request.query.limit ?? DEFAULT_PAGE_SIZE;
      const rows = await listMappings(deps.db, { userId: user_id, clientId: client_id, status, after: cursor ?? 0, limit });
      const { items, next_cursor } = page(rows, limit, (m) => m.mapping_id);
      return { mappings: items.map(mappingView), next_cursor };
    },
  );
};

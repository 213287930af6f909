import { z } from 'zod';
import { TIERS } from '../../../../shared/domain/account/account.decider.js';
import type { FastifyReply } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { createManagedClient, disableClient, enableClient, kickClient, renameClient, rotateClientAuthCode } from '../../../../shared/domain/client/client.commands.js';
import { deleteClientAndItsMappings } from '../../../../shared/domain/cascades.js';
import { DOMAIN_ERRORS } from '../../../../shared/domain/errors.js';
import { commandMeta } from '../../auth.js';
import type { ApiDeps } from '../../deps.js';
import { problem, sendProblem } from '../../errors.js';
import { waitForProjection } from '../../readYourWrites.js';
import { IfMatchHeader, ClientId, ClientIdParam, COMMON_PROBLEMS, ProblemSchema, UserIdParam, etag, ifMatchVersion } from '../../schemas.js';
import { findClient, listClients } from './queries.js';
import { DEFAULT_PAGE_SIZE, NextCursor, PageQuery, page } from '../../pagination.js';
import { ClientAccepted, ClientView, CreateClientBody, CreatedClient, PatchClientBody, RotatedAuthCode, clientView } from './schemas.js';

export const clientsRoutes: FastifyPluginAsyncZod<{ deps: ApiDeps }> = async (app, { deps }) => {
  app.post(
    '/clients',
    {
      schema: {
        tags: ['clients'],
        summary: 'Create a managed client (returns its auth code once)',
        body: CreateClientBody,
        response: { 201: CreatedClient, 202: ClientAccepted, ...COMMON_PROBLEMS, 409: ProblemSchema, 422: ProblemSchema },
      },
    },
    async (request, reply) => {
      const { user_id, client_name, client_desc } = request.body;
      const { clientId, authCode, position } = await createManagedClient(
        deps.store,
        {
          userId: user_id,
          clientName: client_name,
          ...(client_desc === undefined ? {} : { clientDesc: client_desc }),
          defaultQuota: TIERS[deps.defaultTier ?? 'unlimited'],
        },
        commandMeta(request),
      );
      const location = `/api/v1/clients/${clientId}`;
      const row = (await waitForProjection(deps, position)) ? await findClient(deps.db, clientId) : undefined;
      if (!row) return reply.code(202).header('location', location).send({ client_id: clientId, auth_code: authCode });
      const { last_seen: _lastSeen, ...view } = clientView(row);
      return reply
        .code(201)
        .header('location', location)
        .header('etag', etag(row.version))
        .send({ ...view, client_type: 'managed' as const, auth_code: authCode });
    },
  );

  app.get(
    '/clients/:client_id',
    {
      schema: {
        tags: ['clients'],
        summary: 'Get a client (never its auth code)',
        params: z.object({ client_id: ClientIdParam }),
        response: { 200: ClientView, ...COMMON_PROBLEMS, 404: ProblemSchema },
      },
    },
    async (request, reply) => {
      const row = await findClient(deps.db, request.params.client_id);
      if (!row) return sendProblem(reply, problem(404, DOMAIN_ERRORS.clientNotFound, `client ${request.params.client_id} not found`));
      return reply.header('etag', etag(row.version)).send(clientView(row));
    },
  );

  /** Answers with the client as the read model shows it once the command is applied (202 + Location if it lags). */
  const answer = async (reply: FastifyReply, clientId: number, position: number) => {
    const location = `/api/v1/clients/${clientId}`;
    const row = (await waitForProjection(deps, position)) ? await findClient(deps.db, clientId) : undefined;
    if (!row) return reply.code(202).header('location', location).send({ client_id: clientId });
    return reply.header('etag', etag(row.version)).send(clientView(row));
  };
  const params = z.object({ client_id: ClientIdParam });

  app.patch(
    '/clients/:client_id',
    {
      schema: {
        tags: ['clients'],
        summary: 'Rename, enable or disable a client (disabling ends its session and revokes its session tokens at every edge)',
        params,
        body: PatchClientBody,
        headers: IfMatchHeader,
        response: { 200: ClientView, 202: z.object({ client_id: ClientIdParam }), ...COMMON_PROBLEMS, 404: ProblemSchema, 412: ProblemSchema },
      },
    },
    async (request, reply) => {
      const clientId = request.params.client_id;
      const { enabled, client_name } = request.body;
      const meta = commandMeta(request);
      // If-Match guards the request's first change; a second one follows it in the same request.
      let expectedVersion = ifMatchVersion(request.headers['if-match']);
      let position = 0;
      if (client_name !== undefined) {
        position = (await renameClient(deps.store, { clientId, clientName: client_name, expectedVersion }, meta)).position;
        expectedVersion = undefined;
      }
      if (enabled !== undefined) {
        const command = enabled ? enableClient : disableClient;
        position = Math.max(position, (await command(deps.store, { clientId, expectedVersion }, meta)).position);
      }
      return answer(reply, clientId, position);
    },
  );

  app.delete(
    '/clients/:client_id',
    {
      schema: {
        tags: ['clients'],
        summary: 'Delete a client: its session ends at once, its auth code and session tokens stop working, its quota slot is freed, and every mapping it is the source or target of is deleted',
        params,
        headers: IfMatchHeader,
        response: {
          204: z.null().describe('Deleted, and the read models no longer show it or its mappings'),
          202: z.object({ client_id: ClientId }).describe('Deleted; the read models have not caught up yet'),
          ...COMMON_PROBLEMS,
          404: ProblemSchema,
          412: ProblemSchema,
        },
      },
    },
    async (request, reply) => {
      const clientId = request.params.client_id;
      const { position } = await deleteClientAndItsMappings(
        deps.store,
        { clientId, expectedVersion: ifMatchVersion(request.headers['if-match']) },
        commandMeta(request),
      );
      if (!(await waitForProjection(deps, position))) return reply.code(202).send({ client_id: clientId });
      return reply.code(204).send(null);
    },
  );

  app.post(
    '/clients/:client_id/disconnect',
    {
      schema: {
        tags: ['clients'],
        summary: 'End the client\'s live session at whichever edge holds it and revoke its session tokens; the agent may log in again with its auth code',
        params,
        response: { 200: ClientView, 202: z.object({ client_id: ClientIdParam }), ...COMMON_PROBLEMS, 404: ProblemSchema },
      },
    },
    async (request, reply) => {
      const clientId = request.params.client_id;
      const { position } = await kickClient(deps.store, { clientId }, commandMeta(request));
      return answer(reply, clientId, position);
    },
  );

  app.post(
    '/clients/:client_id/rotate-auth-code',
    {
      schema: {
        tags: ['clients'],
        summary: 'Issue a new auth code (returned once); the old one and every session token stop working, the live session ends',
        params,
        response: { 200: RotatedAuthCode, ...COMMON_PROBLEMS, 404: ProblemSchema },
      },
    },
    async (request, reply) => {
      const clientId = request.params.client_id;
      const { authCode, position } = await rotateClientAuthCode(deps.store, { clientId }, commandMeta(request));
      await waitForProjection(deps, position);
      return reply.send({ client_id: clientId, auth_code: authCode });
    },
  );

  app.get(
    '/clients',
    {
      schema: {
        tags: ['clients'],
        summary: 'List clients in id order, a page at a time, optionally by user, status and type',
        querystring: z.strictObject({
          user_id: UserIdParam.optional(),
          status: z.enum(['online', 'offline']).optional(),
          type: z.enum(['managed', 'anonymous']).optional(),
          ...PageQuery,
        }),
        response: { 200: z.object({ clients: z.array(ClientView), next_cursor: NextCursor }), ...COMMON_PROBLEMS },
      },
    },
    async (request) => {
      const { user_id, status, type, cursor } = request.query;
      const limit = request.query.limit ?? DEFAULT_PAGE_SIZE;
      const rows = await listClients(deps.db, { userId: user_id, status, type, after: cursor ?? 0, limit });
      const { items, next_cursor } = page(rows, limit, (c) => c.client_id);
      return { clients: items.map(clientView), next_cursor };
    },
  );
};

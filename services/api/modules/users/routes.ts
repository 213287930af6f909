import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { createUser } from '../../../../shared/domain/user/user.commands.js';
import { DOMAIN_ERRORS } from '../../../../shared/domain/errors.js';
import { commandMeta } from '../../auth.js';
import type { ApiDeps } from '../../deps.js';
import { problem, sendProblem } from '../../errors.js';
import { waitForProjection } from '../../readYourWrites.js';
import { COMMON_PROBLEMS, IfMatchHeader, ProblemSchema, UserId, UserIdParam, etag, ifMatchVersion } from '../../schemas.js';
import { findUser, listUsers } from './queries.js';
import { DEFAULT_PAGE_SIZE, NextCursor, PageQuery, page } from '../../pagination.js';
import { CreateUserBody, PatchUserBody, PutQuotaBody, QuotaView, UserAccepted, UserView, userView } from './schemas.js';
import { TIERS, type AccountState } from '../../../../shared/domain/account/account.decider.js';
import { loadAccount, resolveQuota, setQuota } from '../../../../shared/domain/account/account.commands.js';
import { loadUser, updateUser } from '../../../../shared/domain/user/user.commands.js';
import { deleteUserAndEverything } from '../../../../shared/domain/cascades.js';

export const usersRoutes: FastifyPluginAsyncZod<{ deps: ApiDeps }> = async (app, { deps }) => {
  app.post(
    '/users',
    {
      schema: {
        tags: ['users'],
        summary: 'Create a user',
        body: CreateUserBody,
        response: { 201: UserView, 202: UserAccepted, ...COMMON_PROBLEMS, 409: ProblemSchema, 422: ProblemSchema },
      },
    },
    async (request, reply) => {
      const { tier, ...fields } = request.body;
      const quota = TIERS[tier ?? deps.defaultTier ?? 'unlimited'];
      const { userId, position } = await createUser(deps.store, { ...fields, quota }, commandMeta(request));
      const location = `/api/v1/users/${userId}`;
      const row = (await waitForProjection(deps, position)) ? await findUser(deps.db, userId) : undefined;
      if (!row) return reply.code(202).header('location', location).send({ user_id: userId });
      return reply.code(201).header('location', location).header('etag', etag(row.version)).send(userView(row));
    },
  );

  app.get(
    '/users/:user_id',
    {
      schema: {
        tags: ['users'],
        summary: 'Get a user',
        params: z.object({ user_id: UserIdParam }),
        response: { 200: UserView, ...COMMON_PROBLEMS, 404: ProblemSchema },
      },
    },
    async (request, reply) => {
      const row = await findUser(deps.db, request.params.user_id);
      if (!row) return sendProblem(reply, problem(404, DOMAIN_ERRORS.userNotFound, `user ${request.params.user_id} not found`));
      return reply.header('etag', etag(row.version)).send(userView(row));
    },
  );

  app.get(
    '/users',
    {
      schema: {
        tags: ['users'],
        summary: 'List users in id order, a page at a time',
        querystring: z.strictObject(PageQuery),
        response: { 200: z.object({ users: z.array(UserView), next_cursor: NextCursor }), ...COMMON_PROBLEMS },
      },
    },
    async (request) => {
      const limit = request.query.limit ?? DEFAULT_PAGE_SIZE;
      const { items, next_cursor } = page(await listUsers(deps.db, { after: request.query.cursor ?? 0, limit }), limit, (u) => u.user_id);
      return { users: items.map(userView), next_cursor };
    },
  );

  const quotaView = (userId: number, account: AccountState) => ({
    user_id: userId,
    ...(account.opened ? account.quota : TIERS[deps.defaultTier ?? 'unlimited']),
    current_clients: account.clients.length,
    current_mappings: account.mappings.length,
  });
  const userParams = z.object({ user_id: UserIdParam });

  app.get(
    '/users/:user_id/quota',
    {
      schema: {
        tags: ['users'],
        summary: "The user's quota and what it holds now (read from the account aggregate, so always current)",
        params: userParams,
        response: { 200: QuotaView, ...COMMON_PROBLEMS, 404: ProblemSchema },
      },
    },
    async (request, reply) => {
      const userId = request.params.user_id;
      if (!(await loadUser(deps.store, userId)).exists) return sendProblem(reply, problem(404, DOMAIN_ERRORS.userNotFound, `user ${userId} not found`));
      const account = await loadAccount(deps.store, userId);
      return reply.header('etag', etag(account.version)).send(quotaView(userId, account));
    },
  );

  app.put(
    '/users/:user_id/quota',
    {
      schema: {
        tags: ['users'],
        summary: 'Set the user\'s quota: a tier (default unlimited) with any limits overridden (then tier "custom"); lowering it below what the user holds keeps what exists and refuses new ones',
        params: userParams,
        body: PutQuotaBody,
        response: { 200: QuotaView, ...COMMON_PROBLEMS, 404: ProblemSchema },
      },
    },
    async (request, reply) => {
      const userId = request.params.user_id;
      if (!(await loadUser(deps.store, userId)).exists) return sendProblem(reply, problem(404, DOMAIN_ERRORS.userNotFound, `user ${userId} not found`));
      const { tier, ...limits } = request.body;
      const quota = resolveQuota(tier ?? 'unlimited', limits);
      await setQuota(deps.store, { userId, quota }, commandMeta(request));
      const account = await loadAccount(deps.store, userId);
      return reply.header('etag', etag(account.version)).send(quotaView(userId, account));
    },
  );

  app.patch(
    '/users/:user_id',
    {
      schema: {
        tags: ['users'],
        summary: 'Change a user\'s username (unique regardless of case) or email',
        params: userParams,
        headers: IfMatchHeader,
        body: PatchUserBody,
        response: { 200: UserView, 202: UserAccepted, ...COMMON_PROBLEMS, 404: ProblemSchema, 409: ProblemSchema, 412: ProblemSchema },
      },
    },
    async (request, reply) => {
      const userId = request.params.user_id;
      const { position } = await updateUser(
        deps.store,
        { userId, ...request.body, expectedVersion: ifMatchVersion(request.headers['if-match']) },
        commandMeta(request),
      );
      const row = (await waitForProjection(deps, position)) ? await findUser(deps.db, userId) : undefined;
      if (!row) return reply.code(202).header('location', `/api/v1/users/${userId}`).send({ user_id: userId });
      return reply.header('etag', etag(row.version)).send(userView(row));
    },
  );

  app.delete(
    '/users/:user_id',
    {
      schema: {
        tags: ['users'],
        summary: 'Delete a user with every client and mapping it has (cascades caused by UserDeleted); its username is free again',
        params: userParams,
        headers: IfMatchHeader,
        response: {
          204: z.null().describe('Deleted, and the read models no longer show it'),
          202: z.object({ user_id: UserId }).describe('Deleted; the read models have not caught up yet'),
          ...COMMON_PROBLEMS,
          404: ProblemSchema,
          412: ProblemSchema,
        },
      },
    },
    async (request, reply) => {
      const userId = request.params.user_id;
      const { position } = await deleteUserAndEverything(
        deps.store,
        { userId, expectedVersion: ifMatchVersion(request.headers['if-match']) },
        commandMeta(request),
      );
      if (!(await waitForProjection(deps, position))) return reply.code(202).send({ user_id: userId });
      return reply.code(204).send(null);
    },
  );
};

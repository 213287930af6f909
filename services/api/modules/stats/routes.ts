import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { DOMAIN_ERRORS } from '../../../../shared/domain/errors.js';
import type { ApiDeps } from '../../deps.js';
import { problem, sendProblem } from '../../errors.js';
import { COMMON_PROBLEMS, ClientIdParam, MappingIdParam, ProblemSchema, Timestamp, UserIdParam, iso } from '../../schemas.js';
import { findClient } from '../clients/queries.js';
import { findUser } from '../users/queries.js';
import { clientCounts, mappingCounts, userCount } from './queries.js';

// Stats: counts from the read models, now. Traffic (bytes, connections over time) comes from the
// usage stream once it exists; nothing here pretends to measure it.

const Count = z.number().int().nonnegative();
const ClientCountsView = z.object({ total: Count, online: Count, offline: Count, managed: Count, anonymous: Count, disabled: Count });
const MappingCountsView = z.object({
  total: Count,
  public: Count,
  client_to_client: Count,
  enabled: Count,
  disabled: Count,
  by_status: z.object({ pending: Count, active: Count, error: Count, disabled: Count }),
});

const SystemStats = z.object({
  users: Count,
  clients: ClientCountsView,
  mappings: MappingCountsView,
  events: z.object({ head: Count.describe("the event log's last position") }),
});
const UserStats = z.object({ user_id: z.number().int(), clients: ClientCountsView, mappings: MappingCountsView });
const ClientStats = z.object({
  client_id: z.number().int(),
  status: z.enum(['online', 'offline']),
  node_id: z.string().nullable(),
  last_seen_at: Timestamp.nullable(),
  mappings: z.object({ as_source: MappingCountsView, as_target: MappingCountsView }),
});
const MappingStats = z.object({
  mapping_id: z.number().int(),
  status: z.enum(['pending', 'active', 'error', 'disabled']),
  enabled: z.boolean(),
  source: z.object({ client_id: z.number().int(), online: z.boolean(), status: z.enum(['active', 'error']).nullable() }).nullable(),
  target: z.object({ client_id: z.number().int(), online: z.boolean(), status: z.enum(['active', 'error']).nullable() }),
  created_at: Timestamp,
});

export const statsRoutes: FastifyPluginAsyncZod<{ deps: ApiDeps }> = async (app, { deps }) => {
  app.get(
    '/stats',
    { schema: { tags: ['stats'], summary: 'System-wide counts', response: { 200: SystemStats, ...COMMON_PROBLEMS } } },
    async () => {
      const [users, clients, mappings, head] = await Promise.all([userCount(deps.db), clientCounts(deps.db), mappingCounts(deps.db), deps.store.headPosition()]);
      return { users, clients, mappings, events: { head } };
    },
  );

  app.get(
    '/users/:user_id/stats',
    {
      schema: { tags: ['stats'], summary: "A user's clients and mappings, counted", params: z.object({ user_id: UserIdParam }), response: { 200: UserStats, ...COMMON_PROBLEMS, 404: ProblemSchema } },
    },
    async (request, reply) => {
      const userId = request.params.user_id;
      if (!(await findUser(deps.db, userId))) return sendProblem(reply, problem(404, DOMAIN_ERRORS.userNotFound, `user ${userId} not found`));
      const [clients, mappings] = await Promise.all([clientCounts(deps.db, { userId }), mappingCounts(deps.db, { userId })]);
      return { user_id: userId, clients, mappings };
    },
  );

  app.get(
    '/clients/:client_id/stats',
    {
      schema: {
        tags: ['stats'],
        summary: "A client's presence and the mappings it takes part in, counted",
        params: z.object({ client_id: ClientIdParam }),
        response: { 200: ClientStats, ...COMMON_PROBLEMS, 404: ProblemSchema },
      },
    },
    async (request, reply) => {
      const clientId = request.params.client_id;
      const row = await findClient(deps.db, clientId);
      if (!row) return sendProblem(reply, problem(404, DOMAIN_ERRORS.clientNotFound, `client ${clientId} not found`));
      const [asSource, asTarget] = await Promise.all([mappingCounts(deps.db, { clientId, role: 'source' }), mappingCounts(deps.db, { clientId, role: 'target' })]);
      return {
        client_id: clientId,
        status: row.status,
        node_id: row.node_id,
        last_seen_at: row.last_seen_at === null ? null : iso(row.last_seen_at),
        mappings: { as_source: asSource, as_target: asTarget },
      };
    },
  );

  app.get(
    '/mappings/:mapping_id/stats',
    {
      schema: {
        tags: ['stats'],
        summary: "A mapping's state and its two sides' presence",
        params: z.object({ mapping_id: MappingIdParam }),
        response: { 200: MappingStats, ...COMMON_PROBLEMS, 404: ProblemSchema },
      },
    },
    async (request, reply) => {
      const mappingId = request.params.mapping_id;
      const m = await deps.db
        .selectFrom('mappings')
        .select(['mapping_id', 'status', 'enabled', 'source_client_id', 'target_client_id', 'source_status', 'target_status', 'created_at'])
        .where('mapping_id', '=', mappingId)
        .executeTakeFirst();
      if (!m) return sendProblem(reply, problem(404, DOMAIN_ERRORS.mappingNotFound, `mapping ${mappingId} not found`));
      const [source, target] = await Promise.all([
        m.source_client_id === null ? Promise.resolve(undefined) : findClient(deps.db, m.source_client_id),
        findClient(deps.db, m.target_client_id),
      ]);
      return {
        mapping_id: mappingId,
        status: m.status,
        enabled: m.enabled,
        source: m.source_client_id === null ? null : { client_id: m.source_client_id, online: source?.status === 'online', status: m.source_status },
        target: { client_id: m.target_client_id, online: target?.status === 'online', status: m.target_status },
        created_at: iso(m.created_at),
      };
    },
  );
};

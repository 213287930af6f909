import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { scanEvents } from '../../../../shared/eventstore/scan.js';
import type { ApiDeps } from '../../deps.js';
import { DEFAULT_PAGE_SIZE } from '../../pagination.js';
import { COMMON_PROBLEMS } from '../../schemas.js';
import { EventsPage, EventsQuery, eventView } from './schemas.js';

/** The audit trail: read straight from the event log (not a read model), so it is always complete. */
export const eventsRoutes: FastifyPluginAsyncZod<{ deps: ApiDeps }> = async (app, { deps }) => {
  app.get(
    '/events',
    {
      schema: {
        tags: ['events'],
        summary: "The event log in position order, a page at a time: all of it, or one aggregate's events, optionally by type",
        description:
          'Each event is the stored envelope (type, schema version, time, actor, correlation and causation ids, trace) with its payload; ' +
          'secret-like fields are replaced by "[redacted]" and listed in `redacted`. With a type filter one request reads at most 5000 events, ' +
          'so a page may hold fewer than `limit` events, even none, and still have a next_cursor.',
        querystring: EventsQuery,
        response: { 200: EventsPage, ...COMMON_PROBLEMS },
      },
    },
    async (request) => {
      const { aggregate, type, after, limit } = request.query;
      const page = await scanEvents(deps.store, {
        ...(aggregate ? { stream: aggregate.stream } : {}),
        ...(type ? { types: type } : {}),
        after: after ?? 0,
        limit: limit ?? DEFAULT_PAGE_SIZE,
      });
      return { events: page.events.map(eventView), next_cursor: page.next === null ? null : String(page.next) };
    },
  );
};

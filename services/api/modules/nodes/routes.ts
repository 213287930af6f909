import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { ApiDeps } from '../../deps.js';
import { API_ERRORS, problem, sendProblem } from '../../errors.js';
import { COMMON_PROBLEMS, ProblemSchema } from '../../schemas.js';
import { NodeIdParam, NodeList, NodeView, nodeView } from './schemas.js';

export const NODE_ERRORS = { nodeNotFound: 'TNX_NODE_NOT_FOUND' } as const;

/** Live edge nodes, from the node registry (cluster) or the one local edge (standalone). */
export const nodesRoutes: FastifyPluginAsyncZod<{ deps: ApiDeps }> = async (app, { deps }) => {
  const unconfigured = problem(503, API_ERRORS.unavailable, 'this API process has no node registry configured');

  app.get(
    '/nodes',
    {
      schema: {
        tags: ['nodes'],
        summary: 'List the live edge nodes',
        response: { 200: NodeList, ...COMMON_PROBLEMS },
      },
    },
    async (_request, reply) => {
      const nodes = deps.nodes;
      if (!nodes) return sendProblem(reply, unconfigured);
      return { nodes: (await nodes.list()).map(nodeView) };
    },
  );

  app.get(
    '/nodes/:node_id',
    {
      schema: {
        tags: ['nodes'],
        summary: 'Get one live edge node',
        params: z.object({ node_id: NodeIdParam }),
        response: { 200: NodeView, ...COMMON_PROBLEMS, 404: ProblemSchema },
      },
    },
    async (request, reply) => {
      const nodes = deps.nodes;
      if (!nodes) return sendProblem(reply, unconfigured);
      const node = await nodes.get(request.params.node_id);
      if (!node) return sendProblem(reply, problem(404, NODE_ERRORS.nodeNotFound, `node ${request.params.node_id} not found (not registered, or its registration expired)`));
      return nodeView(node);
    },
  );
};

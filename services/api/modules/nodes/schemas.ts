import { z } from 'zod';
import type { NodeInfo } from '../../../../shared/cluster/node-registry.js';
import { Timestamp } from '../../schemas.js';

/**
 * Node ids in URL paths must be canonical (`node-001` … `node-1000`, as nodeIdFor writes them):
 * `node-1`, `NODE-001` or `node-0001` would name the same node with another spelling.
 */
export const NodeIdParam = z
  .string()
  .regex(/^node-(?:00[1-9]|0[1-9][0-9]|[1-9][0-9]{2}|1000)$/, 'must be a node id node-001 … node-1000');

export const NodeView = z.object({
  node_id: z.string(),
  addresses: z.object({
    control: z.string().describe('host:port agents connect to'),
    bridge: z.string().nullable().describe('host:port other edges open bridge streams to; null without a bridge'),
    advertise_host: z.string().nullable().describe('the host this node tells others to use; null when not set'),
  }),
  started_at: Timestamp,
  version: z.string(),
  connected_agents: z.number().int().min(0).describe('agents with a live control session on this node'),
  active_tunnels: z.number().int().min(0).describe('tunnels being piped by this node'),
  heartbeat_at: Timestamp.nullable().describe('when the counts were last reported (every heartbeat)'),
});
export type NodeView = z.infer<typeof NodeView>;

export const NodeList = z.object({ nodes: z.array(NodeView).describe('Live nodes, by node id') });

export function nodeView(n: NodeInfo): NodeView {
  return {
    node_id: n.node_id,
    addresses: { control: n.control_address, bridge: n.bridge_address, advertise_host: n.advertise_host },
    started_at: n.started_at,
    version: n.version,
    connected_agents: n.connected_agents,
    active_tunnels: n.active_tunnels,
    heartbeat_at: n.heartbeat_at,
  };
}

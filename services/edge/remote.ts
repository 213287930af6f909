import type { Duplex } from 'node:stream';
import type { ClientRoutes } from '../../shared/cluster/routes.js';
import { TunnoxError } from '../../shared/platform/errors.js';
import type { Logger } from '../../shared/platform/logger.js';
import { WireErrorCode } from '../../shared/wire/codes.js';
import type { BridgePool } from './bridge/index.js';
import type { RemoteTargets } from './tunnels.js';

export interface BridgedTargetsOptions {
  nodeId: string;
  /** Where each client is connected (watch-fed: a lookup costs no round trip). */
  routes: ClientRoutes;
  /** The bridge address (`host:port`) a node registered, or null when it has none. */
  bridgeAddressOf: (nodeId: string) => Promise<string | null>;
  pool: BridgePool;
  logger: Logger;
}

/**
 * Cluster forwarding for the tunnel broker: a target agent connected to another edge is reached
 * over a pooled bridge stream to that edge. Null (offline) when the route is unknown or names this
 * edge (this edge would hold the session if the route were current), or when the node registered
 * no bridge address.
 */
export function bridgedTargets(o: BridgedTargetsOptions): RemoteTargets {
  const log = o.logger.child({ component: 'bridged-targets' });
  return {
    open(target): Promise<Duplex> | null {
      const entry = o.routes.lookup(target.targetClientId);
      if (!entry || entry.route.node_id === o.nodeId) return null;
      const targetNodeId = entry.route.node_id;
      return o.bridgeAddressOf(targetNodeId).then((address) => {
        if (!address) {
          log.warn({ targetNodeId, targetClientId: target.targetClientId }, 'the target agent\'s edge has no bridge address');
          throw new TunnoxError(WireErrorCode.TunnelTargetOffline, `edge ${targetNodeId} serves no bridge`);
        }
        return o.pool.open(address, { targetNodeId, tunnelId: target.tunnelId, mappingId: target.mappingId, targetClientId: target.targetClientId });
      });
    },
  };
}

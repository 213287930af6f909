import type { Test } from 'tap';
import { BridgePool } from '../../services/edge/bridge/index.js';
import type { RunningEdge } from '../../services/edge/index.js';
import { bridgedTargets } from '../../services/edge/remote.js';
import { EdgeRoutes } from '../../services/edge/routes.js';
import { ClientRoutes } from '../../shared/cluster/routes.js';
import { silentLogger } from '../../shared/platform/logger.js';
import { createTestNats } from '../../shared/testkit/nats.js';
import { createWorld, type World } from './world.js';

export const CLUSTER_SECRET = 'cluster-secret-for-tests-0123456789';

export interface BridgedEdges {
  /** The world; its edge is edge A (node-001, public ports on 127.0.0.1). */
  w: World;
  /** Edge B (node-002, public ports on 127.0.0.2). */
  b: RunningEdge;
  /** Each edge's own view of the routes bucket. */
  routesA: ClientRoutes;
  routesB: ClientRoutes;
}

/**
 * Two in-process edges on one NATS (routes bucket) and one event log and view, each serving the
 * gRPC bridge and reaching the other's agents through it, as two cluster edges do.
 */
export async function bridgedEdges(t: Test): Promise<BridgedEdges> {
  const tn = await createTestNats();
  const bucket = `${tn.streamName}_routes`;
  const routesA = await ClientRoutes.open({ nc: tn.nc, bucket, logger: silentLogger() });
  const routesB = await ClientRoutes.open({ nc: tn.nc, bucket, logger: silentLogger() });
  const poolA = new BridgePool({ nodeId: 'node-001', secret: CLUSTER_SECRET });
  const poolB = new BridgePool({ nodeId: 'node-002', secret: CLUSTER_SECRET });
  t.teardown(async () => {
    poolA.close();
    poolB.close();
    await routesA.close();
    await routesB.close();
    await tn.cleanup();
  });
  const edges = new Map<string, RunningEdge>();
  const bridgeAddressOf = async (nodeId: string): Promise<string | null> => {
    const port = edges.get(nodeId)?.bridgePort;
    return port ? `127.0.0.1:${port}` : null;
  };
  const w = await createWorld(t, {
    routes: new EdgeRoutes({ routes: routesA, nodeId: 'node-001', logger: silentLogger() }),
    bridge: { secret: CLUSTER_SECRET, host: '127.0.0.1', port: 0, remote: bridgedTargets({ nodeId: 'node-001', routes: routesA, bridgeAddressOf, pool: poolA, logger: silentLogger() }) },
  });
  edges.set('node-001', w.edge);
  const b = await w.peerEdge('node-002', {
    // Every edge opens every public port: edge B on another loopback address.
    publicHost: '127.0.0.2',
    routes: new EdgeRoutes({ routes: routesB, nodeId: 'node-002', logger: w.logger }),
    bridge: { secret: CLUSTER_SECRET, host: '127.0.0.1', port: 0, remote: bridgedTargets({ nodeId: 'node-002', routes: routesB, bridgeAddressOf, pool: poolB, logger: w.logger }) },
  });
  edges.set('node-002', b);
  return { w, b, routesA, routesB };
}

import t from 'tap';
import type { AgentFatalError } from '../../services/client/index.js';
import { EdgeRoutes } from '../../services/edge/routes.js';
import { ClientRoutes } from '../../shared/cluster/routes.js';
import { silentLogger } from '../../shared/platform/logger.js';
import { createTestNats } from '../../shared/testkit/nats.js';
import { createWorld, eventually } from './world.js';

/**
 * Two in-process edges sharing one NATS routes bucket (and one edge view of the credentials): a
 * client's second login on the other edge replaces the first across edges, as a second login on
 * the same edge does.
 */
t.test('a second login of the same client on another edge closes the first session as replaced', async (t) => {
  const tn = await createTestNats();
  const bucket = `${tn.streamName}_routes`;
  const logger = silentLogger();
  const routesA = await ClientRoutes.open({ nc: tn.nc, bucket, logger });
  const routesB = await ClientRoutes.open({ nc: tn.nc, bucket, logger });
  const edgeRoutesA = new EdgeRoutes({ routes: routesA, nodeId: 'node-001', logger });
  const edgeRoutesB = new EdgeRoutes({ routes: routesB, nodeId: 'node-002', logger });
  t.teardown(async () => {
    await routesA.close();
    await routesB.close();
    await tn.cleanup();
  });

  const w = await createWorld(t, { routes: edgeRoutesA });
  const edgeB = await w.peerEdge('node-002', { routes: edgeRoutesB });

  const user = await w.user();
  const creds = await w.client(user);
  const fatalA: AgentFatalError[] = [];
  const readyA: string[] = [];
  let replacedAt = 0;
  w.agent({ ...creds, onFatal: (e) => (replacedAt = Date.now()) && fatalA.push(e), onReady: (info) => readyA.push(info.nodeId) });
  await eventually(() => readyA.length === 1, 'first agent online on edge A');
  t.same(readyA, ['node-001']);
  await eventually(async () => (await routesB.get(creds.clientId))?.route.node_id === 'node-001', 'route names edge A');

  const fatalB: AgentFatalError[] = [];
  const readyB: string[] = [];
  let readyBAt = 0;
  w.agent({ ...creds, server: `127.0.0.1:${edgeB.controlPort}`, onFatal: (e) => fatalB.push(e), onReady: (info) => (readyBAt = Date.now()) && readyB.push(info.nodeId) });
  await eventually(() => readyB.length === 1, 'second agent online on edge B');
  t.same(readyB, ['node-002']);

  // Generous bound: this is about the session being closed, not about how fast.
  await eventually(() => fatalA.length === 1, 'the first agent told it was replaced');
  t.equal(fatalA[0]!.code, 'TNX_AGENT_REPLACED', 'closed with SessionCloseReason.Replaced');
  t.comment(`first agent told ${replacedAt - readyBAt} ms after the second was online (informational)`);
  await eventually(() => w.edge.stats().sessions === 0, 'edge A dropped the session');
  t.equal(edgeB.stats().sessions, 1, 'edge B keeps the new session');
  t.same(fatalB, [], 'the new login is untouched');

  await edgeRoutesA.settled();
  const route = await routesA.get(creds.clientId);
  t.equal(route?.route.node_id, 'node-002', 'the route names edge B after edge A\'s logout');
  t.equal(edgeRoutesA.size, 0);
  t.equal(edgeRoutesB.size, 1);
});

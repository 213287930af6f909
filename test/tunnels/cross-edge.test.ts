import { randomBytes } from 'node:crypto';
import { createServer, type AddressInfo } from 'node:net';
import t from 'tap';
import { freePort } from '../../shared/net/listen.js';
import { bridgedEdges } from './cluster.js';
import { canConnect, eventually, sha, startTargetService, visit, visitOutcome } from './world.js';

/**
 * Two in-process edges on one NATS (routes bucket) and one event log, each serving the gRPC
 * bridge: a tunnel whose target agent sits on the other edge crosses the bridge, for a
 * client-to-client mapping (source agent on edge A, target agent on edge B) and for a public
 * mapping entered through edge A. Bytes are compared by SHA-256; a reset at the target end
 * arrives at the visitor as a reset.
 */
t.test('tunnels whose target agent is on another edge cross the bridge', async (t) => {
  const { w, b: edgeB, routesA, routesB } = await bridgedEdges(t);
  t.ok(w.edge.bridgePort && edgeB.bridgePort, 'both edges serve the bridge');

  const user = await w.user();
  const source = await w.client(user);
  const target = await w.client(user);
  const sourceAgent = w.agent({ ...source });
  w.agent({ ...target, server: `127.0.0.1:${edgeB.controlPort}` });
  await eventually(() => routesA.lookup(target.clientId)?.route.node_id === 'node-002', 'edge A sees the target agent on edge B');
  await eventually(() => routesB.lookup(source.clientId)?.route.node_id === 'node-001', 'edge B sees the source agent on edge A');

  const service = await startTargetService(t, 'reverse');
  const localPort = await freePort();
  const c2c = await w.mapping({ userId: user, sourceClientId: source.clientId, targetClientId: target.clientId, targetPort: service.port, localPort });
  await eventually(() => sourceAgent.listeningPorts().get(c2c.mappingId) === localPort, 'source agent listening');

  const payloads = Array.from({ length: 5 }, () => randomBytes(8 * 1024 * 1024));
  const answers = await Promise.all(payloads.map((p) => visit(localPort, p)));
  answers.forEach((a, i) => t.equal(sha(a), sha(Buffer.from(payloads[i]!).reverse()), `client-to-client across edges, visitor ${i}: 8 MiB each way, byte-exact`));

  const pub = await w.mapping({ userId: user, targetClientId: target.clientId, targetPort: service.port });
  const port = pub.publicPort!;
  await eventually(() => canConnect(port), 'public port open on edge A');
  const publicPayloads = Array.from({ length: 3 }, () => randomBytes(8 * 1024 * 1024));
  const publicAnswers = await Promise.all(publicPayloads.map((p) => visit(port, p)));
  publicAnswers.forEach((a, i) => t.equal(sha(a), sha(Buffer.from(publicPayloads[i]!).reverse()), `public mapping entered through edge A, target on edge B, visitor ${i}: byte-exact`));

  // A target service that resets mid-stream: the reset crosses the target agent, edge B, the
  // bridge and edge A, and the visitor sees a reset, never a clean (truncated) end.
  const resetter = createServer((s) => {
    s.on('error', () => undefined);
    s.write(randomBytes(256 * 1024), () => setTimeout(() => s.resetAndDestroy(), 50));
  });
  await new Promise<void>((r) => resetter.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => resetter.close(() => r())));
  const resetPort = await freePort();
  const broken = await w.mapping({ userId: user, sourceClientId: source.clientId, targetClientId: target.clientId, targetPort: (resetter.address() as AddressInfo).port, localPort: resetPort });
  await eventually(() => sourceAgent.listeningPorts().get(broken.mappingId) === resetPort, 'source agent listening for the resetting service');
  const outcome = await visitOutcome(resetPort, Buffer.from('hello'));
  t.ok(outcome.reset, `a reset at the target arrives as a reset across the bridge (after ${outcome.received.length} bytes)`);

  t.equal(edgeB.stats().sessions, 1, 'edge B held the target agent\'s session throughout');
  t.equal(w.edge.stats().sessions, 1, 'edge A held the source agent\'s session throughout');
});

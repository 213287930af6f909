import t, { type Test } from 'tap';
import { EdgeDialer } from '../../shared/transport/dial.js';
import { parseEdgeUrl } from '../../shared/transport/url.js';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { startEdge, type RunningEdge } from '../../services/edge/index.js';
import type { AgentFatalError, RunningAgent } from '../../services/client/index.js';
import { dialTunnel } from '../../services/client/tunnel.js';
import { createLogger } from '../../shared/platform/logger.js';
import { AgentFeature, WireErrorCode } from '../../shared/wire/codes.js';
import { encodeMessage } from '../../shared/wire/messages.js';
import { PROTOCOL_VERSION, PacketType } from '../../shared/wire/packets.js';
import { heldTransfer, startTransferTarget } from '../e2e/harness.js';
import { bridgedEdges } from './cluster.js';
import { TEST_EDGE_TRANSPORT, canConnect, createWorld, eventually, freePort, sha, startTargetService, TEST_MAPPING_KEY, visit, WirePeer, type World } from './world.js';

/**
 * Failover and drain with real agents and two in-process edges on one event log and one view
 * (the same-edge tunnel path on each; crossing edges is cross-edge.test.ts). Edge A is the world's
 * (node-001, public ports on 127.0.0.1), edge B is node-002 (public ports on 127.0.0.2). Agents
 * are given [A, B] and start with A. "At once, not after a backoff" is shown with a reconnect
 * backoff far longer than the test may take: an agent that waited would never get there.
 */

const MiB = 1024 * 1024;
const NO_BACKOFF_WITHIN_TEST = { reconnectMinMs: 120_000, reconnectMaxMs: 240_000 };

async function twoEdges(t: Test): Promise<{ w: World; b: RunningEdge; servers: string[] }> {
  const w = await createWorld(t);
  const b = await startEdge({ store: w.store, view: w.view, logger: w.logger, nodeId: 'node-002', controlHost: '127.0.0.1', controlPort: 0, ...TEST_EDGE_TRANSPORT, publicHost: '127.0.0.2', mappingKey: TEST_MAPPING_KEY });
  t.teardown(() => b.stop());
  return { w, b, servers: [w.edgeAddress, `127.0.0.1:${b.controlPort}`] };
}

/** Source agent → target agent → service, client-to-client, plus a public mapping to the same service. */
async function mapped(w: World, servers: string[], targetPort: number, extra: Parameters<World['agent']>[0] = {}) {
  const user = await w.user();
  const a = await w.client(user);
  const b = await w.client(user);
  const localPort = await freePort();
  const c2c = await w.mapping({ userId: user, sourceClientId: a.clientId, targetClientId: b.clientId, targetPort, localPort });
  const pub = await w.mapping({ userId: user, targetClientId: b.clientId, targetPort, publicPort: await freePort() });
  const fatal: AgentFatalError[] = [];
  const options = { server: servers, serverStart: 'first' as const, onFatal: (e: AgentFatalError) => fatal.push(e), ...extra };
  const source = w.agent({ ...a, ...options });
  const target = w.agent({ ...b, ...options });
  await eventually(() => source.listeningPorts().get(c2c.mappingId) === localPort && target.status().configVersion !== undefined, 'mappings ready');
  return { source, target, localPort, publicPort: pub.publicPort!, fatal, user, a, b };
}

const onNode = (agents: RunningAgent[], nodeId: string) => agents.every((a) => a.status().connected && a.status().nodeId === nodeId);

async function roundTrip(t: Test, host: string, port: number, what: string): Promise<void> {
  const payload = randomBytes(MiB + 11);
  t.equal(sha(await visit(port, payload, host)), sha(Buffer.from(payload).reverse()), what);
}

/** A logger whose lines are kept (and shown to `onLine`), for asserting on what was said and in which order. */
function capture(onLine: (line: Record<string, unknown>) => void = () => undefined): { logger: ReturnType<typeof createLogger>; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const text of chunk.toString('utf8').split('\n')) {
        if (!text) continue;
        const line = JSON.parse(text) as Record<string, unknown>;
        lines.push(line);
        onLine(line);
      }
      done();
    },
  });
  return { logger: createLogger({ level: 'info' }, sink), lines };
}

/** A server that takes handshakes and refuses each with a retryable code, recording each connection in `events`. */
async function refusingEdge(t: Test, name: string, events: string[]): Promise<string> {
  const server: Server = createServer((s) => {
    events.push(name);
    s.on('error', () => undefined);
    s.once('data', () => s.end(encodeMessage(PacketType.HandshakeResp, { ok: false, error: { code: WireErrorCode.EdgeDraining, message: 'try another' } })));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return `tcp://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

t.test('an agent given two edges fails over when its edge stops; its mappings work on the other', async (t) => {
  const { w, servers } = await twoEdges(t);
  const service = await startTargetService(t, 'reverse');
  const { source, target, localPort, publicPort, fatal } = await mapped(w, servers, service.port);
  t.ok(onNode([source, target], 'node-001'), 'both agents start on the first edge of their list');
  await roundTrip(t, '127.0.0.1', localPort, 'client-to-client through edge A');
  await roundTrip(t, '127.0.0.1', publicPort, 'public port of edge A');

  await w.edge.stop();
  await eventually(() => onNode([source, target], 'node-002'), 'both agents on edge B');
  t.equal(source.status().server, servers[1], 'the agent reports the edge it is on');
  t.equal(source.listeningPorts().get([...source.listeningPorts().keys()][0]!), localPort, 'the source listener was kept across the failover');
  await roundTrip(t, '127.0.0.1', localPort, 'client-to-client through edge B');
  await roundTrip(t, '127.0.0.2', publicPort, 'public port of edge B');
  t.same(fatal, []);
});

t.test('an agent whose first edges are down or refuse connects to the next one, without backoff within a round', async (t) => {
  const { w, b } = await twoEdges(t);
  const events: string[] = [];
  const dead = `127.0.0.1:${await freePort()}`;
  const refusing = await refusingEdge(t, 'refused', events);
  const user = await w.user();
  const c = await w.client(user);
  const agent = w.agent({ ...c, server: [dead, refusing, `127.0.0.1:${b.controlPort}`], serverStart: 'first', ...NO_BACKOFF_WITHIN_TEST });
  await eventually(() => agent.status().nodeId === 'node-002', 'connected to the third edge of the list');
  t.same(events, ['refused'], 'the refusing edge was tried once, in list order, and then the next one at once');
});

t.test('backoff comes after a whole round of the list has failed, then the round starts again', async (t) => {
  const w = await createWorld(t);
  // One sequence of connections (recorded by the refusing edges as they accept) and backoff
  // sleeps (the agent's 'reconnecting' line): causally ordered, since the agent decides to back
  // off only after the second edge answered.
  const events: string[] = [];
  const { logger } = capture((line) => {
    if (line.msg === 'reconnecting') events.push('backoff');
  });
  const first = await refusingEdge(t, 'first', events);
  const second = await refusingEdge(t, 'second', events);
  const agent = w.agent({ server: `${first},${second}`, serverStart: 'first', logger, reconnectMinMs: 20, reconnectMaxMs: 40 });
  await eventually(() => events.length >= 8, 'two full rounds');
  await agent.stop();
  t.same(events.slice(0, 8), ['first', 'second', 'backoff', 'first', 'second', 'backoff', 'first', 'second']);
});

t.test('drain: agents move to the next edge at once; a running tunnel completes byte-exact through the draining edge; it refuses new connections', async (t) => {
  const { w, servers } = await twoEdges(t);
  const size = 8 * MiB;
  const service = await startTransferTarget(size);
  t.teardown(() => service.close());
  const { source, target, localPort, publicPort, fatal } = await mapped(w, servers, service.port, NO_BACKOFF_WITHIN_TEST);
  t.ok(onNode([source, target], 'node-001'), 'both agents start on edge A');

  const running = heldTransfer(localPort, size / 2);
  await running.started;
  t.equal(w.edge.stats().tunnels, 1, 'the tunnel runs through edge A');
  let drained = false;
  const drain = w.edge.drain(30_000).then(() => (drained = true));

  await eventually(() => onNode([source, target], 'node-002'), 'both agents moved to edge B');
  t.notOk(await canConnect(w.edge.controlPort), 'edge A refuses new control and tunnel connections');
  t.notOk(await canConnect(publicPort), 'edge A\'s public port is closed');
  t.equal(w.edge.stats().sessions, 0, 'edge A serves no agent any more');
  t.equal(w.edge.stats().tunnels, 1, 'the running tunnel still goes through edge A');
  t.notOk(drained, 'the drain waits for it');

  // A new tunnel meanwhile goes through edge B, where the agents are now.
  const other = service.results.size;
  const fresh = heldTransfer(localPort, MiB);
  fresh.release();
  t.equal((await fresh.ended).how, 'end', 'a new tunnel works while edge A still drains');
  t.equal(w.edge.stats().tunnels, 1, 'and did not go through edge A');

  running.release();
  const end = await running.ended;
  t.equal(end.how, 'end', 'the drained tunnel ended cleanly, not with a reset');
  const atService = service.results.get(running.id);
  t.equal(end.received, size, 'the visitor got every byte');
  t.equal(end.sha, atService?.sent, 'visitor received exactly what the service sent (SHA-256, 8 MiB)');
  t.equal(atService?.received, running.sentSha, 'the service received exactly what the visitor sent (SHA-256, 8 MiB)');
  t.equal(service.results.size, other + 2);
  await drain;
  t.ok(drained, 'the drain ends once the tunnel has');
  t.ok(onNode([source, target], 'node-002'));
  t.same(fatal, []);
});

t.test('drain in a cluster: a tunnel bridged into the draining edge completes; the route moves and stays with the other edge', async (t) => {
  const { w, b, routesB } = await bridgedEdges(t);
  const size = 8 * MiB;
  const service = await startTransferTarget(size);
  t.teardown(() => service.close());
  const user = await w.user();
  const src = await w.client(user);
  const tgt = await w.client(user);
  const localPort = await freePort();
  const m = await w.mapping({ userId: user, sourceClientId: src.clientId, targetClientId: tgt.clientId, targetPort: service.port, localPort });
  const target = w.agent({ ...tgt, server: [w.edgeAddress, `127.0.0.1:${b.controlPort}`], serverStart: 'first', ...NO_BACKOFF_WITHIN_TEST });
  const source = w.agent({ ...src, server: `127.0.0.1:${b.controlPort}` });
  await eventually(
    () => source.listeningPorts().get(m.mappingId) === localPort && target.status().configVersion !== undefined && routesB.lookup(tgt.clientId)?.route.node_id === 'node-001',
    'target agent on edge A, source agent on edge B',
  );
  const running = heldTransfer(localPort, size / 2);
  await running.started;
  t.same([w.edge.stats().tunnels, b.stats().tunnels], [1, 1], 'the tunnel crosses from edge B into edge A over the bridge');

  const drain = w.edge.drain(30_000);
  await eventually(() => target.status().nodeId === 'node-002' && routesB.lookup(tgt.clientId)?.route.node_id === 'node-002', 'the target agent and its route moved to edge B');
  const fresh = heldTransfer(localPort, MiB);
  fresh.release();
  t.equal((await fresh.ended).how, 'end', 'a new tunnel reaches the target agent on edge B');

  running.release();
  const end = await running.ended;
  t.equal(end.how, 'end', 'the bridged tunnel through the draining edge ended cleanly');
  t.equal(end.sha, service.results.get(running.id)?.sent, 'visitor received exactly what the service sent (8 MiB)');
  t.equal(service.results.get(running.id)?.received, running.sentSha, 'the service received exactly what the visitor sent (8 MiB)');
  await drain;
  t.equal((await routesB.get(tgt.clientId))?.route.node_id, 'node-002', 'edge A gave up only its own route: the one edge B wrote stays');
});

/**
 * One address in front of several edges, like an L4 load balancer: each connection goes to the
 * first backend that accepts it.
 */
async function balancer(t: Test, backends: () => number[]): Promise<string> {
  const clients = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
    clients.add(client);
    client.once('close', () => clients.delete(client));
    client.on('error', () => undefined);
    const tryNext = (left: number[]): void => {
      const port = left[0];
      if (port === undefined) return void client.destroy();
      const upstream = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
      upstream.once('error', () => tryNext(left.slice(1)));
      upstream.once('connect', () => {
        upstream.on('error', () => client.destroy());
        client.on('close', () => upstream.destroy());
        upstream.on('close', () => client.destroy());
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
      });
    };
    tryNext(backends());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(
    () =>
      new Promise<void>((r) => {
        server.close(() => r());
        for (const c of clients) c.destroy();
      }),
  );
  return `127.0.0.1:${(server.address() as AddressInfo).port}`;
}

t.test('drain behind one load-balanced address: the agent reconnects through it at once, not after a backoff', async (t) => {
  const { w, b } = await twoEdges(t);
  const address = await balancer(t, () => [w.edge.controlPort, b.controlPort]);
  const user = await w.user();
  const c = await w.client(user);
  const agent = w.agent({ ...c, server: address, ...NO_BACKOFF_WITHIN_TEST });
  await eventually(() => agent.status().nodeId === 'node-001', 'on edge A through the balancer');
  const drain = w.edge.drain(10_000);
  await eventually(() => agent.status().nodeId === 'node-002', 'on edge B through the same address');
  t.equal(agent.status().server, address, 'through the one address it was given');
  await drain;
  t.equal(w.edge.stats().sessions, 0, 'edge A drained');
});

t.test('drain: a tunnel still running at the deadline is reset, never ended cleanly', async (t) => {
  const { w, servers } = await twoEdges(t);
  const service = await startTransferTarget(2 * MiB);
  t.teardown(() => service.close());
  const { source, target, localPort, publicPort } = await mapped(w, servers, service.port, NO_BACKOFF_WITHIN_TEST);
  const viaAgent = heldTransfer(localPort, MiB);
  const viaEdge = heldTransfer(publicPort, MiB);
  await Promise.all([viaAgent.started, viaEdge.started]);
  t.equal(w.edge.stats().tunnels, 2);
  const drain = w.edge.drain(300);
  t.match(await viaAgent.ended, { how: 'reset', code: 'ECONNRESET' }, 'client-to-client visitor reset at the deadline');
  t.match(await viaEdge.ended, { how: 'reset', code: 'ECONNRESET' }, 'public visitor reset at the deadline');
  await drain;
  await eventually(() => onNode([source, target], 'node-002'), 'both agents on edge B');
});

t.test('drain with an agent that does not know it: a tunnel already requested still pairs; the agent is told once its tunnel ended', async (t) => {
  const w = await createWorld(t);
  const user = await w.user();
  const b = await w.client(user);
  const publicPort = await freePort();
  const m = await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: 9, publicPort });
  const secretKey = await w.secretOf(m.mappingId);
  // An agent of an older release: no drain feature (only what edges require), so no drain notice
  // while its tunnel runs.
  const agent = await WirePeer.connect(w.edge.controlPort);
  agent.send(PacketType.Handshake, { protocol_version: PROTOCOL_VERSION, client_version: 'old', client_id: b.clientId, auth_code: b.authCode, features: [AgentFeature.TunnelKey] });
  const resp = await agent.next();
  if (resp?.type !== PacketType.HandshakeResp || !resp.body.ok || !resp.body.tunnel_key) throw new Error('login failed');
  const session = { id: resp.body.session_id, tunnelKey: resp.body.tunnel_key };
  const sync = await agent.next();
  if (sync?.type !== PacketType.Command || sync.body.name !== 'config.sync') throw new Error('expected config.sync');
  agent.send(PacketType.CommandResp, { id: sync.body.id, ok: true, applied: { version: sync.body.payload.version, mappings: [{ mapping_id: m.mappingId, role: 'target', ok: true }] } });
  await eventually(() => w.edge.stats().publicListeners === 1, 'public listener');

  const visitor = connect({ host: '127.0.0.1', port: publicPort, allowHalfOpen: true });
  const atVisitor: Buffer[] = [];
  visitor.on('data', (c: Buffer) => atVisitor.push(c));
  const visitorEnded = new Promise<'end' | 'reset'>((resolve) => {
    visitor.once('end', () => resolve('end'));
    visitor.once('error', () => resolve('reset'));
  });
  const upload = randomBytes(300_000);
  visitor.end(upload);
  const request = await agent.next();
  if (request?.type !== PacketType.Command || request.body.name !== 'tunnel.open') throw new Error('expected tunnel.open');
  const tunnelId = request.body.payload.tunnel_id;

  const drain = w.edge.drain(10_000);
  const late = await WirePeer.connect(w.edge.controlPort);
  late.send(PacketType.Handshake, { protocol_version: PROTOCOL_VERSION, client_version: 'test', client_id: b.clientId, auth_code: b.authCode, features: [AgentFeature.TunnelKey] });
  t.match(await late.next(), { type: PacketType.HandshakeResp, body: { ok: false, error: { code: WireErrorCode.EdgeDraining } } }, 'a new session is refused with a retryable code');
  t.notOk(await canConnect(publicPort), 'no new visitors');

  // The requested half arrives after the drain began: it pairs, and the visitor gets its tunnel.
  const half = dialTunnel({
    edge: parseEdgeUrl(`tcp://127.0.0.1:${w.edge.controlPort}`, 8080),
    dialer: new EdgeDialer({ trust: {} }),
    mappingId: m.mappingId,
    secretKey,
    session,
    ticket: request.body.payload.ticket,
    tunnelId,
    role: 'target',
    clientId: b.clientId,
    clockOffsetMs: 0,
    timeoutMs: 5_000,
  });
  const { socket: halfSocket, early } = await half.ready;
  agent.send(PacketType.CommandResp, { id: request.body.id, ok: true });
  const atTarget = [early];
  halfSocket.on('data', (c: Buffer) => atTarget.push(c));
  halfSocket.resume(); // readFirstFrame leaves it paused
  await new Promise<void>((r) => halfSocket.once('end', () => r()));
  t.equal(sha(Buffer.concat(atTarget)), sha(upload), 'the upload arrived whole at the target half');
  const answer = randomBytes(200_000);
  halfSocket.end(answer, () => agent.send(PacketType.TunnelEnd, { tunnel_id: tunnelId, role: 'target' }));
  t.equal(await visitorEnded, 'end', 'its FIN was vouched for on the session the edge kept');
  t.equal(sha(Buffer.concat(atVisitor)), sha(answer), 'the answer arrived whole at the visitor');

  t.match(await agent.next(), { type: PacketType.Command, body: { name: 'session.close', payload: { reason: 'drain' } } }, 'told to reconnect only now');
  await agent.closed;
  await drain;
  t.notOk(await canConnect(w.edge.controlPort), 'control port closed');
});

t.test('saved anonymous credentials: the list is recorded, and any list sharing an edge with it may use them', async (t) => {
  const { w, servers } = await twoEdges(t);
  const dir = await mkdtemp(join(tmpdir(), 'tnx-failover-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const credentialsPath = join(dir, 'credentials.json');
  const first = w.agent({ server: servers.join(','), serverStart: 'first', credentialsPath });
  await eventually(() => first.status().connected && first.clientId, 'registered');
  const clientId = first.clientId;
  await first.stop();
  t.equal(JSON.parse(await readFile(credentialsPath, 'utf8')).server, servers.join(','), 'the server list is saved as given');

  const fatal: AgentFatalError[] = [];
  const second = w.agent({ server: [servers[1]!], credentialsPath, onFatal: (e) => fatal.push(e) });
  await eventually(() => second.status().nodeId === 'node-002', 'the other edge of the list takes them');
  t.equal(second.clientId, clientId, 'same identity, no second registration');
  await second.stop();
  t.equal(JSON.parse(await readFile(credentialsPath, 'utf8')).server, servers[1], 'the file follows the list given now');

  // An older file (one address) still loads, and a list containing that address may use it.
  await writeFile(credentialsPath, JSON.stringify({ server: servers[0], client_id: clientId, auth_code: JSON.parse(await readFile(credentialsPath, 'utf8')).auth_code }));
  const third = w.agent({ server: servers, serverStart: 'first', credentialsPath });
  await eventually(() => third.status().nodeId === 'node-001', 'logged in with the old file');
  t.equal(third.clientId, clientId);
  await third.stop();

  const elsewhere = w.agent({ server: `127.0.0.1:${await freePort()}`, credentialsPath, onFatal: (e) => fatal.push(e) });
  await eventually(() => fatal.length === 1, 'refused');
  t.equal(fatal[0]!.code, 'TNX_AGENT_CREDENTIALS_MISMATCH', 'a list sharing no edge with the saved one never gets them');
  await elsewhere.stop();
});

import t from 'tap';
import { join } from 'node:path';
import { eventually, freePort, metricValue, scrape, scrapeUntil, spawnTunnox, startTransferTarget, tempDir, transfer, type Proc } from './harness.js';
import { startCluster, type EdgeHandle } from './cluster-harness.js';

// GET /metrics of the role processes of a cluster (two edges, an api, a projector) after tunnels
// across the bridge: both edges count them, each by its side; the API its requests and appends.

const SIZE = 256 * 1024;
const ID = 16; // transfer() sends a 16-byte id before its payload
const TRANSFERS = 5;
const API_CALLS = 7;

interface Client {
  client_id: number;
  auth_code: string;
}

t.test('cluster roles: edge, api and projector metrics; a taken metrics port fails the start', async (t) => {
  const dir = await tempDir('tnx-e2e-metrics-cluster');
  t.teardown(() => dir.remove());
  const cluster = await startCluster({ edges: ['127.0.0.1', '127.0.0.2'], metrics: true });
  t.teardown(() => cluster.close());
  const [e1, e2] = cluster.edges as [EdgeHandle, EdgeHandle];
  const apiMetrics = cluster.apiMetrics!;
  const projectorMetrics = cluster.projectorMetrics!;
  t.ok(e1.metrics && e2.metrics && apiMetrics && projectorMetrics, 'every process reports its metrics address');
  t.equal(e2.metrics!.split(':')[0], '127.0.0.2', 'the edge on 127.0.0.2 serves its metrics there');

  const user = (await cluster.api('POST', '/api/v1/users', { username: 'ops', email: 'ops@example.com' })).body.user_id as number;
  const client = async (name: string): Promise<Client> => (await cluster.api('POST', '/api/v1/clients', { user_id: user, client_name: name })).body;
  const src = await client('source');
  const tgt = await client('target');
  const agents: Proc[] = [];
  t.teardown(() => Promise.all(agents.map((a) => a.stop())));
  const agent = (c: Client, edge: EdgeHandle, name: string): void => {
    agents.push(spawnTunnox(['client', '--server', edge.controlAddress, '--client-id', String(c.client_id), '--auth-code', c.auth_code, '--credentials', join(dir.path, `${name}.json`)]));
  };
  agent(src, e1, 'source');
  agent(tgt, e2, 'target');
  for (const [c, e] of [[src, e1], [tgt, e2]] as const) {
    await eventually(`client ${c.client_id} online on ${e.nodeId}`, async () => {
      const r = (await cluster.api('GET', `/api/v1/clients/${c.client_id}`)).body;
      return r.status === 'online' && r.node_id === e.nodeId;
    }, 30_000);
  }
  const service = await startTransferTarget(SIZE);
  t.teardown(() => service.close());
  const localPort = await freePort();
  const c2c = await cluster.api('POST', '/api/v1/mappings', {
    user_id: user, source_client_id: src.client_id, target_client_id: tgt.client_id, protocol: 'tcp', target_host: '127.0.0.1', target_port: service.port, local_port: localPort,
  });
  await eventually('mapping active', async () => (await cluster.api('GET', `/api/v1/mappings/${c2c.body.mapping_id}`)).body.status === 'active', 30_000);
  const results = await Promise.all(Array.from({ length: TRANSFERS }, () => transfer(localPort, SIZE)));
  t.equal(results.filter((r) => r.received === service.results.get(r.id)?.sent).length, TRANSFERS, `${TRANSFERS} transfers across the bridge byte-exact`);

  // The source agent's edge: client tunnels, through its bridge pool to the other edge.
  const m1 = await scrapeUntil(e1.metrics!, 'edge 1 counted the tunnels', (s) => metricValue(s, 'tunnox_edge_tunnels_opened_total', { kind: 'client' }) >= TRANSFERS && metricValue(s, 'tunnox_edge_tunnels_active') === 0);
  t.equal(metricValue(m1, 'tunnox_edge_tunnels_opened_total', { kind: 'client' }), TRANSFERS, `${e1.nodeId}: ${TRANSFERS} client tunnels`);
  t.equal(metricValue(m1, 'tunnox_edge_tunnel_bytes_total', { kind: 'client', direction: 'to_target' }), TRANSFERS * (ID + SIZE), `${e1.nodeId}: bytes to the target`);
  t.equal(metricValue(m1, 'tunnox_edge_tunnel_bytes_total', { kind: 'client', direction: 'to_visitor' }), TRANSFERS * SIZE, `${e1.nodeId}: bytes back`);
  t.equal(metricValue(m1, 'tunnox_edge_agents_connected'), 1, `${e1.nodeId}: one agent`);
  const peer = m1.find((x) => x.name === 'tunnox_bridge_pool_connections')?.labels.peer;
  t.match(peer, /^127\.0\.0\.2:\d+$/, `${e1.nodeId}'s bridge pool has a connection to the other edge`);
  t.ok(metricValue(m1, 'tunnox_bridge_pool_connections', { peer: peer! }) >= 1, 'at least one pooled connection');
  t.equal(metricValue(m1, 'tunnox_bridge_pool_streams'), 0, 'no stream open once the tunnels ended');
  t.ok(m1.some((x) => x.name === 'tunnox_bridge_window_stalls_total' && x.labels.direction === 'send'), 'window stalls are exported');
  t.equal(metricValue(m1, 'tunnox_build_info', { role: 'edge' }), 1);

  // The target agent's edge: the same tunnels arrived over the bridge.
  const m2 = await scrapeUntil(e2.metrics!, 'edge 2 counted the tunnels', (s) => metricValue(s, 'tunnox_edge_tunnels_opened_total', { kind: 'bridge' }) >= TRANSFERS && metricValue(s, 'tunnox_edge_tunnels_active') === 0);
  t.equal(metricValue(m2, 'tunnox_edge_tunnels_opened_total', { kind: 'bridge' }), TRANSFERS, `${e2.nodeId}: ${TRANSFERS} bridged tunnels`);
  t.equal(metricValue(m2, 'tunnox_edge_tunnel_bytes_total', { kind: 'bridge', direction: 'to_target' }), TRANSFERS * (ID + SIZE), `${e2.nodeId}: bytes to the target`);
  t.equal(metricValue(m2, 'tunnox_edge_tunnel_bytes_total', { kind: 'bridge', direction: 'to_visitor' }), TRANSFERS * SIZE, `${e2.nodeId}: bytes back`);
  t.ok(metricValue(m2, 'tunnox_edge_config_push_duration_seconds_count', { outcome: 'applied' }) >= 1, `${e2.nodeId}: config pushes timed`);

  // The API process: N requests on one route; its appends go to JetStream.
  const route = '/api/v1/clients/:client_id';
  const before = metricValue(await scrape(apiMetrics), 'tunnox_api_request_duration_seconds_count', { method: 'GET', route, status_code: '200' });
  for (let i = 0; i < API_CALLS; i++) await cluster.api('GET', `/api/v1/clients/${src.client_id}`);
  const a = await scrape(apiMetrics);
  t.equal(metricValue(a, 'tunnox_api_request_duration_seconds_count', { method: 'GET', route, status_code: '200' }) - before, API_CALLS, `${API_CALLS} more GETs counted`);
  t.ok(metricValue(a, 'tunnox_eventstore_append_duration_seconds_count', { store: 'jetstream', outcome: 'ok' }) >= 4, 'the API timed its JetStream appends');
  t.equal(metricValue(a, 'tunnox_build_info', { role: 'api' }), 1);
  t.notOk(a.some((x) => x.name.startsWith('tunnox_edge_')), 'the API process exports no edge series');

  const p = await scrapeUntil(projectorMetrics, 'projector caught up', (s) => metricValue(s, 'tunnox_projector_lag_events') === 0 && metricValue(s, 'tunnox_projector_position') > 0);
  t.equal(metricValue(p, 'tunnox_projector_lag_seconds', { projection: 'read-models' }), 0, 'projector: no lag');
  t.equal(metricValue(p, 'tunnox_build_info', { role: 'projector' }), 1);

  // Two processes on one metrics port: the second one says so and exits.
  const clash = spawnTunnox(['projector', '--nats', 'nats://127.0.0.1:4222', '--stream', cluster.stream, '--subject-prefix', cluster.prefix, '--database', cluster.databaseUrl, '--metrics-port', projectorMetrics.split(':')[1]!]);
  t.equal(await clash.exited, 1, 'a second process on a taken metrics port exits 1');
  t.ok(clash.lines.some((l) => l.includes('cannot serve metrics on 127.0.0.1:') && l.includes('--metrics-port')), 'and says which flag to change');
});

import t from 'tap';
import { join } from 'node:path';
import {
  eventually,
  freePort,
  metricValue,
  scrape,
  scrapeUntil,
  spawnTunnox,
  startServer,
  startTransferTarget,
  tempDir,
  transfer,
  type Proc,
  type Sample,
} from './harness.js';

// GET /metrics of a real `tunnox server` after real tunnels: the counts must be the bytes and
// tunnels that went through, not merely present. metrics-cluster.test.ts does the role processes.

const SIZE = 256 * 1024;
const ID = 16; // transfer() sends a 16-byte id before its payload
const TRANSFERS = 5;
const API_CALLS = 7;

interface Client {
  client_id: number;
  auth_code: string;
}

t.test('tunnox server: /metrics after tunnels, API calls and a failed tunnel', async (t) => {
  const dir = await tempDir('tnx-e2e-metrics');
  t.teardown(() => dir.remove());
  const metricsPort = await freePort();
  const rangeStart = 20000 + Math.floor(Math.random() * 12000);
  const server = await startServer(
    ['--data-dir', join(dir.path, 'data'), '--public-port-range', `${rangeStart}-${rangeStart + 20}`, '--metrics-port', String(metricsPort)],
    'metrics-e2e-admin-key-0123456789',
  );
  const procs: Proc[] = [];
  t.teardown(async () => {
    for (const p of procs) await p.stop();
    await server.proc.stop();
  });
  const metrics = `127.0.0.1:${metricsPort}`;
  const ready = await server.proc.waitForLog((e) => e.msg === 'tunnox server ready');
  t.equal(ready.metrics, metrics, 'the ready line names the metrics address');

  const user = (await server.api('POST', '/api/v1/users', { username: 'metrics', email: 'metrics@example.com' })).body.user_id as number;
  const client = async (name: string): Promise<Client> => (await server.api('POST', '/api/v1/clients', { user_id: user, client_name: name })).body;
  const src = await client('source');
  const tgt = await client('target');
  const agent = (c: Client, name: string): Proc => {
    const p = spawnTunnox(['client', '--server', `127.0.0.1:${server.controlPort}`, '--client-id', String(c.client_id), '--auth-code', c.auth_code, '--credentials', join(dir.path, `${name}.json`)]);
    procs.push(p);
    return p;
  };
  agent(src, 'source');
  const targetAgent = agent(tgt, 'target');
  for (const c of [src, tgt]) {
    await eventually(`client ${c.client_id} online`, async () => (await server.api('GET', `/api/v1/clients/${c.client_id}`)).body.status === 'online');
  }

  const service = await startTransferTarget(SIZE);
  t.teardown(() => service.close());
  const localPort = await freePort();
  const c2c = await server.api('POST', '/api/v1/mappings', {
    user_id: user, source_client_id: src.client_id, target_client_id: tgt.client_id, protocol: 'tcp', target_host: '127.0.0.1', target_port: service.port, local_port: localPort,
  });
  const pub = await server.api('POST', '/api/v1/mappings', { user_id: user, target_client_id: tgt.client_id, protocol: 'tcp', target_host: '127.0.0.1', target_port: service.port });
  for (const m of [c2c, pub]) {
    await eventually(`mapping ${m.body.mapping_id} active`, async () => (await server.api('GET', `/api/v1/mappings/${m.body.mapping_id}`)).body.status === 'active');
  }
  const publicPort = pub.body.public_port as number;
  // Told by the gauge, not by a probe connection: a probe would be a visitor, and a tunnel, too.
  const base = await scrapeUntil(metrics, 'the public port open', (s) => metricValue(s, 'tunnox_edge_public_listeners') === 1);
  const delta = (s: Sample[], name: string, labels: Record<string, string> = {}): number => metricValue(s, name, labels) - metricValue(base, name, labels);

  const run = async (port: number): Promise<void> => {
    const results = await Promise.all(Array.from({ length: TRANSFERS }, () => transfer(port, SIZE)));
    t.equal(results.filter((r) => r.received === service.results.get(r.id)?.sent).length, TRANSFERS, `${TRANSFERS} transfers through port ${port} byte-exact`);
  };
  await run(localPort);
  await run(publicPort);

  const s = await scrapeUntil(metrics, 'both kinds of tunnel counted and ended', (s) =>
    delta(s, 'tunnox_edge_tunnels_opened_total', { kind: 'public' }) >= TRANSFERS &&
    delta(s, 'tunnox_edge_tunnels_opened_total', { kind: 'client' }) >= TRANSFERS &&
    metricValue(s, 'tunnox_edge_tunnels_active') === 0,
  );
  t.equal(metricValue(base, 'tunnox_edge_tunnels_opened_total', { kind: 'client' }), 0, 'no client tunnel before the transfers');
  for (const kind of ['client', 'public']) {
    t.equal(delta(s, 'tunnox_edge_tunnels_opened_total', { kind }), TRANSFERS, `${kind} tunnels opened: ${TRANSFERS}`);
    t.equal(delta(s, 'tunnox_edge_tunnel_bytes_total', { kind, direction: 'to_target' }), TRANSFERS * (ID + SIZE), `${kind}: bytes to the target = what the visitors sent`);
    t.equal(delta(s, 'tunnox_edge_tunnel_bytes_total', { kind, direction: 'to_visitor' }), TRANSFERS * SIZE, `${kind}: bytes to the visitors = what the service sent`);
  }
  t.equal(metricValue(s, 'tunnox_edge_agents_connected'), 2, 'two agents connected');
  t.equal(metricValue(s, 'tunnox_edge_public_listeners'), 1, 'one public listener');
  t.equal(metricValue(s, 'tunnox_build_info', { role: 'server' }), 1, 'build info names the role');
  t.ok(metricValue(s, 'tunnox_edge_config_push_duration_seconds_count', { outcome: 'applied' }) >= 2, 'config pushes were timed');
  t.ok(metricValue(s, 'tunnox_eventstore_append_duration_seconds_count', { store: 'postgres', outcome: 'ok' }) >= 5, 'appends to the PostgreSQL event log were timed');
  t.ok(metricValue(s, 'process_resident_memory_bytes') > 0, 'the default process metrics are there');
  const caughtUp = await scrapeUntil(metrics, 'projector caught up', (s) => metricValue(s, 'tunnox_projector_lag_events', { projection: 'read-models' }) === 0);
  t.ok(metricValue(caughtUp, 'tunnox_projector_position', { projection: 'read-models' }) > 0, 'projector position is past the events written');
  t.equal(metricValue(caughtUp, 'tunnox_projector_lag_seconds', { projection: 'read-models' }), 0, 'no lag in seconds once caught up');

  // API: N answered requests on one route, plus refusals and a route that does not exist.
  const route = '/api/v1/users/:user_id';
  const before = metricValue(await scrape(metrics), 'tunnox_api_request_duration_seconds_count', { route });
  const statuses: number[] = [];
  for (let i = 0; i < API_CALLS; i++) statuses.push((await server.api('GET', `/api/v1/users/${user}`)).status);
  for (let i = 0; i < 3; i++) statuses.push((await fetch(`${server.apiUrl}/api/v1/users/${user}`)).status);
  statuses.push((await server.api('GET', '/api/v1/no-such-thing')).status);
  t.same(statuses, [...Array(API_CALLS).fill(200), 401, 401, 401, 404], `${API_CALLS} answered, 3 without a key, 1 unknown route`);
  const api = await scrape(metrics);
  t.equal(before, 0, 'the route had no requests before');
  t.equal(metricValue(api, 'tunnox_api_request_duration_seconds_count', { method: 'GET', route, status_code: '200' }), API_CALLS, `${API_CALLS} answered GETs counted under the route pattern`);
  t.equal(metricValue(api, 'tunnox_api_request_duration_seconds_count', { method: 'GET', route, status_code: '401' }), 3, 'the refused ones counted with their status');
  t.equal(metricValue(api, 'tunnox_api_request_duration_seconds_bucket', { method: 'GET', route, status_code: '200', le: '+Inf' }), API_CALLS, 'the +Inf bucket holds them all');
  t.ok(metricValue(api, 'tunnox_api_request_duration_seconds_count', { route: 'unmatched', status_code: '404' }) >= 1, 'an unknown route is counted as unmatched, not by its URL');
  t.notOk(api.some((x) => x.labels.route?.includes(String(user))), 'no raw URL became a label');

  // A visitor while the target agent is away: the tunnel fails, counted by its code.
  await targetAgent.stop();
  await eventually('target offline', async () => (await server.api('GET', `/api/v1/clients/${tgt.client_id}`)).body.status === 'offline');
  await transfer(publicPort, 1024).catch(() => undefined); // reset by the edge
  const failed = await scrapeUntil(metrics, 'failed tunnel counted', (s) => metricValue(s, 'tunnox_edge_tunnels_failed_total') >= 1);
  t.equal(metricValue(failed, 'tunnox_edge_tunnels_failed_total', { code: 'TNX_TUNNEL_TARGET_OFFLINE' }), 1, 'one tunnel failed: target offline');
  t.equal(metricValue(failed, 'tunnox_edge_agents_connected'), 1, 'one agent connected now');
  t.equal(delta(failed, 'tunnox_edge_tunnels_opened_total'), 2 * TRANSFERS, 'a failed tunnel is not an opened one');

  const notFound = await fetch(`http://${metrics}/other`);
  t.equal(notFound.status, 404, 'only /metrics is served there');
  for (const p of procs) await p.stop();
  t.equal(await server.proc.stop(), 0, 'server exits 0 on SIGTERM');
});

import t, { type Test } from 'tap';
import type { FastifyInstance } from 'fastify';
import { createMemoryBus } from '../../shared/bus/memory.js';
import { claimNodeId, kvNodeDirectory, localNodeDirectory, openNodeBucket, type NodeDirectory } from '../../shared/cluster/node-registry.js';
import { PostgresEventStore } from '../../shared/eventstore/postgres.js';
import { silentLogger } from '../../shared/platform/logger.js';
import { createTestDatabase } from '../../shared/testkit/pg.js';
import { createTestNats } from '../../shared/testkit/nats.js';
import { buildApp } from '../../services/api/index.js';
import { createProjectionWaiter } from '../../services/projector/index.js';
import { createWorld, eventually } from '../tunnels/world.js';

const API_KEY = 'test-key-nodes-0123456789';
const AUTH = { authorization: `Bearer ${API_KEY}` };

/** The Management API over a real database, with `nodes` as its node directory. */
async function api(t: Test, nodes: NodeDirectory | undefined) {
  const tdb = await createTestDatabase('tnx_nodes');
  const store = new PostgresEventStore({ db: tdb.db, pool: tdb.pool });
  const bus = createMemoryBus();
  const waiter = createProjectionWaiter({ db: tdb.db, bus });
  const app: FastifyInstance = await buildApp({
    store,
    db: tdb.db,
    waiter,
    logger: silentLogger(),
    apiKeys: [API_KEY],
    publicPortRange: { min: 30000, max: 30009 },
    ...(nodes ? { nodes } : {}),
  });
  t.teardown(async () => {
    await app.close();
    waiter.close();
    await store.close();
    await bus.close();
    await tdb.drop();
  });
  return async (url: string, headers: Record<string, string> = AUTH) => {
    const res = await app.inject({ method: 'GET', url, headers });
    return { status: res.statusCode, json: JSON.parse(res.payload) as any, type: String(res.headers['content-type']) };
  };
}

t.test('GET /api/v1/nodes lists the registry; GET /nodes/{id} reads one, with counts from the heartbeat', async (t) => {
  const tn = await createTestNats();
  t.teardown(() => tn.cleanup());
  const bucket = `${tn.streamName}_nodes`;
  // Generous: a loaded CI machine must not let the entries expire between the claim and the first GET.
  const ttlMs = 5_000;
  const counts = { connected_agents: 3, active_tunnels: 1 };
  const startedAt = new Date().toISOString();
  const first = await claimNodeId({
    nc: tn.nc, bucket, ttlMs, logger: silentLogger(),
    info: { control_address: '127.0.0.1:8080', bridge_address: '127.0.0.1:50052', advertise_host: 'edge1.example.com', started_at: startedAt, version: '1.2.3' },
    stats: () => ({ ...counts }),
  });
  const second = await claimNodeId({
    nc: tn.nc, bucket, ttlMs, logger: silentLogger(),
    info: { control_address: '127.0.0.2:8080', started_at: startedAt, version: '1.2.3' },
  });
  t.teardown(async () => {
    await first.release();
    await second.release();
  });
  const get = await api(t, kvNodeDirectory(await openNodeBucket(tn.nc, bucket, ttlMs)));

  const list = await get('/api/v1/nodes');
  t.equal(list.status, 200);
  t.match(list.json, {
    nodes: [
      {
        node_id: 'node-001',
        addresses: { control: '127.0.0.1:8080', bridge: '127.0.0.1:50052', advertise_host: 'edge1.example.com' },
        started_at: startedAt,
        version: '1.2.3',
        connected_agents: 3,
        active_tunnels: 1,
      },
      { node_id: 'node-002', addresses: { control: '127.0.0.2:8080', bridge: null, advertise_host: null }, connected_agents: 0, active_tunnels: 0 },
    ],
  });
  t.equal(list.json.nodes.length, 2);
  t.ok(!Number.isNaN(Date.parse(list.json.nodes[0].heartbeat_at)), 'heartbeat_at is a timestamp');

  // The next heartbeats carry the new counts.
  counts.connected_agents = 7;
  counts.active_tunnels = 5;
  const one = await eventually(async () => {
    const r = await get('/api/v1/nodes/node-001');
    return r.json.connected_agents === 7 && r;
  }, 'the heartbeat to report the new counts');
  t.equal(one.status, 200);
  t.equal(one.json.active_tunnels, 5);
  t.equal(one.json.node_id, 'node-001');

  const missing = await get('/api/v1/nodes/node-003');
  t.match(missing, { status: 404, type: /application\/problem\+json/, json: { code: 'TNX_NODE_NOT_FOUND' } });
  for (const bad of ['node-1', 'NODE-001', 'node-0001', 'node-000', 'node-1001', 'node-001x', '1']) {
    t.match(await get(`/api/v1/nodes/${bad}`), { status: 400, json: { code: 'TNX_VALIDATION_FAILED' } }, `${bad} is not a canonical node id`);
  }
  t.match(await get('/api/v1/nodes/node-1000'), { status: 404 }, 'node-1000 is a valid id');
  t.match(await get('/api/v1/nodes', {}), { status: 401 }, 'the API key is required');

  await second.release();
  t.same((await get('/api/v1/nodes')).json.nodes.map((n: { node_id: string }) => n.node_id), ['node-001'], 'a released node leaves the list');
  t.match(await get('/api/v1/nodes/node-002'), { status: 404 });
});

t.test('standalone: the list holds the one local edge, with its live counts', async (t) => {
  const w = await createWorld(t);
  const startedAt = new Date().toISOString();
  const get = await api(
    t,
    localNodeDirectory('node-001', { control_address: w.edgeAddress, started_at: startedAt, version: 'test' }, () => ({
      connected_agents: w.edge.stats().sessions,
      active_tunnels: w.edge.stats().tunnels,
    })),
  );
  t.match((await get('/api/v1/nodes')).json, { nodes: [{ node_id: 'node-001', addresses: { control: w.edgeAddress }, connected_agents: 0 }] });
  const user = await w.user();
  const creds = await w.client(user);
  const ready: unknown[] = [];
  w.agent({ ...creds, onReady: (info) => ready.push(info) });
  await eventually(() => ready.length === 1, 'agent online');
  t.match(await get('/api/v1/nodes/node-001'), { status: 200, json: { connected_agents: 1, active_tunnels: 0 } });
  t.match(await get('/api/v1/nodes/node-002'), { status: 404 });
});

t.test('without a node directory the nodes routes say so (503); both are in the OpenAPI document', async (t) => {
  const get = await api(t, undefined);
  t.match(await get('/api/v1/nodes'), { status: 503, json: { code: 'TNX_SERVICE_UNAVAILABLE' } });
  t.match(await get('/api/v1/nodes/node-001'), { status: 503 });
  const doc = await get('/openapi.json', {});
  t.ok(doc.json.paths['/api/v1/nodes']?.get?.responses?.['200'], 'GET /api/v1/nodes is documented');
  const one = doc.json.paths['/api/v1/nodes/{node_id}']?.get;
  t.ok(one?.responses?.['404'], 'GET /api/v1/nodes/{node_id} documents its 404');
  t.match(JSON.stringify(one?.responses?.['200']), /connected_agents/);
});

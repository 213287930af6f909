import t from 'tap';
import { createServer } from 'node:net';
import { createMemoryBus } from '../../shared/bus/memory.js';
import { buildEnvelope } from '../../shared/eventstore/command.js';
import { WrongExpectedRevisionError } from '../../shared/eventstore/errors.js';
import { PostgresEventStore } from '../../shared/eventstore/postgres.js';
import { listen } from '../../shared/net/listen.js';
import { silentLogger } from '../../shared/platform/logger.js';
import { createTestDatabase } from '../../shared/testkit/pg.js';
import { startProjector } from '../projector/index.js';
import { TunnoxMetrics, metricNames, serveMetrics } from './metrics.js';

const actor = { actor: { kind: 'system' as const, id: 'metrics-test' } };

async function value(m: TunnoxMetrics, name: string, labels: Record<string, string> = {}): Promise<number> {
  const metric = m.registry.getSingleMetric(name);
  if (!metric) throw new Error(`${name} is not registered`);
  const { values } = await metric.get();
  return values
    .filter((v) => (v as { metricName?: string }).metricName === undefined || (v as { metricName?: string }).metricName === name)
    .filter((v) => Object.entries(labels).every(([k, want]) => String((v.labels as Record<string, unknown>)[k]) === want))
    .reduce((n, v) => n + v.value, 0);
}

t.test('appends are timed by outcome: ok, duplicate, conflict', async (t) => {
  const tdb = await createTestDatabase('tnx_metrics');
  t.teardown(() => tdb.drop());
  const m = new TunnoxMetrics('api');
  const store = m.instrumentEventStore(new PostgresEventStore({ db: tdb.db, pool: tdb.pool, logger: silentLogger(), pollIntervalMs: 50 }));
  t.teardown(() => store.close());
  t.equal(store.kind, 'postgres', 'the wrapper is the same kind of store');
  const e = buildEnvelope('user.1', { type: 'IdAllocated', data: { sequence: 's', id: 1 } }, actor);
  const first = await store.append('user.1', e, { expectedRevision: 'no_stream' });
  t.equal((await store.append('user.1', e, { expectedRevision: 'any' })).duplicate, true);
  await t.rejects(
    store.append('user.1', buildEnvelope('user.1', { type: 'IdAllocated', data: { sequence: 's', id: 2 } }, actor), { expectedRevision: first.revision + 5 }),
    WrongExpectedRevisionError,
  );
  const h = m.appendDuration;
  const count = async (outcome: string) => {
    const { values } = await h.get();
    return values.find((v) => v.metricName === 'tunnox_eventstore_append_duration_seconds_count' && v.labels.outcome === outcome && v.labels.store === 'postgres')?.value ?? 0;
  };
  t.equal(await count('ok'), 1, 'one ok');
  t.equal(await count('duplicate'), 1, 'one duplicate');
  t.equal(await count('conflict'), 1, 'one conflict');
  await store.append('user.1', buildEnvelope('user.1', { type: 'IdAllocated', data: { sequence: 's', id: 3 } }, actor), { expectedRevision: first.revision });
  t.equal((await store.readStream('user.1')).events.length, 2, 'reads go through to the store');
  t.equal((await store.readStream('user.1', { limit: 1 })).events.length, 1, 'with their options');
});

t.test('projector lag: events behind and the age of the oldest, from a real projector', async (t) => {
  const tdb = await createTestDatabase('tnx_metrics');
  t.teardown(() => tdb.drop());
  const m = new TunnoxMetrics('projector');
  const store = new PostgresEventStore({ db: tdb.db, pool: tdb.pool, logger: silentLogger(), pollIntervalMs: 50 });
  t.teardown(() => store.close());
  const bus = createMemoryBus();
  t.teardown(() => bus.close());
  const projector = await startProjector({ store, db: tdb.db, bus, logger: silentLogger() });
  m.watchProjector(projector, store);
  const append = (id: number, at: Date) =>
    store.append(`user.${id}`, buildEnvelope(`user.${id}`, { type: 'IdAllocated', data: { sequence: 's', id } }, actor, at), { expectedRevision: 'no_stream' });
  await append(1, new Date());
  const deadline = Date.now() + 10_000;
  while (projector.position < 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  await new Promise((r) => setTimeout(r, 1_100)); // past the one-second sample cache
  t.equal(await value(m, 'tunnox_projector_lag_events'), 0, 'caught up: no events behind');
  t.equal(await value(m, 'tunnox_projector_lag_seconds'), 0, 'caught up: no lag');
  t.equal(await value(m, 'tunnox_projector_position', { projection: 'read-models' }), projector.position, 'position as the projector has it');

  // Stopped, it falls behind by what is appended next; the oldest of those is 30 s old.
  await projector.stop();
  await append(2, new Date(Date.now() - 30_000));
  await append(3, new Date());
  await new Promise((r) => setTimeout(r, 1_100));
  t.equal(await value(m, 'tunnox_projector_lag_events'), 2, 'two events behind');
  const lag = await value(m, 'tunnox_projector_lag_seconds');
  t.ok(lag >= 30 && lag < 120, `lag in seconds is the oldest pending event's age (${lag})`);
});

t.test('each role exports its own families; server all of them', async (t) => {
  const names = (role: 'server' | 'api' | 'projector' | 'edge') => metricNames(new TunnoxMetrics(role).registry).filter((n) => n.startsWith('tunnox_'));
  const api = names('api');
  const edge = names('edge');
  const projector = names('projector');
  const server = names('server');
  t.ok(api.includes('tunnox_api_request_duration_seconds') && !api.some((n) => n.startsWith('tunnox_edge_') || n.startsWith('tunnox_projector_')), 'api: API series only');
  t.ok(edge.includes('tunnox_edge_agents_connected') && edge.includes('tunnox_bridge_pool_connections') && !edge.some((n) => n.startsWith('tunnox_api_')), 'edge: edge and bridge series');
  t.ok(projector.includes('tunnox_projector_lag_seconds') && !projector.some((n) => n.startsWith('tunnox_edge_')), 'projector: projector series');
  t.same([...server].sort(), [...new Set([...api, ...edge, ...projector])].sort(), 'server: the union');
  t.same(server.filter((n) => !/^tunnox_[a-z]+(_[a-z]+)+$/.test(n)), [], 'every name is tunnox_<area>_<what>, lower case');
  t.ok(server.filter((n) => n.endsWith('_total')).length >= 5, 'counters end in _total');
});

t.test('GET /metrics only; a taken port is a clear error', async (t) => {
  const m = new TunnoxMetrics('edge');
  const server = await serveMetrics('127.0.0.1', 0, m.registry);
  t.teardown(() => server.close());
  const ok = await fetch(`http://127.0.0.1:${server.port}/metrics`);
  t.equal(ok.status, 200);
  t.match(ok.headers.get('content-type'), /^text\/plain; version=0\.0\.4/, 'Prometheus text format');
  t.match(await ok.text(), /^tunnox_build_info\{version="[^"]+",role="edge"\} 1$/m, 'build info names version and role');
  t.equal((await fetch(`http://127.0.0.1:${server.port}/`)).status, 404);
  t.equal((await fetch(`http://127.0.0.1:${server.port}/metrics`, { method: 'POST' })).status, 404);

  const taken = createServer();
  const { port } = await listen(taken, { host: '127.0.0.1', port: 0 });
  t.teardown(() => new Promise<void>((r) => taken.close(() => r())));
  await t.rejects(serveMetrics('127.0.0.1', port, m.registry), { code: 'TNX_METRICS_LISTEN', message: /cannot serve metrics on 127\.0\.0\.1:\d+: .*--metrics-port/ });
});

import t, { type Test } from 'tap';
import { ClientRoutes, openRouteBucket, type ClientRoute } from '../../shared/cluster/routes.js';
import { silentLogger } from '../../shared/platform/logger.js';
import { createTestNats, type TestNats } from '../../shared/testkit/nats.js';
import { EdgeRoutes } from './routes.js';

const CLIENT = 600_000_321;

async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

interface TestEdge {
  routes: ClientRoutes;
  edge: EdgeRoutes;
  closed: Array<[number, string, string]>;
}

async function edgeOn(t: Test, tn: TestNats, nodeId: string, ttlMs = 10_000, refreshIntervalMs?: number): Promise<TestEdge> {
  const routes = await ClientRoutes.open({ nc: tn.nc, bucket: `${tn.streamName}_routes`, ttlMs, logger: silentLogger() });
  const edge = new EdgeRoutes({ routes, nodeId, logger: silentLogger(), ...(refreshIntervalMs ? { refreshIntervalMs } : {}) });
  const closed: Array<[number, string, string]> = [];
  edge.start({ closeSession: (clientId, sessionId, reason) => closed.push([clientId, sessionId, reason]) });
  t.teardown(async () => {
    await edge.stop();
    await routes.close();
  });
  return { routes, edge, closed };
}

t.test('login writes the route, logout deletes it', async (t) => {
  const tn = await createTestNats();
  t.teardown(() => tn.cleanup());
  const a = await edgeOn(t, tn, 'node-001');
  a.edge.loggedIn({ clientId: CLIENT, sessionId: 's1' }, 3);
  await a.edge.settled();
  t.match(await a.routes.get(CLIENT), { route: { node_id: 'node-001', session_id: 's1', epoch: 3 } });
  a.edge.loggedOut({ clientId: CLIENT, sessionId: 's1' });
  await a.edge.settled();
  t.equal(await a.routes.get(CLIENT), undefined);
  t.equal(a.edge.size, 0);
});

t.test('a logout right after the login does not leave the route behind', async (t) => {
  const tn = await createTestNats();
  t.teardown(() => tn.cleanup());
  const a = await edgeOn(t, tn, 'node-001');
  // Same tick: the delete must wait for the put's revision.
  a.edge.loggedIn({ clientId: CLIENT, sessionId: 's1' });
  a.edge.loggedOut({ clientId: CLIENT, sessionId: 's1' });
  await a.edge.settled();
  t.equal(await a.routes.get(CLIENT), undefined);
});

t.test('a same-edge replacement: the old session logging out keeps the new route', async (t) => {
  const tn = await createTestNats();
  t.teardown(() => tn.cleanup());
  const a = await edgeOn(t, tn, 'node-001');
  const echoed: string[] = [];
  a.routes.watch((c) => c.route && echoed.push(c.route.session_id));
  a.edge.loggedIn({ clientId: CLIENT, sessionId: 's1' });
  // s1's write is on the wire, its echo on the watch will arrive after s2 is held: it must not
  // count as a newer login.
  await new Promise((r) => setImmediate(r));
  // The order the edge uses: the new session's login, then the old one's close.
  a.edge.loggedIn({ clientId: CLIENT, sessionId: 's2' });
  a.edge.loggedOut({ clientId: CLIENT, sessionId: 's1' });
  await a.edge.settled();
  t.match(await a.routes.get(CLIENT), { route: { session_id: 's2' } });
  // The watch is ordered: once s2's echo is in, s1's was handled before it.
  await until(() => echoed.includes('s2'), 'both echoes delivered');
  t.same(echoed, ['s1', 's2']);
  await a.edge.settled();
  t.same(a.closed, [], 'the edge never closes its own newest session');
});

t.test('a login on another edge closes the session here as replaced; its logout keeps the newer route', async (t) => {
  const tn = await createTestNats();
  t.teardown(() => tn.cleanup());
  const a = await edgeOn(t, tn, 'node-001');
  const b = await edgeOn(t, tn, 'node-002');
  a.edge.loggedIn({ clientId: CLIENT, sessionId: 'sa' });
  a.edge.loggedIn({ clientId: CLIENT + 1, sessionId: 'other' });
  await a.edge.settled();
  b.edge.loggedIn({ clientId: CLIENT, sessionId: 'sb' });
  await until(() => a.closed.length === 1, 'edge A told to close its session');
  t.same(a.closed, [[CLIENT, 'sa', 'replaced']]);
  t.equal(a.edge.size, 1, 'only the replaced route was let go');
  // The closed session logs out as usual: nothing must happen to B's route.
  a.edge.loggedOut({ clientId: CLIENT, sessionId: 'sa' });
  await a.edge.settled();
  t.match(await a.routes.get(CLIENT), { route: { node_id: 'node-002', session_id: 'sb' } });
  t.same(b.closed, [], 'the newer login is untouched');
});

t.test('held routes are refreshed and stay; an unrefreshed route ages out with the bucket TTL', async (t) => {
  const tn = await createTestNats();
  t.teardown(() => tn.cleanup());
  const ttlMs = 1_000;
  const a = await edgeOn(t, tn, 'node-001', ttlMs);
  // A route written by an edge that then died (nobody refreshes it).
  const dead: ClientRoute = { node_id: 'node-009', session_id: 'dead', epoch: 0, connected_at: new Date().toISOString() };
  await a.routes.put(CLIENT + 1, dead);
  a.edge.loggedIn({ clientId: CLIENT, sessionId: 'live' });
  await a.edge.settled();
  await until(async () => (await a.routes.get(CLIENT + 1)) === undefined, 'the dead edge\'s route to expire');
  t.equal(a.routes.lookup(CLIENT + 1), undefined, 'the local cache drops it too');
  // Well past another full TTL: the held route must still be there.
  await new Promise((r) => setTimeout(r, ttlMs * 1.5));
  t.match(await a.routes.get(CLIENT), { route: { session_id: 'live' } }, 'the refreshed route stays');
  t.match(a.routes.lookup(CLIENT), { route: { session_id: 'live' } });
  t.same(a.closed, []);
});

t.test('a held route that vanished (aged out during a NATS outage) is written again by the refresher', async (t) => {
  const tn = await createTestNats();
  t.teardown(() => tn.cleanup());
  const a = await edgeOn(t, tn, 'node-001', 10_000, 5_000);
  a.edge.loggedIn({ clientId: CLIENT, sessionId: 's1' });
  await a.edge.settled();
  const kv = await openRouteBucket(tn.nc, `${tn.streamName}_routes`, 10_000);
  await kv.purge(String(CLIENT));
  t.equal(await a.routes.get(CLIENT), undefined);
  await a.edge.refreshAll();
  t.match(await a.routes.get(CLIENT), { route: { node_id: 'node-001', session_id: 's1' } });
  t.same(a.closed, []);
});

t.test('a refresh interval not shorter than the TTL is refused', async (t) => {
  const tn = await createTestNats();
  t.teardown(() => tn.cleanup());
  const routes = await ClientRoutes.open({ nc: tn.nc, bucket: `${tn.streamName}_routes`, ttlMs: 1_000, logger: silentLogger() });
  t.teardown(() => routes.close());
  t.throws(() => new EdgeRoutes({ routes, nodeId: 'node-001', logger: silentLogger(), refreshIntervalMs: 1_000 }), RangeError);
});

import t from 'tap';
import { ClientRoutes, openRouteBucket, type ClientRoute, type ClientRouteChange } from './routes.js';
import { createTestNats } from '../testkit/nats.js';
import { silentLogger } from '../platform/logger.js';

const CLIENT = 600_000_123;

function route(nodeId: string, sessionId: string): ClientRoute {
  return { node_id: nodeId, session_id: sessionId, epoch: 0, connected_at: new Date().toISOString() };
}

async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

t.test('a newer login wins; an old session can neither refresh nor delete it', async (t) => {
  const tn = await createTestNats();
  t.teardown(() => tn.cleanup());
  const bucket = `${tn.streamName}_routes`;
  const a = await ClientRoutes.open({ nc: tn.nc, bucket, ttlMs: 10_000, logger: silentLogger() });
  const b = await ClientRoutes.open({ nc: tn.nc, bucket, ttlMs: 10_000, logger: silentLogger() });
  t.teardown(async () => {
    await a.close();
    await b.close();
  });
  const seenByB: ClientRouteChange[] = [];
  b.watch((c) => seenByB.push(c));

  const r1 = await a.put(CLIENT, route('node-001', 's1'));
  t.equal(a.lookup(CLIENT)?.route.session_id, 's1', 'the writer reads its own write from the cache at once');
  await until(() => b.lookup(CLIENT)?.revision === r1, 'the other process sees the route through its watch');
  t.equal(b.lookup(CLIENT)?.route.node_id, 'node-001');

  const r2 = await b.put(CLIENT, route('node-002', 's2'));
  t.ok(r2 > r1, 'revisions order the logins');
  t.equal(await a.refresh(CLIENT, route('node-001', 's1'), r1), undefined, 'the old session cannot refresh over the newer route');
  t.equal(await a.delete(CLIENT, r1), false, 'the old session cannot delete the newer route');
  t.equal(await a.create(CLIENT, route('node-001', 's1')), undefined, 'create-if-absent refuses while a route exists');
  t.match(await a.get(CLIENT), { clientId: CLIENT, revision: r2, route: { node_id: 'node-002', session_id: 's2' } });
  await until(() => a.lookup(CLIENT)?.revision === r2, 'the newer route reaches the first cache');

  const r3 = await b.refresh(CLIENT, route('node-002', 's2'), r2);
  t.ok(r3 !== undefined && r3 > r2, 'the owner refreshes with its revision');
  t.equal(await b.delete(CLIENT, r3!), true, 'the owner deletes with its revision');
  t.equal(await a.get(CLIENT), undefined);
  await until(() => a.lookup(CLIENT) === undefined, 'the delete reaches the other cache');
  await until(() => seenByB.length >= 4, 'every change reaches the watch listener');
  t.same(
    seenByB.map((c) => [c.route?.session_id, c.revision]),
    [['s1', r1], ['s2', r2], ['s2', r3], [undefined, r3! + 1]],
    'the listener sees every put and the delete, in bucket order',
  );
  t.ok((await a.create(CLIENT, route('node-001', 's4'))) !== undefined, 'after the delete, create-if-absent succeeds');
});

t.test('a process opened later loads the current routes before open() resolves', async (t) => {
  const tn = await createTestNats();
  t.teardown(() => tn.cleanup());
  const bucket = `${tn.streamName}_routes`;
  const a = await ClientRoutes.open({ nc: tn.nc, bucket, ttlMs: 10_000, logger: silentLogger() });
  t.teardown(() => a.close());
  await a.put(CLIENT, route('node-001', 's1'));
  await a.put(CLIENT + 1, route('node-001', 's2'));
  const late = await ClientRoutes.open({ nc: tn.nc, bucket, ttlMs: 10_000, logger: silentLogger() });
  t.teardown(() => late.close());
  t.equal(late.lookup(CLIENT)?.route.session_id, 's1');
  t.equal(late.lookup(CLIENT + 1)?.route.session_id, 's2');
  t.equal(late.lookup(CLIENT + 2), undefined);
});

t.test('a malformed value is not a route', async (t) => {
  const tn = await createTestNats();
  t.teardown(() => tn.cleanup());
  const bucket = `${tn.streamName}_routes`;
  const routes = await ClientRoutes.open({ nc: tn.nc, bucket, ttlMs: 10_000, logger: silentLogger() });
  t.teardown(() => routes.close());
  const kv = await openRouteBucket(tn.nc, bucket, 10_000);
  await kv.put(String(CLIENT), JSON.stringify({ node_id: 'node-001' }));
  await kv.put('not-a-client', JSON.stringify(route('node-001', 's1')));
  t.equal(await routes.get(CLIENT), undefined);
  await kv.put(String(CLIENT + 1), JSON.stringify(route('node-001', 'ok')));
  await until(() => routes.lookup(CLIENT + 1) !== undefined, 'a later valid route still arrives');
  t.equal(routes.lookup(CLIENT), undefined);
});

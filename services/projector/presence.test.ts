import t from 'tap';
import { createMemoryBus } from '../../shared/bus/memory.js';
import { clientSessionStream, clientStream, recordClientConnected } from '../../shared/domain/index.js';
import { PostgresEventStore } from '../../shared/eventstore/postgres.js';
import { silentLogger } from '../../shared/platform/logger.js';
import { createTestDatabase } from '../../shared/testkit/pg.js';
import { startProjector } from './index.js';
import { startPresenceSweeper, type PresenceSource } from './presence.js';
import { CLIENT_A, CLIENT_B, absorbIdleClientErrors, append, at, clientRegistered, eventually } from './test/fixtures.js';

// Real PostgreSQL log and read models; the cluster's truth (node registry, routes) is given as
// plain data, which is all the sweeper reads of it.
t.test('sessions of dead edges are closed at their second sighting, live ones never', async (t) => {
  const tdb = await createTestDatabase('tnx_presence');
  t.teardown(() => tdb.drop());
  absorbIdleClientErrors(tdb.pool);
  const store = new PostgresEventStore({ db: tdb.db, pool: tdb.pool, pollIntervalMs: 20 });
  t.teardown(() => store.close());
  const bus = createMemoryBus();
  const projector = await startProjector({ store, db: tdb.db, bus, logger: silentLogger() });
  t.teardown(() => projector.stop());
  const meta = { actor: { kind: 'node' as const, id: 'node-001' } };
  for (const id of [CLIENT_A, CLIENT_B]) await append(store, clientStream(id), clientRegistered(id), at(0));
  await recordClientConnected(store, { clientId: CLIENT_A, nodeId: 'node-001', sessionId: 'sa', remoteAddr: '127.0.0.1:1' }, meta);
  await recordClientConnected(store, { clientId: CLIENT_B, nodeId: 'node-002', sessionId: 'sb', remoteAddr: '127.0.0.1:2' }, meta);
  const status = async (id: number) => (await tdb.db.selectFrom('clients').select(['status', 'session_id']).where('client_id', '=', id).executeTakeFirstOrThrow());
  await eventually(async () => (await status(CLIENT_A)).status === 'online' && (await status(CLIENT_B)).status === 'online');

  const live = new Set(['node-001', 'node-002']);
  const routes = new Map<number, string>([[CLIENT_A, 'sa'], [CLIENT_B, 'sb']]);
  let leader = true;
  const source: PresenceSource = { liveNodes: async () => live, routedSession: (id) => routes.get(id), isLeader: async () => leader };
  const sweeper = startPresenceSweeper({ db: tdb.db, store, source, logger: silentLogger(), actorId: 'test', intervalMs: 3_600_000 });
  t.teardown(() => sweeper.stop());

  t.equal(await sweeper.sweep(), 0, 'live nodes and matching routes: nothing to close');
  t.equal(await sweeper.sweep(), 0, 'still nothing at the second sweep');

  live.delete('node-002'); // B's edge died
  t.equal(await sweeper.sweep(), 0, 'a session that looks dead once is only suspected');
  live.add('node-002');
  t.equal(await sweeper.sweep(), 0, 'its node came back before the second sighting: nothing closed');
  live.delete('node-002');
  leader = false;
  t.equal(await sweeper.sweep(), 0, 'not the leader: no sweep');
  t.equal(await sweeper.sweep(), 0, 'not the leader, twice: still nothing');
  leader = true;
  t.equal(await sweeper.sweep(), 0, 'leader again: suspicion starts over');
  t.equal(await sweeper.sweep(), 1, 'second sighting: the session of the dead node is closed');
  await eventually(async () => (await status(CLIENT_B)).status === 'offline');
  t.equal((await status(CLIENT_A)).status, 'online', 'the client on the live node stays online');

  routes.set(CLIENT_A, 'sa-newer'); // A logged in again elsewhere; its old session is gone
  await sweeper.sweep();
  t.equal(await sweeper.sweep(), 1, 'a session its route no longer names is closed too');
  await eventually(async () => (await status(CLIENT_A)).status === 'offline');
  const { events } = await store.readStream(clientSessionStream(CLIENT_B));
  t.match(events.at(-1), { type: 'ClientDisconnected', data: { session_id: 'sb', node_id: 'node-002', reason: 'node lost' } }, 'recorded as a fact with the reason');
  t.equal(await sweeper.sweep(), 0, 'nothing left to close');
});

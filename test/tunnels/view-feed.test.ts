import { randomBytes } from 'node:crypto';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import t from 'tap';
import { MemoryEdgeView, startJetStreamViewFeed } from '../../services/edge/index.js';
import { startProjector } from '../../services/projector/index.js';
import { createStatePublisher, stateStreamName, stateSubject } from '../../shared/bus/state.js';
import { createMemoryBus } from '../../shared/bus/memory.js';
import { createManagedClient, createMapping, createUser, deleteClient, disableClient, enableClient, kickClient, rotateClientAuthCode } from '../../shared/domain/index.js';
import { PostgresEventStore } from '../../shared/eventstore/postgres.js';
import { silentLogger } from '../../shared/platform/logger.js';
import { TEST_NATS_URL, createTestNats } from '../../shared/testkit/nats.js';
import { createTestDatabase } from '../../shared/testkit/pg.js';
import { createWorld, eventually, freePort, canConnect, sha, startTargetService, visit, META, type World } from './world.js';

/**
 * The edge's view in cluster mode: the projector writes the state stream, an edge with no database
 * builds its view from it (last state per subject on start, then every update).
 */

async function freshView(w: World) {
  const nats = w.nats!;
  const view = new MemoryEdgeView();
  const feed = await startJetStreamViewFeed({ nc: nats.nc, stream: stateStreamName(nats.streamName), subjectPrefix: nats.subjectPrefix, view, logger: w.logger });
  t.teardown(() => feed.stop());
  await view.whenReady();
  return view;
}

t.test('the stream holds the last state per entity; a feed started later resyncs it, tombstones included', async (t) => {
  const w = await createWorld(t, {}, { feed: 'jetstream' });
  const nats = w.nats!;
  const user = await w.user();
  const a = await w.client(user);
  const b = await w.client(user);
  const pub = await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: 9, publicPort: await freePort() });
  const c2c = await w.mapping({ userId: user, sourceClientId: a.clientId, targetClientId: b.clientId, targetPort: 9, localPort: await freePort() });
  await w.deleteMapping(pub.mappingId);

  const jsm = await jetstreamManager(nats.nc);
  const info = await jsm.streams.info(stateStreamName(nats.streamName));
  t.equal(info.state.messages, 4, 'one message per entity (2 clients, 2 mappings): older states were replaced');
  const last = await jsm.streams.getMessage(stateStreamName(nats.streamName), { last_by_subj: stateSubject(nats.subjectPrefix, 'mapping', pub.mappingId) });
  t.match(last?.json(), { kind: 'mapping', id: pub.mappingId, state: null }, 'the deleted mapping is a tombstone');

  const view = await freshView(w);
  t.equal(view.ready, true);
  t.same(view.size(), { clients: 2, mappings: 1 });
  t.equal(view.mapping(pub.mappingId), undefined, 'the tombstone dropped the deleted mapping');
  t.same(view.publicMappings(), []);
  const rows = await w.tdb.db.selectFrom('clients').select(['client_id', 'config_version', 'auth_code_hash']).orderBy('client_id').execute();
  for (const row of rows) {
    t.match(view.client(row.client_id), { config_version: row.config_version, auth_code_hash: row.auth_code_hash, enabled: true, epoch: 0 });
  }
  t.same(view.clientConfig(a.clientId), w.view.clientConfig(a.clientId), 'same config as the live edge view');
  t.equal(view.clientConfig(a.clientId).mappings[0]?.mapping_id, c2c.mappingId);
  t.ok(view.versionOf('mapping', pub.mappingId) > view.versionOf('mapping', c2c.mappingId), 'the tombstone keeps its (newer) version');

  // Later updates reach the already running feed.
  const c = await w.client(user);
  await eventually(() => view.client(c.clientId), 'a new client reaches the resynced view');
});

t.test('an edge without a database works end to end from the state stream, also when started after the entities exist', async (t) => {
  const w = await createWorld(t, {}, { feed: 'jetstream' });
  const service = await startTargetService(t, 'reverse');
  const user = await w.user();
  const a = await w.client(user);
  const b = await w.client(user);
  const publicPort = await freePort();
  const localPort = await freePort();
  const pub = await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: service.port, publicPort });
  const c2c = await w.mapping({ userId: user, sourceClientId: a.clientId, targetClientId: b.clientId, targetPort: service.port, localPort });
  // A new edge process: a fresh view, built from the stream alone.
  await w.restartEdge('node-002');
  t.equal(w.view.ready, true);
  const agentA = w.agent({ clientId: a.clientId, authCode: a.authCode });
  const agentB = w.agent({ clientId: b.clientId, authCode: b.authCode });
  // Both sessions up (the edge holds a tunnel request until the target's config push is answered).
  await eventually(() => w.edge.stats().sessions === 2 && agentA.listeningPorts().get(c2c.mappingId) === localPort && canConnect(publicPort), 'agents configured, public port open');

  const payload = randomBytes(256 * 1024);
  t.equal(sha(await visit(localPort, payload)), sha(Buffer.from(payload).reverse()), 'client-to-client tunnel byte-exact');
  t.equal(sha(await visit(publicPort, payload)), sha(Buffer.from(payload).reverse()), 'public tunnel byte-exact');

  // An update on the stream: the public listener closes and agent A's mapping goes.
  await w.deleteMapping(pub.mappingId);
  await w.deleteMapping(c2c.mappingId);
  await eventually(async () => !(await canConnect(publicPort)), 'public listener closed');
  await eventually(() => !agentA.listeningPorts().has(c2c.mappingId), 'agent A dropped the mapping');
  t.ok(agentB.clientId, 'agent B stayed connected');
});

t.test('a crash between commit and publish: the restarted projector publishes what the outbox kept', async (t) => {
  const tdb = await createTestDatabase('tnx_view');
  const nats = await createTestNats();
  const store = new PostgresEventStore({ db: tdb.db, pool: tdb.pool, pollIntervalMs: 20 });
  const bus = createMemoryBus();
  const logger = silentLogger();
  t.teardown(async () => {
    await store.close();
    await bus.close();
    await nats.cleanup();
    await tdb.drop();
  });
  const stream = stateStreamName(nats.streamName);
  const jsm = await jetstreamManager(nats.nc);
  const caughtUp = async (p: { position: number }) => eventually(async () => p.position >= (await store.headPosition()), 'projector caught up');

  // The first projector publishes through a connection that dies after the client is out: the
  // mapping's transaction commits (read models + outbox), its publish fails, then the process "dies".
  const nc1 = await connect({ servers: TEST_NATS_URL });
  const first = await startProjector({ store, db: tdb.db, bus, logger, statePublisher: await createStatePublisher({ nc: nc1, stream, prefix: nats.subjectPrefix }) });
  const user = await createUser(store, { username: `u_${randomBytes(3).toString('hex')}`, email: 'u@example.com' }, META);
  const b = await createManagedClient(store, { userId: user.userId, clientName: 'b' }, META);
  await caughtUp(first);
  t.ok(await jsm.streams.getMessage(stream, { last_by_subj: stateSubject(nats.subjectPrefix, 'client', b.clientId) }), 'client b published');
  await nc1.close();
  const m = await createMapping(
    store,
    {
      userId: user.userId,
      protocol: 'tcp',
      sourceClientId: null,
      targetClientId: b.clientId,
      targetHost: '127.0.0.1',
      targetPort: 9,
      localHost: null,
      localPort: null,
      publicPort: null,
      publicPortRange: { min: 1, max: 1 },
    },
    META,
  );
  await caughtUp(first);
  await first.stop();
  const kept = (await tdb.db.selectFrom('state_outbox').select('payload').orderBy('id').execute()).map((r) => JSON.parse(r.payload) as { kind: string; id: number });
  t.same(kept.map((u) => `${u.kind}.${u.id}`), [`mapping.${m.mappingId}`, `client.${b.clientId}`], 'committed states kept in the outbox');
  t.equal(await jsm.streams.getMessage(stream, { last_by_subj: stateSubject(nats.subjectPrefix, 'mapping', m.mappingId) }), null, 'the mapping never reached the stream');

  // The restarted projector has nothing new to project; it publishes the outbox on start.
  const nc2 = await connect({ servers: TEST_NATS_URL });
  t.teardown(() => nc2.close());
  const second = await startProjector({ store, db: tdb.db, bus, logger, statePublisher: await createStatePublisher({ nc: nc2, stream, prefix: nats.subjectPrefix }) });
  t.teardown(() => second.stop());
  t.equal((await tdb.db.selectFrom('state_outbox').select('id').execute()).length, 0, 'outbox empty after start');
  const view = new MemoryEdgeView();
  const feed = await startJetStreamViewFeed({ nc: nats.nc, stream, subjectPrefix: nats.subjectPrefix, view, logger });
  t.teardown(() => feed.stop());
  await view.whenReady();
  t.equal(view.mapping(m.mappingId)?.target_client_id, b.clientId, 'a fresh edge view has the mapping');
  t.same(view.clientConfig(b.clientId).mappings.map((x) => x.mapping_id), [m.mappingId], 'and the client config that includes it');
  t.equal(view.client(b.clientId)?.config_version, m.position, "the client's config version is the mapping's position");
});

t.test('a client used right after it is created logs in: the handshake waits for the view', async (t) => {
  const w = await createWorld(t, {}, { feed: 'jetstream' });
  const user = await w.user();
  // No settle: the agent may well reach the edge before the client reaches the edge's view.
  const res = await createManagedClient(w.store, { userId: user, clientName: 'eager' }, META);
  const agent = w.agent({ clientId: res.clientId, authCode: res.authCode });
  await eventually(() => agent.clientId === res.clientId && w.edge.stats().sessions === 1, 'eager client logged in');
  t.ok(w.view.client(res.clientId), 'the view has it');
});

t.test('an empty state stream next to existing read models is seeded on start (upgrade of an installation)', async (t) => {
  const tdb = await createTestDatabase('tnx_view');
  const nats = await createTestNats();
  const store = new PostgresEventStore({ db: tdb.db, pool: tdb.pool, pollIntervalMs: 20 });
  const bus = createMemoryBus();
  const logger = silentLogger();
  t.teardown(async () => {
    await store.close();
    await bus.close();
    await nats.cleanup();
    await tdb.drop();
  });
  // Read models built by a projector that did not write the stream (as before this change).
  const old = await startProjector({ store, db: tdb.db, bus, logger });
  const user = await createUser(store, { username: `u_${randomBytes(3).toString('hex')}`, email: 'u@example.com' }, META);
  const b = await createManagedClient(store, { userId: user.userId, clientName: 'b' }, META);
  const m = await createMapping(
    store,
    { userId: user.userId, protocol: 'tcp', sourceClientId: null, targetClientId: b.clientId, targetHost: '127.0.0.1', targetPort: 9, localHost: null, localPort: null, publicPort: null, publicPortRange: { min: 1, max: 1 } },
    META,
  );
  await eventually(async () => old.position >= (await store.headPosition()), 'read models built');
  await old.stop();

  const stream = stateStreamName(nats.streamName);
  const upgraded = await startProjector({ store, db: tdb.db, bus, logger, statePublisher: await createStatePublisher({ nc: nats.nc, stream, prefix: nats.subjectPrefix }) });
  t.teardown(() => upgraded.stop());
  const view = new MemoryEdgeView();
  const feed = await startJetStreamViewFeed({ nc: nats.nc, stream, subjectPrefix: nats.subjectPrefix, view, logger });
  t.teardown(() => feed.stop());
  await view.whenReady();
  t.same(view.size(), { clients: 1, mappings: 1 });
  t.equal(view.client(b.clientId)?.config_version, m.position);
  t.equal(view.versionOf('mapping', m.mappingId), m.position, 'labelled with the checkpoint of the snapshot');
});

t.test('a client disabled or deleted loses its session and cannot log in again', async (t) => {
  const w = await createWorld(t, {}, { feed: 'jetstream' });
  const user = await w.user();
  const a = await w.client(user);
  const b = await w.client(user);
  const fatal: string[] = [];
  w.agent({ clientId: a.clientId, authCode: a.authCode, onFatal: (err) => fatal.push(`a:${err.code}`) });
  w.agent({ clientId: b.clientId, authCode: b.authCode, onFatal: (err) => fatal.push(`b:${err.code}`) });
  await eventually(() => w.edge.stats().sessions === 2, 'both agents connected');
  await w.settle((await disableClient(w.store, { clientId: a.clientId }, META)).position);
  await w.settle((await deleteClient(w.store, { clientId: b.clientId }, META)).position);
  await eventually(() => w.edge.stats().sessions === 0, 'both sessions closed');
  // Logins now fail for good (not "catching up"): the agents stop retrying.
  await eventually(() => fatal.length === 2, 'agents gave up after the refusal');
  t.same(fatal.sort(), ['a:TNX_AUTH_FAILED', 'b:TNX_AUTH_FAILED']);
});

for (const feed of ['read-models', 'jetstream'] as const) {
  t.test(`${feed} feed: enabled, epoch, auth code hash and deletion reach the view the same way`, async (t) => {
    const w = await createWorld(t, {}, { feed });
    const user = await w.user();
    const a = await w.client(user);
    const other = await w.client(user);
    const initial = w.view.client(a.clientId)!;
    t.match(initial, { enabled: true, epoch: 0 });
    const step = async (res: Promise<{ position: number }>) => w.settle((await res).position);

    await step(disableClient(w.store, { clientId: a.clientId }, META));
    t.match(w.view.client(a.clientId), { enabled: false, epoch: 2 }, 'disabled: epoch is the stream version of the revocation');
    await step(enableClient(w.store, { clientId: a.clientId }, META));
    t.match(w.view.client(a.clientId), { enabled: true, epoch: 2 }, 'enabled again: same epoch, old tokens stay revoked');
    await step(rotateClientAuthCode(w.store, { clientId: a.clientId }, META));
    const rotated = w.view.client(a.clientId)!;
    t.equal(rotated.epoch, 4);
    t.not(rotated.auth_code_hash, initial.auth_code_hash, 'the new hash');
    await step(kickClient(w.store, { clientId: a.clientId }, META));
    t.match(w.view.client(a.clientId), { enabled: true, epoch: 5 }, 'kicked');
    await step(deleteClient(w.store, { clientId: a.clientId }, META));
    t.equal(w.view.client(a.clientId), undefined, 'deleted: gone from the view');
    t.equal(w.view.clientDeleted(a.clientId), true, 'held as a tombstone');
    t.match(w.view.client(other.clientId), { enabled: true, epoch: 0 }, 'other clients untouched');

    // A new edge process builds the same view from scratch.
    await w.restartEdge('node-002');
    t.equal(w.view.client(a.clientId), undefined);
    t.equal(w.view.clientDeleted(a.clientId), true, 'the deletion survives a resync');
    t.match(w.view.client(other.clientId), { enabled: true, epoch: 0 });
  });
}

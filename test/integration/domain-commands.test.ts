import t, { type Test } from 'tap';
import { buildEnvelope, type CommandMetadata } from '../../shared/eventstore/command.js';
import { openJetStreamEventStore } from '../../shared/eventstore/jetstream.js';
import { PostgresEventStore } from '../../shared/eventstore/postgres.js';
import type { EventStore } from '../../shared/eventstore/types.js';
import {
  createManagedClient,
  createMapping,
  createUser,
  deleteMapping,
  recordClientConnected,
  recordClientDisconnected,
  registerAnonymousClient,
  reservePublicPort,
} from '../../shared/domain/index.js';
import { createTestDatabase } from '../../shared/testkit/pg.js';
import { createTestNats } from '../../shared/testkit/nats.js';

/**
 * The command services against both real event stores: what the API and the edge rely on
 * (ids, create-if-absent, session facts, port reservation and its compensation).
 */
const meta: CommandMetadata = { actor: { kind: 'system', id: 'test' } };
const RANGE = { min: 31000, max: 31002 };

async function openPostgres(t: Test): Promise<EventStore> {
  const tdb = await createTestDatabase('tnx_cmd');
  const store = new PostgresEventStore({ db: tdb.db, pool: tdb.pool });
  t.teardown(async () => {
    await store.close();
    await tdb.drop();
  });
  return store;
}

async function openJetStream(t: Test): Promise<EventStore> {
  const nats = await createTestNats();
  const store = await openJetStreamEventStore({ nc: nats.nc, streamName: nats.streamName, subjectPrefix: nats.subjectPrefix });
  t.teardown(async () => {
    await store.close();
    await nats.cleanup();
  });
  return store;
}

function types(events: { type: string }[]): string[] {
  return events.map((e) => e.type);
}

async function setupUserWithClients(store: EventStore) {
  const { userId } = await createUser(store, { username: 'john', email: 'john@example.com' }, meta);
  const a = await createManagedClient(store, { userId, clientName: 'a' }, meta);
  const b = await createManagedClient(store, { userId, clientName: 'b' }, meta);
  return { userId, a: a.clientId, b: b.clientId };
}

function suite(name: string, open: (t: Test) => Promise<EventStore>): void {
  t.test(name, async (t) => {
    t.test('users and managed clients get sequential ids; the auth code is not stored', async (t) => {
      const store = await open(t);
      const u = await createUser(store, { username: 'john', email: 'john@example.com' }, meta);
      t.equal(u.userId, 100000001);
      const c = await createManagedClient(store, { userId: u.userId, clientName: 'home', clientDesc: 'NAS' }, meta);
      t.equal(c.clientId, 600000000);
      t.ok(c.position > u.position, 'positions grow');
      const { events } = await store.readStream(`client.${c.clientId}`);
      t.same(types(events), ['ClientRegistered']);
      t.match(events[0]?.data, { client_type: 'managed', user_id: 100000001, client_name: 'home', client_desc: 'NAS', auth_code_hash: /^scrypt\$/ });
      t.notOk(JSON.stringify(events).includes(c.authCode));
      await t.rejects(createManagedClient(store, { userId: 100000099, clientName: 'x' }, meta), { code: 'TNX_USER_NOT_FOUND', field: 'user_id' });
      t.same(types((await store.readStream('sequence.managed-client')).events), ['IdAllocated'], 'no id burnt for a missing owner');
    });

    t.test('registerAnonymousClient creates an ownerless client with a random anonymous id', async (t) => {
      const store = await open(t);
      const first = await registerAnonymousClient(store, { authCodeHash: 'scrypt$1$1$1$c2FsdA==$aGFzaA==' }, meta);
      const second = await registerAnonymousClient(store, { authCodeHash: 'scrypt$1$1$1$c2FsdA==$aGFzaA==', clientName: 'laptop' }, meta);
      for (const r of [first, second]) {
        t.ok(r.clientId >= 200000000 && r.clientId <= 299999999, `${r.clientId} is in the anonymous range`);
      }
      t.not(first.clientId, second.clientId);
      const { events } = await store.readStream(`client.${second.clientId}`);
      t.equal(events[0]?.position, second.position);
      t.same(events[0]?.data, {
        client_id: second.clientId,
        client_type: 'anonymous',
        user_id: null,
        client_name: 'laptop',
        auth_code_hash: 'scrypt$1$1$1$c2FsdA==$aGFzaA==',
      });
      t.match((await store.readStream(`client.${first.clientId}`)).events[0]?.data, { client_name: `anonymous-${first.clientId}` });
    });

    t.test('session facts go to client-session.<id>, never to the client stream', async (t) => {
      const store = await open(t);
      const { clientId } = await registerAnonymousClient(store, { authCodeHash: 'h' }, meta);
      const nodeMeta: CommandMetadata = { actor: { kind: 'node', id: 'node-001' } };
      const c1 = await recordClientConnected(store, { clientId, nodeId: 'node-001', sessionId: 's1', remoteAddr: '127.0.0.1:1' }, nodeMeta);
      // A re-login on another node races with the first session's disconnect: both are recorded.
      const [c2, d1] = await Promise.all([
        recordClientConnected(store, { clientId, nodeId: 'node-002', sessionId: 's2', remoteAddr: '127.0.0.1:2' }, nodeMeta),
        recordClientDisconnected(store, { clientId, nodeId: 'node-001', sessionId: 's1', reason: 'replaced' }, nodeMeta),
      ]);
      const { events } = await store.readStream(`client-session.${clientId}`);
      t.equal(events.length, 3);
      t.same(types(events.slice(0, 1)), ['ClientConnected']);
      t.same(types(events.slice(1)).sort(), ['ClientConnected', 'ClientDisconnected']);
      t.same(events.map((e) => e.position).sort((a, b) => a - b), [c1.position, c2.position, d1.position].sort((a, b) => a - b));
      t.match(events.find((e) => e.type === 'ClientDisconnected'), { data: { session_id: 's1', reason: 'replaced' }, actor: { kind: 'node', id: 'node-001' } });
      t.equal((await store.readStream(`client.${clientId}`)).events.length, 1, 'the client stream is untouched');
    });

    t.test('public ports: first free of the range, released on delete, exhausted range refused', async (t) => {
      const store = await open(t);
      const { userId, a } = await setupUserWithClients(store);
      const pub = { userId, protocol: 'tcp', targetClientId: a, targetHost: '127.0.0.1', targetPort: 80, publicPortRange: RANGE };
      // Someone else holds the first port of the range: allocation skips it.
      await reservePublicPort(store, { port: RANGE.min, mappingId: 999999 }, meta);
      const m1 = await createMapping(store, pub, meta);
      t.same([m1.mappingId, m1.publicPort], [1001, RANGE.min + 1]);
      const m2 = await createMapping(store, pub, meta);
      t.same([m2.mappingId, m2.publicPort], [1002, RANGE.min + 2]);
      await t.rejects(createMapping(store, pub, meta), { code: 'TNX_PORT_RANGE_EXHAUSTED' });

      const del = await deleteMapping(store, { mappingId: 1001 }, meta);
      t.same(types((await store.readStream(`port.${RANGE.min + 1}`)).events), ['PublicPortReserved', 'PublicPortReleased']);
      t.same(types((await store.readStream('mapping.1001')).events), ['MappingCreated', 'MappingDeleted']);
      t.equal(del.position, await store.headPosition(), 'delete waits for the release, its last event');
      await t.rejects(deleteMapping(store, { mappingId: 1001 }, meta), { code: 'TNX_MAPPING_NOT_FOUND' });
      const m4 = await createMapping(store, pub, meta);
      t.equal(m4.publicPort, RANGE.min + 1, 'the released port is reused');
    });

    t.test('a delete that recorded MappingDeleted but never freed the port is finished by a retry', async (t) => {
      const store = await open(t);
      const { userId, a } = await setupUserWithClients(store);
      const m = await createMapping(store, { userId, protocol: 'tcp', targetClientId: a, targetHost: '127.0.0.1', targetPort: 80, publicPortRange: RANGE }, meta);
      // The first half of a delete whose port release then failed (store unavailable, crash).
      await store.append('mapping.1001', buildEnvelope('mapping.1001', { type: 'MappingDeleted', data: { mapping_id: m.mappingId } }, meta), { expectedRevision: 'any' });
      t.same(types((await store.readStream(`port.${m.publicPort}`)).events), ['PublicPortReserved'], 'the port is still held');
      await t.rejects(deleteMapping(store, { mappingId: m.mappingId }, meta), { code: 'TNX_MAPPING_NOT_FOUND' }, 'the retry still answers not found');
      t.same(types((await store.readStream(`port.${m.publicPort}`)).events), ['PublicPortReserved', 'PublicPortReleased'], 'but the port is free again');
    });

    t.test('two creates racing for one explicit port: exactly one wins', async (t) => {
      const store = await open(t);
      const { userId, a } = await setupUserWithClients(store);
      const pub = { userId, protocol: 'tcp', targetClientId: a, targetHost: '127.0.0.1', targetPort: 80, publicPort: RANGE.max, publicPortRange: RANGE };
      const results = await Promise.allSettled([createMapping(store, pub, meta), createMapping(store, pub, meta)]);
      const won = results.filter((r) => r.status === 'fulfilled');
      const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      t.equal(won.length, 1);
      t.equal(lost.length, 1);
      t.match(lost[0]?.reason, { code: 'TNX_PORT_IN_USE' });
      t.same(types((await store.readStream(`port.${RANGE.max}`)).events), ['PublicPortReserved']);
    });

    t.test('parallel creates for one (source client, local_port): exactly one wins, the rest are TNX_LOCAL_PORT_TAKEN', async (t) => {
      const store = await open(t);
      const { userId, a, b } = await setupUserWithClients(store);
      const c2c = { userId, protocol: 'tcp', sourceClientId: a, targetClientId: b, targetHost: '127.0.0.1', targetPort: 22, localPort: 2222, publicPortRange: RANGE };
      // Different local_host values still claim the same port on the agent's machine.
      const hosts = ['127.0.0.1', '0.0.0.0', null, '127.0.0.1', '::1', null];
      const results = await Promise.allSettled(hosts.map((localHost) => createMapping(store, { ...c2c, localHost }, meta)));
      const won = results.filter((r): r is PromiseFulfilledResult<Awaited<ReturnType<typeof createMapping>>> => r.status === 'fulfilled');
      const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      t.equal(won.length, 1, 'one winner');
      t.equal(lost.length, hosts.length - 1);
      for (const l of lost) t.match(l.reason, { code: 'TNX_LOCAL_PORT_TAKEN' });
      const stream = `localport.${a}_2222`;
      const held = (await store.readStream(stream)).events;
      t.same(types(held), ['LocalPortReserved'], 'one reservation, no compensation needed for the losers');
      t.match(held[0]?.data, { client_id: a, port: 2222, mapping_id: won[0]!.value.mappingId });

      await deleteMapping(store, { mappingId: won[0]!.value.mappingId }, meta);
      t.same(types((await store.readStream(stream)).events), ['LocalPortReserved', 'LocalPortReleased'], 'released on delete');
      await createMapping(store, { ...c2c, localHost: '0.0.0.0' }, meta);
      t.same(types((await store.readStream(stream)).events), ['LocalPortReserved', 'LocalPortReleased', 'LocalPortReserved'], 'reserved again');
    });

    t.test('if MappingCreated of a client-to-client mapping cannot be appended, its local port is released again', async (t) => {
      const store = await open(t);
      const { userId, a, b } = await setupUserWithClients(store);
      const squatter = buildEnvelope(
        'mapping.1001',
        {
          type: 'MappingCreated',
          data: {
            mapping_id: 1001, user_id: userId, protocol: 'tcp', source_client_id: null, target_client_id: a, target_host: 'h', target_port: 1,
            local_host: null, local_port: null, public_port: 31999, secret_generation: 1, enabled: true,
          },
        },
        meta,
      );
      await store.append('mapping.1001', squatter, { expectedRevision: 'no_stream' });
      const c2c = { userId, protocol: 'tcp', sourceClientId: a, targetClientId: b, targetHost: 'h', targetPort: 1, localPort: 2000, publicPortRange: RANGE };
      await t.rejects(createMapping(store, c2c, meta), { code: 'TNX_MAPPING_ALREADY_EXISTS' });
      t.same(types((await store.readStream(`localport.${a}_2000`)).events), ['LocalPortReserved', 'LocalPortReleased'], 'compensated');
      const next = await createMapping(store, c2c, meta);
      t.equal(next.mappingId, 1002, 'the local port is free for the next mapping');
    });

    t.test('if MappingCreated cannot be appended, the reserved port is released again', async (t) => {
      const store = await open(t);
      const { userId, a, b } = await setupUserWithClients(store);
      // mapping.1001 already exists (written outside the sequence), so creating 1001 must fail.
      const squatter = buildEnvelope(
        'mapping.1001',
        {
          type: 'MappingCreated',
          data: {
            mapping_id: 1001, user_id: userId, protocol: 'tcp', source_client_id: b, target_client_id: a, target_host: 'h', target_port: 1,
            local_host: null, local_port: 2000, public_port: null, secret_generation: 1, enabled: true,
          },
        },
        meta,
      );
      await store.append('mapping.1001', squatter, { expectedRevision: 'no_stream' });
      const pub = { userId, protocol: 'tcp', targetClientId: a, targetHost: '127.0.0.1', targetPort: 80, publicPortRange: RANGE };
      await t.rejects(createMapping(store, pub, meta), { code: 'TNX_MAPPING_ALREADY_EXISTS' });
      t.same(types((await store.readStream(`port.${RANGE.min}`)).events), ['PublicPortReserved', 'PublicPortReleased'], 'compensated');
      const next = await createMapping(store, pub, meta);
      t.same([next.mappingId, next.publicPort], [1002, RANGE.min], 'the port is free for the next mapping');
    });

    t.test('references are checked before anything is allocated', async (t) => {
      const store = await open(t);
      const { userId, a, b } = await setupUserWithClients(store);
      const other = await createUser(store, { username: 'jane', email: 'jane@example.com' }, meta);
      const theirs = await createManagedClient(store, { userId: other.userId, clientName: 'c' }, meta);
      const c2c = { userId, protocol: 'tcp', sourceClientId: a, targetClientId: b, targetHost: 'h', targetPort: 1, localPort: 2000, publicPortRange: RANGE };
      await t.rejects(createMapping(store, { ...c2c, targetClientId: theirs.clientId }, meta), { code: 'TNX_MAPPING_CLIENT_NOT_OWNED', field: 'target_client_id' });
      await t.rejects(createMapping(store, { ...c2c, sourceClientId: 600000099 }, meta), { code: 'TNX_MAPPING_CLIENT_NOT_FOUND', field: 'source_client_id' });
      await t.rejects(createMapping(store, { ...c2c, userId: 100000099 }, meta), { code: 'TNX_MAPPING_USER_NOT_FOUND', field: 'user_id' });
      await t.rejects(createMapping(store, { ...c2c, protocol: 'udp' }, meta), { code: 'TNX_MAPPING_UNSUPPORTED_PROTOCOL', field: 'protocol' });
      await t.rejects(createMapping(store, { ...c2c, sourceClientId: null, localPort: null, publicPort: 40000 }, meta), { code: 'TNX_PORT_OUT_OF_RANGE' });
      t.same((await store.readStream('sequence.mapping')).events, [], 'no mapping id was burnt');
      const ok = await createMapping(store, c2c, meta);
      t.same([ok.mappingId, ok.publicPort], [1001, null]);
    });

    t.test('10 parallel allocations on one sequence give 10 distinct sequential ids', async (t) => {
      const store = await open(t);
      const users = await Promise.all(
        Array.from({ length: 10 }, (_, i) => createUser(store, { username: `u${i}`, email: `u${i}@example.com` }, meta)),
      );
      t.same(users.map((u) => u.userId).sort((x, y) => x - y), Array.from({ length: 10 }, (_, i) => 100000001 + i));
    });
  });
}

suite('PostgreSQL event store', openPostgres);
suite('JetStream event store', openJetStream);

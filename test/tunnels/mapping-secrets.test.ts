import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { sql } from 'kysely';
import t from 'tap';
import { ensureStateStream, stateStreamName } from '../../shared/bus/state.js';
import { createManagedClient, createUser } from '../../shared/domain/index.js';
import type { Db } from '../../shared/db/connect.js';
import { buildEnvelope } from '../../shared/eventstore/command.js';
import { VERSION_HEADER, openJetStreamEventStore } from '../../shared/eventstore/jetstream.js';
import { deriveMappingMasterKey, deriveMappingSecret } from '../../shared/platform/mapping-secrets.js';
import { TEST_NATS_URL, createTestNats } from '../../shared/testkit/nats.js';
import { createTestDatabase } from '../../shared/testkit/pg.js';
import { rawAppend } from '../../shared/testkit/raw-append.js';
import { startAgent, type AgentMapping } from '../../services/client/index.js';
import { spawnTunnox } from '../e2e/harness.js';
import { createWorld, eventually, freePort, login, META, sha, startTargetService, TEST_MAPPING_KEY, tunnelOpenFrame, visit, WirePeer, type World } from './world.js';
import { rotateMappingSecret } from '../../shared/domain/mapping/mapping.commands.js';
import { PacketType } from '../../shared/wire/packets.js';
import { newNonce } from '../../shared/wire/proof.js';

/**
 * Mapping secrets never enter the event log or a read model (issue 7): in both event stores, every
 * stored event, every read-model row and every state-stream message is scanned for the secrets
 * the edge actually pushed to the agents (hex and base64), while tunnels work with them. A legacy
 * JetStream log (MappingCreated v1 holding a secret) is copied by the real `tunnox ctl events copy`,
 * after which no secret remains, `ctl projections rebuild --verify` agrees, and a `tunnox server`
 * on the copy runs tunnels with the derived secret.
 */

t.setTimeout(300_000);

const MAIN = fileURLToPath(new URL('../../services/cli/main.js', import.meta.url));

function ctl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, 'ctl', ...args], { timeout: 120_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

/** Every row of every table of the read-model database (all schemas but the system ones), as JSON text. */
async function readModelText(db: Db): Promise<string> {
  const tables = await sql<{ s: string; n: string }>`
    select table_schema as s, table_name as n from information_schema.tables
    where table_type = 'BASE TABLE' and table_schema not in ('pg_catalog', 'information_schema')`.execute(db);
  const out: string[] = [];
  for (const { s, n } of tables.rows) {
    const rows = await sql<{ t: string }>`select row_to_json(x)::text as t from ${sql.table(`${s}.${n}`)} x`.execute(db);
    out.push(...rows.rows.map((r) => r.t));
  }
  return out.join('\n');
}

/** Every message of a JetStream stream: subject, headers and payload, as text. */
async function streamText(nc: NatsConnection, stream: string): Promise<{ text: string; count: number }> {
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.info(stream);
  const out: string[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    const m = await jsm.streams.getMessage(stream, { seq });
    if (!m) continue;
    const hdrs = m.header ? [...m.header.keys()].map((k) => `${k}=${m.header!.get(k)}`).join(';') : '';
    out.push(`${m.subject} ${hdrs} ${new TextDecoder().decode(m.data)}`);
  }
  return { text: out.join('\n'), count: out.length };
}

/** The stored event log as text: tnx_events, or the JetStream stream. */
async function logText(w: World, nc?: NatsConnection, stream?: string): Promise<string> {
  if (w.storeKind === 'postgres') {
    const rows = await sql<{ t: string }>`select envelope::text as t from tnx_events order by position`.execute(w.tdb.db);
    return rows.rows.map((r) => r.t).join('\n');
  }
  return (await streamText(nc ?? w.nats!.nc, stream ?? w.nats!.streamName)).text;
}

/** Which encodings of the 32 secret bytes occur in `text`. */
function traces(text: string, secretHex: string): string[] {
  const bytes = Buffer.from(secretHex, 'hex');
  const forms = { hex: secretHex, HEX: secretHex.toUpperCase(), base64: bytes.toString('base64'), base64url: bytes.toString('base64url') };
  return Object.entries(forms).filter(([, v]) => text.includes(v)).map(([k]) => k);
}

/** A's side and B's side of a client-to-client mapping and a public one, both tunnels carrying bytes. */
async function mappingsInUse(t: Parameters<typeof createWorld>[0], w: World) {
  const service = await startTargetService(t, 'reverse');
  const user = await w.user();
  const a = await w.client(user);
  const b = await w.client(user);
  const localPort = await freePort();
  const c2c = await w.mapping({ userId: user, sourceClientId: a.clientId, targetClientId: b.clientId, targetPort: service.port, localPort });
  const pub = await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: service.port, publicPort: await freePort() });
  const pushed: AgentMapping[] = [];
  const agentA = w.agent({ clientId: a.clientId, authCode: a.authCode, onConfig: (m) => pushed.push(...m) });
  w.agent({ clientId: b.clientId, authCode: b.authCode, onConfig: (m) => pushed.push(...m) });
  await eventually(() => agentA.listeningPorts().get(c2c.mappingId) === localPort, 'source listener');
  await eventually(() => pushed.some((m) => m.mapping_id === pub.mappingId), 'public mapping pushed to its target');
  for (const port of [localPort, pub.publicPort!]) {
    const payload = randomBytes(128 * 1024 + 5);
    t.equal(sha(await visit(port, payload)), sha(Buffer.from(payload).reverse()), `tunnel through port ${port} is byte-exact`);
  }
  return { service, user, a, b, c2c, pub, pushed, agentA, localPort };
}

for (const store of ['postgres', 'jetstream'] as const) {
  t.test(`${store} store: no pushed mapping secret is in any stored event, read-model row or state message`, async (t) => {
    const w = await createWorld(t, {}, { store });
    const { c2c, pub, pushed } = await mappingsInUse(t, w);
    const secrets = new Set(pushed.map((m) => m.secret_key));
    t.equal(secrets.size, 2, 'two mappings, two secrets pushed');
    t.same([...secrets].sort(), [await w.secretOf(c2c.mappingId), await w.secretOf(pub.mappingId)].sort(), 'the derived ones (generation 1)');
    for (const s of secrets) t.match(s, /^[0-9a-f]{64}$/, 'each 32 bytes, hex');

    const log = await logText(w);
    t.match(log, /"type":\s*"MappingCreated"/, 'the scan sees the mapping events');
    const stores: [string, string][] = [['event log', log], ['read models', await readModelText(w.tdb.db)]];
    if (w.nats) stores.push(['state stream', (await streamText(w.nats.nc, stateStreamName(w.nats.streamName))).text]);
    for (const [where, text] of stores) {
      for (const s of secrets) t.same(traces(text, s), [], `${where}: no trace of a secret`);
      t.notOk(text.includes('secret_key'), `${where}: no secret_key field`);
    }
    t.match(stores[1]![1], /"secret_generation":1/, 'the read model holds the generation');
  });
}

t.test('rotating a mapping secret: the agents are pushed the next generation, tunnels work with it, the old one opens nothing', async (t) => {
  const w = await createWorld(t);
  const { a, c2c, pushed, agentA, localPort } = await mappingsInUse(t, w);
  const before = await w.secretOf(c2c.mappingId);
  const { position, generation } = await rotateMappingSecret(w.store, { mappingId: c2c.mappingId }, META);
  t.equal(generation, 2);
  await w.settle(position);
  const after = await w.secretOf(c2c.mappingId);
  t.equal(after, deriveMappingSecret(TEST_MAPPING_KEY, c2c.mappingId, 2), 'the new secret is generation 2');
  t.not(after, before);
  await eventually(() => pushed.filter((m) => m.mapping_id === c2c.mappingId && m.secret_key === after).length >= 2, 'both sides pushed the new secret');
  await eventually(() => agentA.listeningPorts().get(c2c.mappingId) === localPort, 'source listener with the new secret');
  const payload = randomBytes(64 * 1024 + 9);
  t.equal(sha(await visit(localPort, payload)), sha(Buffer.from(payload).reverse()), 'a tunnel with the rotated secret is byte-exact');
  const text = (await logText(w)) + (await readModelText(w.tdb.db));
  t.same([...traces(text, before), ...traces(text, after)], [], 'neither secret is stored');
  t.match(text, /"type": ?"MappingSecretRotated"/, 'the rotation is in the log');

  // The old secret is refused on the live session (checked last: the raw login replaces agent A's).
  const peer = await login(w, a.clientId, a.authCode);
  for (const [secret, code] of [[before, 'TNX_TUNNEL_REFUSED'], [after, 'TNX_TUNNEL_TARGET_OFFLINE']] as const) {
    const tunnel = await WirePeer.connect(w.edge.controlPort);
    tunnel.send(PacketType.TunnelOpen, tunnelOpenFrame({ mapping_id: c2c.mappingId, tunnel_id: newNonce(), role: 'source', client_id: a.clientId }, { secret, session: peer.session }));
    const ack = await tunnel.next();
    tunnel.close();
    if (code === 'TNX_TUNNEL_REFUSED') t.match(ack, { type: PacketType.TunnelOpenAck, body: { ok: false, error: { code } } }, 'the old secret: refused');
    else t.not((ack as { body: { error?: { code?: string } } }).body.error?.code, 'TNX_TUNNEL_REFUSED', 'the new secret: authorized');
  }
  peer.close();
});

t.test('jetstream: a legacy log (secrets in MappingCreated v1) replays, and its copy by `tunnox ctl events copy` holds none', async (t) => {
  const w = await createWorld(t, {}, { store: 'jetstream' });
  const nats = w.nats!;
  const service = await startTargetService(t, 'reverse');
  const user = await w.user();
  const a = await w.client(user);
  const b = await w.client(user);
  const localPort = await freePort();
  const stored = randomBytes(32).toString('hex');
  const MAPPING = 5001;
  const env = buildEnvelope(`mapping.${MAPPING}`, {
    type: 'MappingCreated',
    data: {
      mapping_id: MAPPING, user_id: user, protocol: 'tcp', source_client_id: a.clientId, target_client_id: b.clientId, target_host: '127.0.0.1',
      target_port: service.port, local_host: '127.0.0.1', local_port: localPort, public_port: null, enabled: true, secret_generation: 1,
    },
  }, META);
  const { secret_generation: _generation, ...v1 } = env.data as Record<string, unknown>;
  const position = await rawAppend({ kind: 'jetstream', nc: nats.nc, streamName: nats.streamName, subjectPrefix: nats.subjectPrefix }, `mapping.${MAPPING}`, {
    ...env, schema_version: 1, data: { ...v1, secret_key: stored },
  });
  await w.settle(position);
  t.same(traces(await logText(w), stored), ['hex'], 'the source log holds the secret (the scan finds it)');
  t.same(traces(await readModelText(w.tdb.db), stored), [], 'the read models do not');
  t.same(traces((await streamText(nats.nc, stateStreamName(nats.streamName))).text, stored), [], 'nor the state stream');

  const targetConfigs: AgentMapping[] = [];
  const agents = [
    w.agent({ clientId: a.clientId, authCode: a.authCode }),
    w.agent({ clientId: b.clientId, authCode: b.authCode, onConfig: (m) => targetConfigs.push(...m) }),
  ];
  await eventually(() => agents[0]!.listeningPorts().get(MAPPING) === localPort, 'source listener');
  await eventually(() => targetConfigs.some((m) => m.mapping_id === MAPPING), 'target config');
  const payload = randomBytes(64 * 1024);
  t.equal(sha(await visit(localPort, payload)), sha(Buffer.from(payload).reverse()), 'the legacy mapping tunnels with the derived secret');
  // The copy runs with nothing appending: the agents leave, their disconnects are recorded first.
  await Promise.all(agents.map((x) => x.stop()));
  await eventually(() => w.edge.stats().sessions === 0, 'sessions closed');
  const jsm = await jetstreamManager(nats.nc);
  await eventually(async () => {
    const head = (await jsm.streams.info(nats.streamName)).state.last_seq;
    return (await w.store.readAll(0, 10_000)).filter((e) => e.type === 'ClientDisconnected').length === 2 && head === (await jsm.streams.info(nats.streamName)).state.last_seq;
  }, 'disconnects recorded');
  const head = (await jsm.streams.info(nats.streamName)).state.last_seq;
  await w.settle(head);

  const copyStream = `${nats.streamName}_COPY`;
  const copyPrefix = `${nats.subjectPrefix}-copy`;
  const source = ['--nats', TEST_NATS_URL, '--stream', nats.streamName, '--subject-prefix', nats.subjectPrefix];
  const refused = await ctl(['events', 'copy', ...source, '--to-stream', copyStream, '--to-subject-prefix', nats.subjectPrefix]);
  t.equal(refused.code, 1, 'the same subject prefix is refused');
  t.match(refused.stderr, /--to-subject-prefix must differ/);
  const standalone = await ctl(['events', 'copy', '--database', w.tdb.url, '--to-stream', copyStream, '--to-subject-prefix', copyPrefix]);
  t.equal(standalone.code, 1);
  t.match(standalone.stderr, /works on a JetStream log/, 'a PostgreSQL log is not copied (migration 0006 rewrites it)');

  const copied = await ctl(['events', 'copy', ...source, '--to-stream', copyStream, '--to-subject-prefix', copyPrefix]);
  t.equal(copied.code, 0, copied.stderr);
  t.match(JSON.parse(copied.stdout), { from: nats.streamName, to: copyStream, last_position: head, copied: head, rewritten: 1, resumed_after: 0, deleted_source: [] });
  t.match(copied.stderr, new RegExp(`start every process with --stream ${copyStream} --subject-prefix ${copyPrefix}`));
  const again = await ctl(['events', 'copy', ...source, '--to-stream', copyStream, '--to-subject-prefix', copyPrefix]);
  t.match(JSON.parse(again.stdout), { copied: 0, resumed_after: head }, 'run again: a complete copy has nothing left to do');

  const copy = await streamText(nats.nc, copyStream);
  t.equal(copy.count, head, 'every event copied');
  t.same(traces(copy.text, stored), [], 'no trace of the secret in the copy');
  t.notOk(copy.text.includes('secret_key'), 'no secret_key field in the copy');
  for (let seq = 1; seq <= head; seq++) {
    const [x, y] = await Promise.all([jsm.streams.getMessage(nats.streamName, { seq }), jsm.streams.getMessage(copyStream, { seq })]);
    const [ex, ey] = [x!.json<{ id: string; type: string; schema_version: number }>(), y!.json<{ id: string; type: string; schema_version: number }>()];
    if (ex.id !== ey.id || x!.header.get(VERSION_HEADER) !== y!.header.get(VERSION_HEADER) || y!.subject !== copyPrefix + x!.subject.slice(nats.subjectPrefix.length)) {
      t.fail(`position ${seq} differs: ${x!.subject} ${ex.id} vs ${y!.subject} ${ey.id}`);
    }
    if (seq === position) t.match(ey, { type: 'MappingCreated', schema_version: 2, data: { mapping_id: MAPPING, secret_generation: 1 } }, 'the legacy event, rewritten');
    else if (Buffer.compare(Buffer.from(x!.data), Buffer.from(y!.data)) !== 0) t.fail(`position ${seq}: payload changed`);
  }
  t.pass('same positions, ids, versions and (but for the rewritten one) bytes');

  const verify = await ctl(['projections', 'rebuild', '--verify', '--nats', TEST_NATS_URL, '--database', w.tdb.url, '--stream', copyStream, '--subject-prefix', copyPrefix]);
  t.equal(verify.code, 0, verify.stdout + verify.stderr);
  t.match(verify.stdout, /\nidentical\n/, 'the read models agree with a replay of the copy');

  // A server on the copy, with a fresh read-model database: it replays the copy and runs tunnels
  // with the secret derived from its cluster secret.
  const db2 = await createTestDatabase('tnx_copy');
  const dir = await mkdtemp(join(tmpdir(), 'tnx-secrets-'));
  const clusterSecret = `copy-cluster-secret-${randomBytes(6).toString('hex')}`;
  const server = spawnTunnox([
    'server', '--data-dir', dir, '--nats', TEST_NATS_URL, '--database', db2.url, '--stream', copyStream, '--subject-prefix', copyPrefix,
    '--cluster-secret', clusterSecret, '--bridge-port', '0', '--api-port', '0', '--control-port', '0', '--ws-port', '0', '--control-host', '127.0.0.1', '--public-host', '127.0.0.1', '--metrics-port', '0',
  ]);
  t.teardown(async () => {
    await server.stop();
    await db2.drop();
    await rm(dir, { recursive: true, force: true });
  });
  const ready = await server.waitForLog((e) => e.msg === 'tunnox server ready', 60_000);
  const control = String(ready.controlAddress);
  const pushed: AgentMapping[] = [];
  const tls = { fingerprint: String(ready.fingerprint) };
  const agentA = startAgent({ server: control, tls, clientId: a.clientId, authCode: a.authCode, logger: w.logger, onConfig: (m) => pushed.push(...m) });
  const pushedB: AgentMapping[] = [];
  const agentB = startAgent({ server: control, tls, clientId: b.clientId, authCode: b.authCode, logger: w.logger, onConfig: (m) => pushedB.push(...m) });
  t.teardown(() => Promise.all([agentA.stop(), agentB.stop()]));
  await eventually(() => agentA.listeningPorts().get(MAPPING) === localPort, 'source listener on the server', 30_000);
  await eventually(() => pushedB.some((m) => m.mapping_id === MAPPING), 'target config on the server', 30_000);
  // The target's config ack and its session reaching the server's view race the first visitor.
  await eventually(async () => (await visit(localPort, Buffer.from('ping')).catch(() => Buffer.alloc(0))).toString() === 'gnip', 'first tunnel on the server', 30_000);
  const derived = deriveMappingSecret(deriveMappingMasterKey(clusterSecret), MAPPING, 1);
  t.equal(pushed.find((m) => m.mapping_id === MAPPING)?.secret_key, derived, 'the server pushes HKDF(master key of its cluster secret, mapping id, 1)');
  const bytes = randomBytes(96 * 1024 + 1);
  t.equal(sha(await visit(localPort, bytes)), sha(Buffer.from(bytes).reverse()), 'a tunnel on the copy works with the derived secret');
  t.same(traces(await readModelText(db2.db), stored), [], "the server's read models hold no secret");
  t.same(traces(await readModelText(db2.db), derived), [], 'nor the derived one');
  t.same(traces((await streamText(nats.nc, stateStreamName(copyStream))).text, derived), [], "nor the copy's state stream");
  await Promise.all([agentA.stop(), agentB.stop()]);
  t.equal(await server.stop(), 0, 'the server stops cleanly');

  const grown = await ctl(['events', 'copy', ...source, '--to-stream', copyStream, '--to-subject-prefix', copyPrefix]);
  t.equal(grown.code, 1, 'the copy has grown (the server wrote to it): not a copy of the source any more');
  t.match(grown.stderr, /already holds \d+ events, more than/);
});

t.test('events copy --delete-source: after a complete copy the source and its state stream are gone', async (t) => {
  const nats = await createTestNats();
  t.teardown(() => nats.cleanup());
  const store = await openJetStreamEventStore({ nc: nats.nc, streamName: nats.streamName, subjectPrefix: nats.subjectPrefix });
  const user = await createUser(store, { username: 'del', email: 'del@example.test' }, META);
  await createManagedClient(store, { userId: user.userId, clientName: 'x' }, META);
  const head = (await store.readAll(0, 100)).length;
  await store.close();
  const jsm = await jetstreamManager(nats.nc);
  await ensureStateStream(jsm, stateStreamName(nats.streamName), nats.subjectPrefix);
  const res = await ctl([
    'events', 'copy', '--nats', TEST_NATS_URL, '--stream', nats.streamName, '--subject-prefix', nats.subjectPrefix,
    '--to-stream', `${nats.streamName}_NEW`, '--to-subject-prefix', `${nats.subjectPrefix}-new`, '--delete-source',
  ]);
  t.equal(res.code, 0, res.stderr);
  t.match(JSON.parse(res.stdout), { copied: head, rewritten: 0, deleted_source: [stateStreamName(nats.streamName), nats.streamName] });
  const names: string[] = [];
  for await (const si of jsm.streams.list()) names.push(si.config.name);
  t.notOk(names.includes(nats.streamName), 'source deleted');
  t.notOk(names.includes(stateStreamName(nats.streamName)), 'its state stream deleted');
  t.equal((await jsm.streams.info(`${nats.streamName}_NEW`)).state.messages, head, 'the copy holds every event');
  const missing = await ctl(['events', 'copy', '--nats', TEST_NATS_URL, '--stream', nats.streamName, '--subject-prefix', nats.subjectPrefix, '--to-stream', 'X', '--to-subject-prefix', 'x']);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /no JetStream stream/);
});

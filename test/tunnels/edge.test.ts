import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { connect, createServer, type Socket } from 'node:net';
import { isAnonymousClientId } from '../../shared/contracts/ids.js';
import { verifySecret } from '../../shared/platform/secrets.js';
import { createLogger } from '../../shared/platform/logger.js';
import { encodeFrame } from '../../shared/wire/codec.js';
import { PROTOCOL_VERSION, PacketType } from '../../shared/wire/packets.js';
import { newNonce } from '../../shared/wire/proof.js';
import { createMemoryBus } from '../../shared/bus/memory.js';
import { createWorld, eventually, freePort, canConnect, HELLO, login, outcome, rawTunnel, sha, tunnelOpenFrame, WirePeer, type PeerSession, type World } from './world.js';

async function sessionEvents(w: World, clientId: number): Promise<{ type: string; session: string }[]> {
  const { events } = await w.store.readStream(`client-session.${clientId}`);
  return events.map((e) => ({ type: e.type, session: (e.data as { session_id: string }).session_id }));
}

t.test('handshake with a managed client: accepted, full config pushed, session recorded', async (t) => {
  const w = await createWorld(t);
  const user = await w.user();
  const a = await w.client(user);
  const b = await w.client(user);
  const m = await w.mapping({ userId: user, sourceClientId: a.clientId, targetClientId: b.clientId, targetPort: 3306, localPort: 13306 });

  const peer = await WirePeer.connect(w.edge.controlPort);
  peer.send(PacketType.Handshake, { ...HELLO, client_id: a.clientId, auth_code: a.authCode });
  const resp = await peer.next();
  t.equal(resp?.type, PacketType.HandshakeResp);
  if (resp?.type !== PacketType.HandshakeResp || !resp.body.ok) throw new Error('not ok');
  t.equal(resp.body.client_id, a.clientId);
  t.equal(resp.body.client_type, 'managed');
  t.equal(resp.body.node_id, 'node-001');
  t.equal(resp.body.protocol_version, PROTOCOL_VERSION);
  t.notOk('auth_code' in resp.body, 'no auth code is ever sent back to a managed client');

  const sync = await peer.next();
  if (sync?.type !== PacketType.Command || sync.body.name !== 'config.sync') throw new Error(`expected config.sync, got ${JSON.stringify(sync)}`);
  const row = await w.tdb.db.selectFrom('clients').select('config_version').where('client_id', '=', a.clientId).executeTakeFirstOrThrow();
  t.equal(sync.body.payload.version, row.config_version);
  t.same(sync.body.payload.mappings, [
    { mapping_id: m.mappingId, protocol: 'tcp', role: 'source', local_host: '127.0.0.1', local_port: 13306, secret_key: await w.secretOf(m.mappingId) },
  ]);
  peer.send(PacketType.CommandResp, { id: sync.body.id, ok: true });

  // The target sees its own side only: where to dial, never where the source listens.
  const peerB = await login(w, b.clientId, b.authCode);
  const syncB = await peerB.next();
  if (syncB?.type !== PacketType.Command || syncB.body.name !== 'config.sync') throw new Error('expected config.sync');
  t.same(syncB.body.payload.mappings, [
    { mapping_id: m.mappingId, protocol: 'tcp', role: 'target', target_host: '127.0.0.1', target_port: 3306, secret_key: await w.secretOf(m.mappingId) },
  ]);

  await eventually(async () => (await sessionEvents(w, a.clientId)).length === 1, 'ClientConnected');
  t.same((await sessionEvents(w, a.clientId)).map((e) => e.type), ['ClientConnected']);
  t.match(w.edge.stats(), { sessions: 2, tunnels: 0, publicListeners: 0, credentialChecks: 2, tokenLogins: 0 });

  peer.close();
  await eventually(async () => (await sessionEvents(w, a.clientId)).length === 2, 'ClientDisconnected');
  const facts = await sessionEvents(w, a.clientId);
  t.same(facts.map((e) => e.type), ['ClientConnected', 'ClientDisconnected']);
  t.equal(facts[0]!.session, facts[1]!.session);
  await eventually(() => w.edge.stats().sessions === 1, 'session removed');
});

t.test('a config change is pushed to the connected agent with a higher version', async (t) => {
  const w = await createWorld(t);
  const user = await w.user();
  const a = await w.client(user);
  const b = await w.client(user);
  const peer = await login(w, b.clientId, b.authCode);
  const first = await peer.next();
  if (first?.type !== PacketType.Command || first.body.name !== 'config.sync') throw new Error('expected config.sync');
  t.same(first.body.payload.mappings, []);

  const m = await w.mapping({ userId: user, sourceClientId: a.clientId, targetClientId: b.clientId, targetPort: 22, localPort: 2222 });
  const second = await peer.next();
  if (second?.type !== PacketType.Command || second.body.name !== 'config.sync') throw new Error('expected config.sync');
  t.ok(second.body.payload.version > first.body.payload.version);
  t.same(second.body.payload.mappings.map((x) => [x.mapping_id, x.role]), [[m.mappingId, 'target']]);

  await w.deleteMapping(m.mappingId);
  const third = await peer.next();
  if (third?.type !== PacketType.Command || third.body.name !== 'config.sync') throw new Error('expected config.sync');
  t.ok(third.body.payload.version > second.body.payload.version);
  t.same(third.body.payload.mappings, []);
  peer.close();
});

t.test('wrong auth code and unknown client id get the same refusal', async (t) => {
  const w = await createWorld(t);
  const user = await w.user();
  const a = await w.client(user);
  const answers = [];
  for (const creds of [
    { client_id: a.clientId, auth_code: a.authCode + 'x' },
    { client_id: 600_999_999, auth_code: a.authCode },
    { client_id: a.clientId }, // half a credential
  ]) {
    const peer = await WirePeer.connect(w.edge.controlPort);
    peer.send(PacketType.Handshake, { ...HELLO, ...creds });
    const resp = await peer.next();
    answers.push(resp);
    t.equal(await peer.next(), undefined, 'then the edge closes the connection');
    await peer.closed;
  }
  for (const resp of answers) t.same(resp, { type: PacketType.HandshakeResp, body: { ok: false, error: { code: 'TNX_AUTH_FAILED', message: 'authentication failed' } } });
  t.equal(w.edge.stats().sessions, 0);
});

t.test('an unsupported protocol version is refused', async (t) => {
  const w = await createWorld(t);
  const peer = await WirePeer.connect(w.edge.controlPort);
  peer.send(PacketType.Handshake, { protocol_version: 99, client_version: 'future' });
  const resp = await peer.next();
  t.match(resp, { type: PacketType.HandshakeResp, body: { ok: false, error: { code: 'TNX_WIRE_PROTOCOL_VERSION' } } });
  await peer.closed;
});

t.test('no credentials: an anonymous client is registered and its code works once saved', async (t) => {
  const w = await createWorld(t);
  const peer = await WirePeer.connect(w.edge.controlPort);
  peer.send(PacketType.Handshake, HELLO);
  const resp = await peer.next();
  if (resp?.type !== PacketType.HandshakeResp || !resp.body.ok) throw new Error('not ok');
  t.equal(resp.body.client_type, 'anonymous');
  t.ok(isAnonymousClientId(resp.body.client_id), 'id in the anonymous range');
  const code = resp.body.auth_code;
  t.match(code, /^tnxc_/);
  const row = await eventually(
    () => w.tdb.db.selectFrom('clients').selectAll().where('client_id', '=', resp.body.ok ? resp.body.client_id : 0).executeTakeFirst(),
    'projected client',
  );
  t.equal(row.client_type, 'anonymous');
  t.not(row.auth_code_hash, code, 'only a hash is stored');
  t.ok(await verifySecret(code!, row.auth_code_hash));
  peer.close();

  const again = await login(w, resp.body.client_id, code!);
  t.pass('the issued code logs in');
  again.close();
});

t.test('a second login of the same client replaces the first cleanly', async (t) => {
  const w = await createWorld(t);
  const user = await w.user();
  const a = await w.client(user);
  const first = await login(w, a.clientId, a.authCode);
  await first.next(); // config.sync
  const second = await login(w, a.clientId, a.authCode);

  const notice = await first.next();
  t.match(notice, { type: PacketType.Command, body: { name: 'session.close', payload: { reason: 'replaced' } } });
  t.equal(await first.next(), undefined, 'the old connection is closed');
  await first.closed;

  const sync = await second.next();
  t.match(sync, { type: PacketType.Command, body: { name: 'config.sync' } }, 'the new session is live');
  t.equal(w.edge.stats().sessions, 1);

  await eventually(async () => (await sessionEvents(w, a.clientId)).length === 3, 'three session facts');
  const facts = await sessionEvents(w, a.clientId);
  t.same(facts.map((f) => f.type), ['ClientConnected', 'ClientDisconnected', 'ClientConnected'], 'old session ends before the new one is recorded');
  t.equal(facts[0]!.session, facts[1]!.session);
  t.not(facts[2]!.session, facts[0]!.session);
  const row = await eventually(async () => {
    const r = await w.tdb.db.selectFrom('clients').select(['status', 'session_id']).where('client_id', '=', a.clientId).executeTakeFirstOrThrow();
    return r.session_id === facts[2]!.session ? r : undefined;
  }, 'client row shows the new session');
  t.equal(row.status, 'online');
  second.close();
});

t.test('malformed, oversized, unexpected and silent first frames close only their own connection', async (t) => {
  const w = await createWorld(t, { maxFrameSize: 4096, handshakeTimeoutMs: 300 });
  const user = await w.user();
  const a = await w.client(user);
  const b = await w.client(user);
  const good = await login(w, b.clientId, b.authCode);
  await good.next();

  const attempts: [string, Buffer][] = [
    ['garbage', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')],
    ['oversized header only', Buffer.from([PacketType.Handshake, 0, 0, 0x10, 0x01])],
    ['bad JSON', encodeFrame(PacketType.Handshake, Buffer.from('{nope'))],
    ['schema violation', encodeFrame(PacketType.Handshake, Buffer.from('{"protocol_version":1}'))],
    ['unexpected first type', encodeFrame(PacketType.Heartbeat, Buffer.from('{"ts":1}'))],
    ['reserved type', encodeFrame(PacketType.TunnelData, Buffer.from('xx'))],
    ['silent', Buffer.alloc(0)],
  ];
  for (const [label, bytes] of attempts) {
    const s = connect({ host: '127.0.0.1', port: w.edge.controlPort });
    s.on('error', () => undefined);
    let got = 0;
    s.on('data', (c: Buffer) => (got += c.length));
    s.write(bytes);
    await new Promise((r) => s.once('close', r));
    t.equal(got, 0, `${label}: closed without an answer`);
  }

  // The established session still works: a new mapping reaches it.
  await w.mapping({ userId: user, sourceClientId: a.clientId, targetClientId: b.clientId, targetPort: 80, localPort: 8088 });
  t.match(await good.next(), { type: PacketType.Command, body: { name: 'config.sync' } }, 'the good session is unaffected');
  t.equal(w.edge.stats().sessions, 1);
  good.close();
});

t.test('a protocol violation inside a session closes that session only', async (t) => {
  const w = await createWorld(t);
  const user = await w.user();
  const a = await w.client(user);
  const b = await w.client(user);
  const bad = await login(w, a.clientId, a.authCode);
  const good = await login(w, b.clientId, b.authCode);
  await bad.next();
  await good.next();
  bad.send(PacketType.Handshake, HELLO); // not allowed after the handshake
  await bad.closed;
  t.equal(w.edge.stats().sessions, 1);
  good.send(PacketType.Heartbeat, { ts: Date.now() });
  await w.mapping({ userId: user, sourceClientId: a.clientId, targetClientId: b.clientId, targetPort: 80, localPort: 8089 });
  t.match(await good.next(), { type: PacketType.Command, body: { name: 'config.sync' } });
  good.close();
});

t.test('a silent session is closed after about three heartbeat intervals', async (t) => {
  const w = await createWorld(t, { heartbeatIntervalMs: 50 });
  const user = await w.user();
  const a = await w.client(user);
  const peer = await login(w, a.clientId, a.authCode);
  let heartbeats = 0;
  peer.socket.on('data', (c: Buffer) => {
    if (c[0] === PacketType.Heartbeat) heartbeats++;
  });
  // The edge heartbeats us but we never answer.
  await peer.closed;
  t.ok(heartbeats >= 1, 'the edge sent heartbeats before giving up');
  await eventually(() => w.edge.stats().sessions === 0, 'session gone');
});

t.test('tunnel opens with a wrong secret, unknown mapping, wrong role, stale or replayed proof are refused', async (t) => {
  const w = await createWorld(t);
  const user = await w.user();
  const a = await w.client(user);
  const b = await w.client(user);
  const m = await w.mapping({ userId: user, sourceClientId: a.clientId, targetClientId: b.clientId, targetPort: 9, localPort: await freePort() });
  const secret = await w.secretOf(m.mappingId);
  const source = await login(w, a.clientId, a.authCode);
  const targetPeer = await login(w, b.clientId, b.authCode);

  const open = async (o: { mapping?: number; client?: number; role?: 'source' | 'target'; secret?: string; ts?: number; session?: PeerSession | null }) => {
    const f = { mapping_id: o.mapping ?? m.mappingId, tunnel_id: newNonce(), role: o.role ?? ('source' as const), client_id: o.client ?? a.clientId };
    const session = o.session === null ? undefined : (o.session ?? source.session);
    const frame = tunnelOpenFrame(f, { secret: o.secret ?? secret, session }, o.ts);
    const peer = await WirePeer.connect(w.edge.controlPort);
    peer.send(PacketType.TunnelOpen, frame);
    const ack = await peer.next();
    await peer.closed;
    return { ack, frame };
  };
  const refused = { type: PacketType.TunnelOpenAck, body: { ok: false, error: { code: 'TNX_TUNNEL_REFUSED', message: 'tunnel refused' } } };

  t.match((await open({ secret: 'x'.repeat(64) })).ack, refused, 'wrong secret');
  t.match((await open({ mapping: 999_999 })).ack, refused, 'unknown mapping');
  t.match((await open({ role: 'target' })).ack, refused, 'source client claiming the target role');
  t.match((await open({ client: b.clientId })).ack, refused, 'target client claiming the source role (with its own session, too)');
  t.match((await open({ client: b.clientId, session: targetPeer.session })).ack, refused);
  t.match((await open({ ts: Date.now() - 3_600_000 })).ack, refused, 'stale timestamp');
  t.match((await open({ role: 'target', client: b.clientId, session: targetPeer.session })).ack, refused, 'target half for a tunnel nobody requested');
  t.match((await open({ session: targetPeer.session })).ack, refused, 'another client\'s session');
  t.match(
    (await open({ session: null })).ack,
    { type: PacketType.TunnelOpenAck, body: { ok: false, error: { code: 'TNX_TUNNEL_REFUSED', message: /upgrade the agent/ } } },
    'the mapping secret alone (an older agent\'s proof) opens nothing, and says why',
  );

  // A genuine open is authorized (the target has no mapping config acked here, so it fails for
  // the target's reason only) ...
  targetPeer.close();
  await eventually(() => w.edge.stats().sessions === 1, 'target gone');
  const genuine = await open({});
  t.match(genuine.ack, { body: { ok: false, error: { code: 'TNX_TUNNEL_TARGET_OFFLINE' } } });
  // ... and the very same frame replayed is refused.
  const peer = await WirePeer.connect(w.edge.controlPort);
  peer.send(PacketType.TunnelOpen, genuine.frame);
  t.match(await peer.next(), refused, 'replayed TunnelOpen');
  await peer.closed;
  t.equal(w.edge.stats().tunnels, 0);
  source.close();
});

t.test('public listener follows the mapping: opened on create, closed on delete', async (t) => {
  const w = await createWorld(t);
  const user = await w.user();
  const b = await w.client(user);
  const port = await freePort();
  const m = await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: 9, publicPort: port });
  await eventually(() => w.edge.stats().publicListeners === 1, 'public listener open');
  t.ok(await canConnect(port), 'public port accepts');
  await w.deleteMapping(m.mappingId);
  await eventually(async () => w.edge.stats().publicListeners === 0 && !(await canConnect(port)), 'public listener closed');
  t.notOk(await canConnect(port), 'public port refuses after delete');
});

t.test('stop() closes sessions with session.close and records the disconnects', async (t) => {
  const w = await createWorld(t);
  const user = await w.user();
  const a = await w.client(user);
  const peer = await login(w, a.clientId, a.authCode);
  await peer.next();
  await w.edge.stop();
  t.match(await peer.next(), { type: PacketType.Command, body: { name: 'session.close', payload: { reason: 'shutdown' } } });
  await peer.closed;
  const facts = await sessionEvents(w, a.clientId);
  t.same(facts.map((f) => f.type), ['ClientConnected', 'ClientDisconnected']);
  t.notOk(await canConnect(w.edge.controlPort), 'control port closed');
});

function readAll(socket: Socket, initial: Buffer): Promise<Buffer> {
  const chunks = [initial];
  socket.on('data', (c: Buffer) => chunks.push(c));
  socket.resume();
  return new Promise((resolve) => socket.once('end', () => resolve(Buffer.concat(chunks))));
}

async function pairedWorld(t: Test, edgeOpts: Parameters<typeof createWorld>[1] = {}) {
  const w = await createWorld(t, edgeOpts);
  const user = await w.user();
  const a = await w.client(user);
  const b = await w.client(user);
  const m = await w.mapping({ userId: user, sourceClientId: a.clientId, targetClientId: b.clientId, targetPort: 5432, localPort: await freePort() });
  const secret = await w.secretOf(m.mappingId);
  const target = await login(w, b.clientId, b.authCode);
  const sync = await target.next();
  if (sync?.type !== PacketType.Command) throw new Error('expected config.sync');
  target.send(PacketType.CommandResp, { id: sync.body.id, ok: true }); // like an agent: tunnel requests wait for this
  // The source agent's control session: its tunnel opens are bound to it, and it vouches for its ends.
  const source = await login(w, a.clientId, a.authCode);
  return { w, a, b, m, secret, target, source, srcAuth: { secret, session: source.session } };
}

/** The target half's auth for a tunnel.open it got on `target`. */
function targetAuth(secret: string, target: WirePeer, request: { ticket?: string | undefined }) {
  return { secret, session: target.session, ticket: request.ticket };
}

t.test('raw edge pairing: bytes sent right after TunnelOpen are delivered, in order, both ways', async (t) => {
  const { w, a, b, m, secret, target, source: sourceControl, srcAuth } = await pairedWorld(t);
  const early = randomBytes(3000);
  const later = randomBytes(200_000);
  const tunnelId = newNonce();
  const source = rawTunnel(w.edge.controlPort, { mapping_id: m.mappingId, tunnel_id: tunnelId, role: 'source', client_id: a.clientId }, srcAuth, early);

  const cmd = await target.next();
  if (cmd?.type !== PacketType.Command || cmd.body.name !== 'tunnel.open') throw new Error(`expected tunnel.open, got ${JSON.stringify(cmd)}`);
  t.match(cmd.body.payload.ticket, /^[0-9a-f]{32}$/, 'the request carries a one-time ticket');
  t.same(cmd.body.payload, { tunnel_id: tunnelId, mapping_id: m.mappingId, target_host: '127.0.0.1', target_port: 5432, ticket: cmd.body.payload.ticket });
  const banner = randomBytes(5000);
  const tgt = await rawTunnel(w.edge.controlPort, { mapping_id: m.mappingId, tunnel_id: tunnelId, role: 'target', client_id: b.clientId }, targetAuth(secret, target, cmd.body.payload), banner);
  target.send(PacketType.CommandResp, { id: cmd.body.id, ok: true });
  const src = await source;
  t.same(src.ack.body, { ok: true, tunnel_id: tunnelId });
  t.same(tgt.ack.body, { ok: true, tunnel_id: tunnelId });
  t.equal(w.edge.stats().tunnels, 1);

  const atTarget = readAll(tgt.socket, tgt.remainder);
  const atSource = readAll(src.socket, src.remainder);
  // Like an agent, each side vouches for its FIN with TunnelEnd on its control connection.
  src.socket.end(later);
  sourceControl.send(PacketType.TunnelEnd, { tunnel_id: tunnelId, role: 'source' });
  t.equal(sha(await atTarget), sha(Buffer.concat([early, later])), 'target got the early bytes first, then the rest');
  target.send(PacketType.TunnelEnd, { tunnel_id: tunnelId, role: 'target' }); // before the FIN this time: either order works
  tgt.socket.end();
  t.equal(sha(await atSource), sha(banner), 'source got the target\'s early bytes');
  await eventually(() => w.edge.stats().tunnels === 0, 'tunnel closed');
  target.close();
  sourceControl.close();
});

/** Pairs a raw source tunnel with a raw target tunnel through the edge; returns both, acked. */
async function rawPair(t: Test, edgeOpts: Parameters<typeof createWorld>[1] = {}) {
  const world = await pairedWorld(t, edgeOpts);
  const { w, a, b, m, secret, target, srcAuth } = world;
  const tunnelId = newNonce();
  const source = rawTunnel(w.edge.controlPort, { mapping_id: m.mappingId, tunnel_id: tunnelId, role: 'source', client_id: a.clientId }, srcAuth);
  const cmd = await target.next();
  if (cmd?.type !== PacketType.Command || cmd.body.name !== 'tunnel.open') throw new Error('expected tunnel.open');
  const tgt = await rawTunnel(w.edge.controlPort, { mapping_id: m.mappingId, tunnel_id: tunnelId, role: 'target', client_id: b.clientId }, targetAuth(secret, target, cmd.body.payload));
  target.send(PacketType.CommandResp, { id: cmd.body.id, ok: true });
  const src = await source;
  if (src.ack.type !== PacketType.TunnelOpenAck || !src.ack.body.ok || tgt.ack.type !== PacketType.TunnelOpenAck || !tgt.ack.body.ok) {
    throw new Error('tunnel not acked');
  }
  return { ...world, tunnelId, src, tgt };
}

t.test('a deleted client-to-client mapping resets its running tunnels at the edge, whatever the agents do', async (t) => {
  // Raw agents that ignore config pushes: only the edge can end the tunnel.
  const { w, m, src, tgt } = await rawPair(t);
  const atSource = outcome(src.socket, src.remainder);
  const atTarget = outcome(tgt.socket, tgt.remainder);
  await w.deleteMapping(m.mappingId);
  t.equal((await atSource).how, 'reset', 'source half reset');
  t.equal((await atTarget).how, 'reset', 'target half reset');
  await eventually(() => w.edge.stats().tunnels === 0, 'tunnel gone');
});

t.test('an agent FIN that its agent does not vouch for (TunnelEnd) reaches the other side as a reset', async (t) => {
  await t.test('target FIN, then its control session dies (a killed agent): the source is reset', async (t) => {
    const { w, src, tgt, target } = await rawPair(t);
    const atSource = outcome(src.socket, src.remainder);
    const sent = randomBytes(50_000);
    tgt.socket.end(sent);
    // A kill closes both sockets in the same tick; the kernel sends FIN on each.
    target.socket.end();
    const got = await atSource;
    t.equal(got.how, 'reset', 'a truncated download does not look complete');
    await eventually(() => w.edge.stats().tunnels === 0, 'tunnel closed');
  });
  await t.test('control session gone before the FIN arrives: reset at once', async (t) => {
    const { w, src, tgt, target } = await rawPair(t);
    const atSource = outcome(src.socket, src.remainder);
    target.close();
    await eventually(() => w.edge.stats().sessions === 1, 'target session gone (the source\'s remains)');
    tgt.socket.end();
    t.equal((await atSource).how, 'reset');
  });
  await t.test('no TunnelEnd within the wait: reset', async (t) => {
    const { src, tgt, target } = await rawPair(t, { endAttestTimeoutMs: 200 });
    const atSource = outcome(src.socket, src.remainder);
    tgt.socket.end();
    t.equal((await atSource).how, 'reset', 'the control session is alive but never vouched');
    target.close();
  });
  await t.test('source FIN without TunnelEnd (a killed source agent): the upload reaches the target as a reset', async (t) => {
    const { src, tgt, target, source: sourceControl } = await rawPair(t);
    const atTarget = outcome(tgt.socket, tgt.remainder);
    src.socket.end(randomBytes(20_000));
    sourceControl.socket.end();
    t.equal((await atTarget).how, 'reset');
    target.close();
  });
  await t.test('a TunnelEnd from another client, for the other half, or carrying reset, vouches for nothing', async (t) => {
    const { tunnelId, src, tgt, target, source: sourceControl } = await rawPair(t, { endAttestTimeoutMs: 300 });
    const atSource = outcome(src.socket, src.remainder);
    sourceControl.send(PacketType.TunnelEnd, { tunnel_id: tunnelId, role: 'target' }); // a is not the target
    target.send(PacketType.TunnelEnd, { tunnel_id: tunnelId, role: 'source' }); // b is not the source
    target.send(PacketType.TunnelEnd, { tunnel_id: tunnelId, role: 'target', reset: true }); // the edge's notice, never an agent's vouch
    tgt.socket.end();
    t.equal((await atSource).how, 'reset');
    sourceControl.close();
    target.close();
  });
  await t.test('vouched: a clean end, and the other direction still flows after it (half-close)', async (t) => {
    const { tunnelId, src, tgt, target, source: sourceControl } = await rawPair(t);
    const atSource = outcome(src.socket, src.remainder);
    const banner = randomBytes(70_000);
    tgt.socket.end(banner);
    await new Promise((r) => tgt.socket.once('finish', r));
    target.send(PacketType.TunnelEnd, { tunnel_id: tunnelId, role: 'target' });
    const got = await atSource;
    t.equal(got.how, 'end');
    t.equal(sha(got.bytes), sha(banner), 'every byte, then a clean end');
    const atTarget = outcome(tgt.socket, tgt.remainder);
    const upload = randomBytes(30_000);
    src.socket.end(upload);
    sourceControl.send(PacketType.TunnelEnd, { tunnel_id: tunnelId, role: 'source' });
    const up = await atTarget;
    t.equal(up.how, 'end');
    t.equal(sha(up.bytes), sha(upload), 'the source still sends after the target ended, then ends cleanly');
    target.close();
    sourceControl.close();
  });
});

t.test('a target that refuses or never answers fails the source with a reason', async (t) => {
  const { w, a, m, target, srcAuth } = await pairedWorld(t, { tunnelOpenTimeoutMs: 300 });
  const open = (tunnelId: string) =>
    rawTunnel(w.edge.controlPort, { mapping_id: m.mappingId, tunnel_id: tunnelId, role: 'source', client_id: a.clientId }, srcAuth);

  const refused = open(newNonce());
  const cmd = await target.next();
  if (cmd?.type !== PacketType.Command) throw new Error('expected a command');
  target.send(PacketType.CommandResp, { id: cmd.body.id, ok: false, error: { code: 'TNX_AGENT_DIAL_FAILED', message: 'ECONNREFUSED' } });
  const r1 = await refused;
  t.match(r1.ack.body, { ok: false, error: { code: 'TNX_TUNNEL_TARGET_FAILED', message: 'ECONNREFUSED' } });
  r1.socket.destroy();

  const ignored = open(newNonce());
  await target.next(); // tunnel.open, never answered
  const r2 = await ignored;
  t.match(r2.ack.body, { ok: false, error: { code: 'TNX_TUNNEL_TIMEOUT' } });
  r2.socket.destroy();
  t.same(w.edge.stats().tunnels, 0);
  target.close();
});

t.test('pending tunnels fail when the target session is replaced', async (t) => {
  const { w, a, b, m, target, srcAuth } = await pairedWorld(t);
  const pending = rawTunnel(w.edge.controlPort, { mapping_id: m.mappingId, tunnel_id: newNonce(), role: 'source', client_id: a.clientId }, srcAuth);
  t.match(await target.next(), { body: { name: 'tunnel.open' } });
  const replacement = await login(w, b.clientId, b.authCode);
  const r = await pending;
  t.match(r.ack.body, { ok: false, error: { code: 'TNX_TUNNEL_TARGET_OFFLINE' } });
  r.socket.destroy();
  replacement.close();
});

t.test('a tunnel request never overtakes the config push that tells the target about the mapping', async (t) => {
  const w = await createWorld(t);
  const user = await w.user();
  const b = await w.client(user);
  const target = await login(w, b.clientId, b.authCode);
  const initial = await target.next();
  if (initial?.type !== PacketType.Command) throw new Error('expected config.sync');
  target.send(PacketType.CommandResp, { id: initial.body.id, ok: true });

  const port = await freePort();
  const m = await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: 9, publicPort: port });
  const push = await target.next();
  if (push?.type !== PacketType.Command || push.body.name !== 'config.sync') throw new Error('expected config.sync');
  t.same(push.body.payload.mappings.map((x) => x.mapping_id), [m.mappingId]);
  // The agent has not answered the push yet; a visitor arrives on the already open public port.
  await eventually(() => w.edge.stats().publicListeners === 1, 'public listener');
  const visitor = connect({ host: '127.0.0.1', port });
  visitor.on('error', () => undefined);
  await new Promise((r) => visitor.once('connect', r));
  const early = await target.next(300).catch(() => 'nothing');
  t.equal(early, 'nothing', 'no tunnel.open while the config push is unanswered');
  target.send(PacketType.CommandResp, { id: push.body.id, ok: true });
  t.match(await target.next(), { type: PacketType.Command, body: { name: 'tunnel.open', payload: { mapping_id: m.mappingId } } }, 'then the request follows');
  visitor.destroy();
  target.close();
});

t.test('anonymous registration is rationed per address and can be switched off', async (t) => {
  const w = await createWorld(t, { anonymousPerMinutePerIp: 2 });
  const codes: string[] = [];
  for (let i = 0; i < 3; i++) {
    const peer = await WirePeer.connect(w.edge.controlPort);
    peer.send(PacketType.Handshake, HELLO);
    const resp = await peer.next();
    codes.push(resp?.type === PacketType.HandshakeResp ? (resp.body.ok ? 'ok' : resp.body.error.code) : 'none');
    peer.close();
  }
  t.same(codes, ['ok', 'ok', 'TNX_AUTH_RATE_LIMITED'], 'a burst of 2, then refused');

  const closed = await createWorld(t, { allowAnonymous: false });
  const peer = await WirePeer.connect(closed.edge.controlPort);
  peer.send(PacketType.Handshake, HELLO);
  t.match(await peer.next(), { type: PacketType.HandshakeResp, body: { ok: false, error: { code: 'TNX_AUTH_ANONYMOUS_DISABLED' } } });
  await peer.closed;
  const registered = await closed.tdb.db.selectFrom('clients').select('client_id').execute();
  t.same(registered, [], 'nothing was registered');
});

/** One login attempt; the answer's code ('ok' when accepted). */
async function attempt(w: World, clientId: number, authCode: string, from?: string): Promise<string> {
  const peer = await WirePeer.connect(w.edge.controlPort, from);
  peer.send(PacketType.Handshake, { ...HELLO, client_id: clientId, auth_code: authCode });
  const resp = await peer.next();
  peer.close();
  return resp?.type === PacketType.HandshakeResp ? (resp.body.ok ? 'ok' : resp.body.error.code) : 'none';
}

const F = 'TNX_AUTH_FAILED';
const RL = 'TNX_AUTH_RATE_LIMITED';

t.test('failed logins are rationed per client id: the limit answers with a retryable code', async (t) => {
  const w = await createWorld(t, { failedLoginsPerMinutePerIp: 2, failedLoginsPerMinutePerClient: 2 });
  const user = await w.user();
  const a = await w.client(user);
  const codes: string[] = [];
  for (const code of [a.authCode + 'x', a.authCode + 'y', a.authCode]) codes.push(await attempt(w, a.clientId, code));
  t.same(codes, [F, F, RL], 'after two failures for this id, even the right code waits (from an address it never logged in from)');
});

t.test('an agent with the right code gets through a per-address lockout when its own id is not under attack', async (t) => {
  const w = await createWorld(t, { failedLoginsPerMinutePerIp: 2, failedLoginsPerMinutePerClient: 3 });
  const user = await w.user();
  const victim = await w.client(user);
  const attacked = await w.client(user);
  const codes: string[] = [];
  for (let i = 0; i < 5; i++) codes.push(await attempt(w, attacked.clientId, `tnxc_guess${i}`));
  // Two charged to the address and the id, the third to the id alone (address over budget), then both are spent.
  t.same(codes, [F, F, F, RL, RL], 'the attacker is stopped');
  t.equal(await attempt(w, victim.clientId, victim.authCode), 'ok', 'an agent sharing the attacker\'s address still logs in');
  t.equal(await attempt(w, victim.clientId, victim.authCode + 'z'), F, 'a wrong code for the victim id now counts against that id');
});

t.test('failed logins are counted before the slow credential check: concurrency cannot overshoot the limit', async (t) => {
  const w = await createWorld(t, { failedLoginsPerMinutePerIp: 3, failedLoginsPerMinutePerClient: 3, maxConcurrentLogins: 64 });
  const user = await w.user();
  const a = await w.client(user);
  const codes = await Promise.all(Array.from({ length: 12 }, (_, i) => attempt(w, a.clientId, `tnxc_guess${i}`)));
  t.equal(codes.filter((c) => c === F).length, 3, 'exactly the limit reached a verdict');
  t.equal(codes.filter((c) => c === RL).length, 9, 'the rest were refused before scrypt');
});

t.test('more addresses do not buy more guesses for one client id; its usual address still gets in', async (t) => {
  const w = await createWorld(t, { failedLoginsPerMinutePerIp: 30, failedLoginsPerMinutePerClient: 3 });
  const user = await w.user();
  const a = await w.client(user);
  t.equal(await attempt(w, a.clientId, a.authCode, '127.0.0.1'), 'ok', 'the agent logs in from its usual address');
  const codes: string[] = [];
  for (let i = 2; i <= 9; i++) codes.push(await attempt(w, a.clientId, `tnxc_guess${i}`, `127.0.0.${i}`));
  t.same(codes, [F, F, F, RL, RL, RL, RL, RL], '8 addresses, one guess each: only the id\'s 3 got a verdict');
  t.equal(await attempt(w, a.clientId, a.authCode, '127.0.0.1'), 'ok', 'an attack from elsewhere does not lock the agent out at its usual address');
  t.equal(await attempt(w, a.clientId, a.authCode, '127.0.0.20'), RL, 'a new address must wait while the id is under attack (retryable)');
});

t.test('rejected connections cannot flood the log: a few lines per reason, then one summary', async (t) => {
  const lines: { level: number; msg: string; suppressed?: number }[] = [];
  const logger = createLogger({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as { level: number; msg: string }) });
  const w = await createWorld(t, { logger, warningsPerInterval: 5 });
  const user = await w.user();
  const a = await w.client(user);
  const before = lines.length;
  for (let i = 0; i < 200; i++) {
    const s = connect({ host: '127.0.0.1', port: w.edge.controlPort });
    s.on('error', () => undefined);
    s.write('GET / HTTP/1.1\r\n\r\n');
    await new Promise((r) => s.once('close', r));
  }
  for (let i = 0; i < 20; i++) t.equal(await attempt(w, a.clientId, `tnxc_guess${i}`), i < 10 ? F : RL);
  await w.edge.stop(); // ends the interval: the summaries are written
  const warnings = lines.slice(before).filter((l) => l.level === 40);
  const count = (msg: string) => warnings.filter((l) => l.msg === msg).length;
  t.equal(count('connection closed: bad first frame'), 5, '5 of 200 bad first frames logged');
  t.equal(count('handshake refused: wrong auth code'), 5, '5 of 10 wrong codes logged');
  t.equal(count('handshake refused: too many failed logins for this client id or address'), 5);
  t.match(
    warnings.filter((l) => l.suppressed !== undefined).map((l) => [l.msg, l.suppressed]).sort(),
    [
      ['suppressed 195 similar warnings: connection closed: bad first frame', 195],
      ['suppressed 5 similar warnings: handshake refused: too many failed logins for this client id or address', 5],
      ['suppressed 5 similar warnings: handshake refused: wrong auth code', 5],
    ],
  );
  t.ok(warnings.length <= 20, `${warnings.length} warning lines in all for 220 rejected connections`);
});

t.test('credential checks beyond the concurrency cap are refused with a retryable code', async (t) => {
  const w = await createWorld(t, { maxConcurrentLogins: 1 });
  const user = await w.user();
  const a = await w.client(user);
  const peers = await Promise.all(Array.from({ length: 6 }, () => WirePeer.connect(w.edge.controlPort)));
  for (const p of peers) p.send(PacketType.Handshake, { ...HELLO, client_id: a.clientId, auth_code: a.authCode });
  const codes = await Promise.all(
    peers.map(async (p) => {
      const resp = await p.next();
      p.close();
      return resp?.type === PacketType.HandshakeResp ? (resp.body.ok ? 'ok' : resp.body.error.code) : 'none';
    }),
  );
  t.ok(codes.includes('ok'), 'at least one login got through');
  t.ok(codes.includes('TNX_AUTH_RATE_LIMITED'), 'concurrent checks beyond the cap were refused, not queued');
  t.notOk(codes.includes('TNX_AUTH_FAILED'), 'nobody was told the code is wrong');
});

t.test('lost change notices: the periodic refresh of the view still opens, pushes and closes', async (t) => {
  // The edge's read-model feed listens on a bus nobody publishes to: every notice is "lost".
  const deaf = createMemoryBus();
  t.teardown(() => deaf.close());
  const w = await createWorld(t, { reconcileIntervalMs: 100 }, { feed: 'read-models', feedBus: deaf, viewRefreshMs: 100 });
  const user = await w.user();
  const a = await w.client(user);
  const b = await w.client(user);
  const agentA = w.agent({ clientId: a.clientId, authCode: a.authCode });
  t.teardown(() => agentA.stop());
  await eventually(() => agentA.clientId !== undefined && w.edge.stats().sessions === 1, 'agent A connected');

  const publicPort = await freePort();
  const pub = await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: 9, publicPort });
  await eventually(() => canConnect(publicPort), 'public listener opened by the reconcile');
  const localPort = await freePort();
  const c2c = await w.mapping({ userId: user, sourceClientId: a.clientId, targetClientId: b.clientId, targetPort: 9, localPort });
  await eventually(() => agentA.listeningPorts().get(c2c.mappingId) === localPort, 'config pushed to agent A by the reconcile');

  await w.deleteMapping(pub.mappingId);
  await w.deleteMapping(c2c.mappingId);
  await eventually(async () => !(await canConnect(publicPort)), 'public listener closed by the reconcile');
  await eventually(() => !agentA.listeningPorts().has(c2c.mappingId), 'agent A dropped the deleted mapping');
  t.pass('every change arrived without a single notice');
});

t.test('a public port that is busy when the mapping appears is retried until it can be bound', async (t) => {
  const w = await createWorld(t);
  const user = await w.user();
  const b = await w.client(user);
  const port = await freePort();
  const squatter = createServer();
  await new Promise<void>((r) => squatter.listen(port, '127.0.0.1', r));
  await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: 9, publicPort: port });
  await new Promise((r) => setTimeout(r, 300));
  t.equal(w.edge.stats().publicListeners, 0, 'not open while the port is taken');
  await new Promise<void>((r) => squatter.close(() => r()));
  await eventually(() => w.edge.stats().publicListeners === 1, 'public listener opened after the port came free', 10_000);
  t.ok(await canConnect(port), 'public port accepts');
});

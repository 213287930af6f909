import t from 'tap';
import { kickClient } from '../../shared/domain/index.js';
import { PacketType } from '../../shared/wire/packets.js';
import { newNonce, newTicket } from '../../shared/wire/proof.js';
import { createWorld, eventually, freePort, login, META, rawTunnel, startTargetService, tunnelOpenFrame, visit, WirePeer, type TunnelAuth, type World } from './world.js';

/**
 * Tunnel opens are bound to live control sessions (issue 7): a TunnelOpen names a session of its
 * client that is open on this edge and is MACed with that session's tunnel key; a target half
 * also carries the one-time ticket of its tunnel.open. A mapping secret alone, or a session that
 * has ended, opens nothing.
 */

const REFUSED = { type: PacketType.TunnelOpenAck, body: { ok: false, error: { code: 'TNX_TUNNEL_REFUSED' } } };

async function c2cWorld(t: Parameters<typeof createWorld>[0]) {
  const w = await createWorld(t);
  const user = await w.user();
  const a = await w.client(user);
  const b = await w.client(user);
  const m = await w.mapping({ userId: user, sourceClientId: a.clientId, targetClientId: b.clientId, targetPort: 9, localPort: await freePort() });
  return { w, a, b, m, secret: await w.secretOf(m.mappingId) };
}

/** A raw agent logged in whose config push is answered, so tunnel requests to it go out. */
async function readyAgent(w: World, c: { clientId: number; authCode: string }): Promise<WirePeer> {
  const peer = await login(w, c.clientId, c.authCode);
  const sync = await peer.next();
  if (sync?.type !== PacketType.Command || sync.body.name !== 'config.sync') throw new Error('expected config.sync');
  peer.send(PacketType.CommandResp, { id: sync.body.id, ok: true });
  return peer;
}

/** The next tunnel.open on `peer`. */
async function nextRequest(peer: WirePeer) {
  for (;;) {
    const cmd = await peer.next();
    if (cmd?.type !== PacketType.Command) throw new Error(`expected a command, got ${JSON.stringify(cmd)}`);
    if (cmd.body.name === 'tunnel.open') return { id: cmd.body.id, ...cmd.body.payload };
  }
}

/** Sends one TunnelOpen frame (as given) and returns the edge's answer. */
async function sendOpen(w: World, frame: ReturnType<typeof tunnelOpenFrame>) {
  const peer = await WirePeer.connect(w.edge.controlPort);
  peer.send(PacketType.TunnelOpen, frame);
  const ack = await peer.next();
  peer.close();
  return ack;
}

t.test('a valid proof of a session that has ended opens nothing; the live session\'s does', async (t) => {
  const { w, a, m, secret } = await c2cWorld(t);
  const f = () => ({ mapping_id: m.mappingId, tunnel_id: newNonce(), role: 'source' as const, client_id: a.clientId });

  const first = await login(w, a.clientId, a.authCode);
  const ended = first.session!;
  first.close();
  await eventually(() => w.edge.stats().sessions === 0, 'session closed');
  t.match(await sendOpen(w, tunnelOpenFrame(f(), { secret, session: ended })), REFUSED, 'no live session: refused, though proof and secret are right');

  const second = await login(w, a.clientId, a.authCode);
  t.not(second.session!.id, ended.id);
  t.match(await sendOpen(w, tunnelOpenFrame(f(), { secret, session: ended })), REFUSED, 'the ended session\'s id and key, while another session of the client is live');
  t.match(
    await sendOpen(w, tunnelOpenFrame(f(), { secret, session: { id: second.session!.id, tunnelKey: ended.tunnelKey } })),
    REFUSED,
    'the live session\'s id with the ended session\'s key',
  );
  t.match(
    await sendOpen(w, tunnelOpenFrame(f(), { secret, session: second.session })),
    { type: PacketType.TunnelOpenAck, body: { ok: false, error: { code: 'TNX_TUNNEL_TARGET_OFFLINE' } } },
    'the live session: authorized (it fails only because the target is offline)',
  );
  second.close();
});

t.test('a kicked client\'s tunnel key opens nothing', async (t) => {
  const { w, a, m, secret } = await c2cWorld(t);
  const peer = await login(w, a.clientId, a.authCode);
  const session = peer.session!;
  const res = await kickClient(w.store, { clientId: a.clientId }, META);
  await w.settle(res.position);
  await peer.closed;
  const frame = tunnelOpenFrame({ mapping_id: m.mappingId, tunnel_id: newNonce(), role: 'source', client_id: a.clientId }, { secret, session });
  t.match(await sendOpen(w, frame), REFUSED);
});

t.test('a target half pairs only with the ticket of its tunnel.open, once', async (t) => {
  const { w, a, b, m, secret } = await c2cWorld(t);
  const source = await login(w, a.clientId, a.authCode);
  const target = await readyAgent(w, b);
  const tunnelId = newNonce();
  const src = rawTunnel(w.edge.controlPort, { mapping_id: m.mappingId, tunnel_id: tunnelId, role: 'source', client_id: a.clientId }, { secret, session: source.session });
  const request = await nextRequest(target);
  t.equal(request.tunnel_id, tunnelId);
  t.match(request.ticket, /^[0-9a-f]{32}$/);
  const half = { mapping_id: m.mappingId, tunnel_id: tunnelId, role: 'target' as const, client_id: b.clientId };
  const auth = (o: Partial<TunnelAuth>): TunnelAuth => ({ secret, session: target.session, ticket: request.ticket, ...o });

  t.match(await sendOpen(w, tunnelOpenFrame(half, auth({ ticket: undefined }))), REFUSED, 'no ticket');
  t.match(await sendOpen(w, tunnelOpenFrame(half, auth({ ticket: newTicket() }))), REFUSED, 'another ticket');
  t.match(await sendOpen(w, tunnelOpenFrame(half, auth({ session: source.session }))), REFUSED, 'the right ticket from the source\'s session');
  t.equal(w.edge.stats().tunnels, 0, 'nothing paired');

  // The failed attempts did not cancel the request: the real half still pairs.
  const tgt = await rawTunnel(w.edge.controlPort, half, auth({}));
  target.send(PacketType.CommandResp, { id: request.id, ok: true });
  t.match(tgt.ack, { type: PacketType.TunnelOpenAck, body: { ok: true, tunnel_id: tunnelId } }, 'the genuine target half pairs');
  t.match((await src).ack, { type: PacketType.TunnelOpenAck, body: { ok: true, tunnel_id: tunnelId } });
  t.equal(w.edge.stats().tunnels, 1);

  // The ticket is spent: the same ticket in a fresh, validly MACed frame (new nonce) is refused.
  t.match(await sendOpen(w, tunnelOpenFrame(half, auth({}))), REFUSED, 'a replayed one-time ticket');
  t.equal(w.edge.stats().tunnels, 1, 'and the running tunnel is untouched');
  tgt.socket.destroy();
  source.close();
  target.close();
});

t.test('the agent library binds its tunnels to its session: a real transfer works end to end', async (t) => {
  const w = await createWorld(t);
  const user = await w.user();
  const a = await w.client(user);
  const b = await w.client(user);
  const service = await startTargetService(t, 'reverse');
  const localPort = await freePort();
  const m = await w.mapping({ userId: user, sourceClientId: a.clientId, targetClientId: b.clientId, targetPort: service.port, localPort });
  const agentA = w.agent({ clientId: a.clientId, authCode: a.authCode });
  const agentB = w.agent({ clientId: b.clientId, authCode: b.authCode });
  await eventually(() => agentA.listeningPorts().get(m.mappingId) === localPort && agentB.status().configVersion !== undefined, 'agents ready');
  const payload = Buffer.from('session-bound tunnel');
  t.equal((await visit(localPort, payload)).toString(), Buffer.from(payload).reverse().toString());
});

t.test('an agent that cannot bind its tunnels (no tunnel_key feature) is told to upgrade before any credential check', async (t) => {
  const w = await createWorld(t);
  const user = await w.user();
  const a = await w.client(user);
  for (const hello of [
    { protocol_version: 1, client_version: 'old', client_id: a.clientId, auth_code: a.authCode },
    { protocol_version: 1, client_version: 'old', features: ['edge_end'] },
  ]) {
    const peer = await WirePeer.connect(w.edge.controlPort);
    peer.send(PacketType.Handshake, hello);
    t.match(await peer.next(), { type: PacketType.HandshakeResp, body: { ok: false, error: { code: 'TNX_WIRE_PROTOCOL_VERSION', message: /upgrade the agent/ } } });
    await peer.closed;
  }
  t.match(w.edge.stats(), { sessions: 0, credentialChecks: 0 }, 'no session, no scrypt');
  t.same(await w.tdb.db.selectFrom('clients').select('client_id').where('client_type', '=', 'anonymous').execute(), [], 'and nobody was registered');
});

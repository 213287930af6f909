import t from 'tap';
import { connect } from 'node:net';
import { randomBytes } from 'node:crypto';
import { DEFAULT_HEARTBEAT_INTERVAL_MS, DEFAULT_HEARTBEAT_TIMEOUT_MS, SILENT_AGENT_RECLAIM_BOUND_MS } from '../../services/edge/index.js';
import { AgentFeature } from '../../shared/wire/codes.js';
import { PacketType } from '../../shared/wire/packets.js';
import { startSilentProxy } from './silent-proxy.js';
import { newNonce } from '../../shared/wire/proof.js';
import { createWorld, eventually, freePort, handshake, outcome, rawTunnel, type WirePeer, type World } from './world.js';

/**
 * Dead and silent peers (issue 7): heartbeats with a deadline, both ways. An agent that stops
 * talking loses its session at the deadline and its tunnels here are reset; an agent whose edge
 * stops talking (here a relay in front of it that goes silent) reconnects on its own.
 */

async function sessionEvents(w: World, clientId: number): Promise<string[]> {
  const { events } = await w.store.readStream(`client-session.${clientId}`);
  return events.map((e) => e.type);
}

t.test('defaults: the deadline leaves a silent agent offline and reclaimed within 45 s', async (t) => {
  // The deadline fires at most heartbeatTimeoutMs after the agent's last byte (measured, not
  // polled: shared/net/frames.test.ts), and the session close, ClientDisconnected and the tunnel
  // resets follow in the same tick. 15 s of slack for the projection and a loaded machine.
  t.equal(DEFAULT_HEARTBEAT_INTERVAL_MS, 10_000);
  t.equal(DEFAULT_HEARTBEAT_TIMEOUT_MS, 30_000);
  t.ok(DEFAULT_HEARTBEAT_TIMEOUT_MS + 15_000 <= SILENT_AGENT_RECLAIM_BOUND_MS, 'deadline + slack within 45 s');
  t.ok(DEFAULT_HEARTBEAT_TIMEOUT_MS >= 3 * DEFAULT_HEARTBEAT_INTERVAL_MS, 'two heartbeats may be lost before a session is given up');

  const w = await createWorld(t);
  const user = await w.user();
  const a = await w.client(user);
  const b = await w.client(user);
  const withFeature = await handshake(w, { client_id: a.clientId, auth_code: a.authCode, features: [AgentFeature.HeartbeatTimeout] });
  t.equal(withFeature.resp.heartbeat_interval_ms, DEFAULT_HEARTBEAT_INTERVAL_MS);
  t.equal(withFeature.resp.heartbeat_timeout_ms, DEFAULT_HEARTBEAT_TIMEOUT_MS, 'the deadline is announced to agents that declared heartbeat_timeout');
  const without = await handshake(w, { client_id: b.clientId, auth_code: b.authCode });
  t.equal(without.resp.heartbeat_interval_ms, DEFAULT_HEARTBEAT_INTERVAL_MS);
  t.notOk('heartbeat_timeout_ms' in without.resp, 'an older agent (strict schema) never sees the field; it derives 3 intervals = the same 30 s');
  withFeature.peer.close();
  without.peer.close();
});

t.test('edge: a silent target agent loses its session at the deadline, and its running tunnel is reset', async (t) => {
  const deadlineMs = 800;
  const w = await createWorld(t, { heartbeatIntervalMs: 100, heartbeatTimeoutMs: deadlineMs });
  const user = await w.user();
  const b = await w.client(user);
  const publicPort = await freePort();
  const m = await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: 9, publicPort });
  const secret = await w.secretOf(m.mappingId);
  await eventually(() => w.edge.stats().publicListeners === 1, 'public listener open');

  const { peer: target, resp } = await handshake(w, { client_id: b.clientId, auth_code: b.authCode, features: [AgentFeature.HeartbeatTimeout] });
  t.equal(resp.heartbeat_timeout_ms, deadlineMs);
  // Alive: a heartbeat every interval, and the config answered, like an agent.
  let lastByte = Date.now();
  const beat = setInterval(() => {
    target.send(PacketType.Heartbeat, { ts: Date.now() });
    lastByte = Date.now();
  }, 100);
  t.teardown(() => clearInterval(beat));
  const sync = await target.next();
  if (sync?.type !== PacketType.Command) throw new Error('expected config.sync');
  target.send(PacketType.CommandResp, { id: sync.body.id, ok: true });

  const visitor = connect({ host: '127.0.0.1', port: publicPort, allowHalfOpen: true });
  visitor.on('error', () => undefined);
  const request = await target.next();
  if (request?.type !== PacketType.Command || request.body.name !== 'tunnel.open') throw new Error(`expected tunnel.open, got ${JSON.stringify(request)}`);
  const half = await rawTunnel(
    w.edge.controlPort,
    { mapping_id: m.mappingId, tunnel_id: request.body.payload.tunnel_id, role: 'target', client_id: b.clientId },
    { secret, session: target.session, ticket: request.body.payload.ticket },
  );
  t.match(half.ack, { type: PacketType.TunnelOpenAck, body: { ok: true } });
  target.send(PacketType.CommandResp, { id: request.body.id, ok: true });
  // Bytes flow both ways, then the tunnel idles (idle is fine: only the control session has a deadline).
  const hello = randomBytes(1000);
  const got = new Promise<Buffer>((resolve) => half.socket.once('data', resolve));
  half.socket.resume(); // readFirstFrame leaves it paused
  visitor.write(hello);
  t.same(await got, hello, 'visitor bytes reach the target half');
  const visitorEnd = outcome(visitor);
  const targetEnd = outcome(half.socket, half.remainder);
  t.equal(w.edge.stats().tunnels, 1);
  await new Promise((r) => setTimeout(r, 3 * deadlineMs));
  t.equal(w.edge.stats().sessions, 1, 'a session that heartbeats is kept for several deadlines');

  clearInterval(beat); // the agent goes silent (as a SIGSTOPped process would: its kernel still ACKs)
  await target.closed;
  const silentFor = Date.now() - lastByte;
  t.ok(silentFor >= deadlineMs - 50, `closed after ${silentFor} ms of silence, not before the deadline`);
  t.ok(silentFor < deadlineMs + 3_000, `closed ${silentFor} ms after the agent's last byte`);
  t.match(await visitorEnd, { how: 'reset' }, 'the visitor is reset, not left hanging');
  t.match(await targetEnd, { how: 'reset' }, "the agent's tunnel connection is reset at the edge");
  await eventually(() => w.edge.stats().sessions === 0 && w.edge.stats().tunnels === 0, 'session and tunnel gone');
  await eventually(async () => (await sessionEvents(w, b.clientId)).join() === 'ClientConnected,ClientDisconnected', 'disconnect recorded');
  const row = await eventually(async () => {
    const r = await w.tdb.db.selectFrom('clients').select(['status']).where('client_id', '=', b.clientId).executeTakeFirstOrThrow();
    return r.status === 'offline' ? r : undefined;
  }, 'client offline in the read model');
  t.equal(row.status, 'offline');
});

t.test('edge: a silent source agent loses its session at the deadline, and both halves of its tunnel are reset', async (t) => {
  const deadlineMs = 800;
  const w = await createWorld(t, { heartbeatIntervalMs: 100, heartbeatTimeoutMs: deadlineMs });
  const user = await w.user();
  const a = await w.client(user);
  const b = await w.client(user);
  const m = await w.mapping({ userId: user, sourceClientId: a.clientId, targetClientId: b.clientId, targetPort: 9, localPort: await freePort() });
  const secret = await w.secretOf(m.mappingId);
  const login = async (c: { clientId: number; authCode: string }) =>
    (await handshake(w, { client_id: c.clientId, auth_code: c.authCode, features: [AgentFeature.HeartbeatTimeout] })).peer;
  const target = await login(b);
  const source = await login(a);
  // Both alive; the source is the one that will go silent.
  const beats = new Map<WirePeer, NodeJS.Timeout>();
  let sourceLastByte = Date.now();
  for (const p of [target, source]) {
    beats.set(p, setInterval(() => {
      p.send(PacketType.Heartbeat, { ts: Date.now() });
      if (p === source) sourceLastByte = Date.now();
    }, 100));
  }
  t.teardown(() => beats.forEach((x) => clearInterval(x)));
  for (const p of [target, source]) {
    const sync = await p.next();
    if (sync?.type !== PacketType.Command) throw new Error('expected config.sync');
    p.send(PacketType.CommandResp, { id: sync.body.id, ok: true });
  }
  const tunnelId = newNonce();
  const src = rawTunnel(w.edge.controlPort, { mapping_id: m.mappingId, tunnel_id: tunnelId, role: 'source', client_id: a.clientId }, { secret, session: source.session });
  const cmd = await target.next();
  if (cmd?.type !== PacketType.Command || cmd.body.name !== 'tunnel.open') throw new Error(`expected tunnel.open, got ${JSON.stringify(cmd)}`);
  const tgt = await rawTunnel(w.edge.controlPort, { mapping_id: m.mappingId, tunnel_id: tunnelId, role: 'target', client_id: b.clientId }, { secret, session: target.session, ticket: cmd.body.payload.ticket });
  target.send(PacketType.CommandResp, { id: cmd.body.id, ok: true });
  const srcHalf = await src;
  t.match(srcHalf.ack, { body: { ok: true } });
  t.equal(w.edge.stats().tunnels, 1);
  const srcEnd = outcome(srcHalf.socket, srcHalf.remainder);
  const tgtEnd = outcome(tgt.socket, tgt.remainder);

  clearInterval(beats.get(source));
  await source.closed;
  const silentFor = Date.now() - sourceLastByte;
  t.ok(silentFor >= deadlineMs - 50 && silentFor < deadlineMs + 3_000, `source session closed ${silentFor} ms after its last byte`);
  t.match(await srcEnd, { how: 'reset' }, "the silent source's tunnel connection is reset");
  t.match(await tgtEnd, { how: 'reset' }, "the target's half is reset too, never a clean end");
  await eventually(() => w.edge.stats().tunnels === 0 && w.edge.stats().sessions === 1, 'tunnel gone, the target session kept');
  t.notOk(target.socket.destroyed, 'the live target keeps its session');
});

t.test('agent: an edge gone silent behind a relay is given up at the announced deadline, and the agent reconnects', async (t) => {
  const deadlineMs = 900;
  // 3 intervals would be 300 ms: closing after about 900 ms shows the announced deadline is used.
  const w = await createWorld(t, { heartbeatIntervalMs: 100, heartbeatTimeoutMs: deadlineMs });
  const user = await w.user();
  const a = await w.client(user);
  const proxy = await startSilentProxy(w.edge.controlPort);
  t.teardown(() => proxy.close());
  const readyAt: number[] = [];
  w.agent({ server: `127.0.0.1:${proxy.port}`, clientId: a.clientId, authCode: a.authCode, onReady: () => readyAt.push(Date.now()) });
  await eventually(() => readyAt.length === 1, 'agent connected through the relay');
  await new Promise((r) => setTimeout(r, 2 * deadlineMs));
  t.equal(readyAt.length, 1, 'a talking edge keeps the session');

  const frozenAt = Date.now();
  proxy.freeze(); // no byte either way, no FIN, no RST: only a deadline can tell
  await eventually(() => readyAt.length === 2, 'agent reconnected', 15_000);
  const after = readyAt[1]! - frozenAt;
  t.ok(after >= deadlineMs - 50, `reconnected ${after} ms after the freeze: not before the deadline`);
  t.ok(after < deadlineMs + 5_000, `reconnected ${after} ms after the freeze`);
  t.equal(proxy.accepted, 2, 'through a new connection');
  // The edge gave the old session up by the same deadline; the new one is the only one.
  await eventually(() => w.edge.stats().sessions === 1, 'one session on the edge');
  await eventually(async () => (await sessionEvents(w, a.clientId)).join() === 'ClientConnected,ClientDisconnected,ClientConnected', 'old session closed, new one open');
});

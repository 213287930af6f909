import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { startAgent, type RunningAgent } from '../../services/client/index.js';
import { readFirstFrame } from '../../shared/net/frames.js';
import { silentLogger } from '../../shared/platform/logger.js';
import { FrameDecoder } from '../../shared/wire/codec.js';
import { AgentFeature } from '../../shared/wire/codes.js';
import { decodeMessage, encodeMessage, type AgentMapping, type ControlMessage, type Handshake, type TunnelOpen } from '../../shared/wire/messages.js';
import { PROTOCOL_VERSION, PacketType } from '../../shared/wire/packets.js';
import { newNonce } from '../../shared/wire/proof.js';
import { streamEnd } from '../e2e/harness.js';
import { createWorld, eventually, freePort, handshake, outcome, rawTunnel, sha, WirePeer, type World } from './world.js';

const RESET = { how: 'reset', code: /^(ECONNRESET|EPIPE)$/ };

/**
 * Edge → agent TunnelEnd (AgentFeature.EdgeEnd, issue 6): a killed edge's kernel sends FIN on
 * every tunnel connection, so an agent passes an edge's FIN to its local socket only when the
 * edge vouched for it on the control connection, and resets the local socket otherwise.
 *
 * The agent side is driven by a raw fake edge built with the wire codec, which can do what a real
 * edge never does on purpose (FIN without TunnelEnd, late or hostile TunnelEnds, a dropped control
 * connection); the edge side by raw agents against a real edge. A reset is told from a clean end
 * by the local peer's socket: 'error' with ECONNRESET, against 'end' with every byte.
 */

const KiB = 1024;
const SECRET = 'e'.repeat(64);
const MAPPING = 1001;

interface FakeTunnel {
  readonly socket: Socket;
  readonly open: TunnelOpen;
}

/** Accepts an agent like an edge: handshake, then tunnel connections (acked at once). */
class FakeEdge {
  readonly handshakes: Handshake[] = [];
  /** Every message the current control connection received, in order (heartbeats aside). */
  messages: ControlMessage[] = [];
  control: WirePeer | undefined;
  private readonly tunnels: FakeTunnel[] = [];
  private readonly sockets = new Set<Socket>();
  private nextId = 1;

  private constructor(
    readonly server: Server,
    /** Whether the HandshakeResp confirms edge_end (false: an older edge). */
    private readonly confirm: boolean,
  ) {
    server.on('connection', (s) => void this.accept(s));
  }

  static async start(t: Test, confirm: boolean): Promise<FakeEdge> {
    const server = createServer({ allowHalfOpen: true });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const edge = new FakeEdge(server, confirm);
    t.teardown(() => edge.close());
    return edge;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  private async accept(socket: Socket): Promise<void> {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    socket.on('error', () => undefined);
    const decoder = new FrameDecoder();
    let msg: ControlMessage;
    try {
      msg = decodeMessage(await readFirstFrame(socket, decoder, 10_000));
    } catch {
      socket.destroy();
      return;
    }
    if (msg.type === PacketType.TunnelOpen) {
      socket.write(encodeMessage(PacketType.TunnelOpenAck, { ok: true, tunnel_id: msg.body.tunnel_id }));
      this.tunnels.push({ socket, open: msg.body });
      return;
    }
    if (msg.type !== PacketType.Handshake) return void socket.destroy();
    this.handshakes.push(msg.body);
    const declared = msg.body.features ?? [];
    socket.write(
      encodeMessage(PacketType.HandshakeResp, {
        ok: true,
        protocol_version: PROTOCOL_VERSION,
        client_id: msg.body.client_id ?? 600000001,
        client_type: 'managed',
        node_id: 'node-fake',
        session_id: `s${this.handshakes.length}`,
        server_time_ms: Date.now(),
        heartbeat_interval_ms: 60_000,
        ...(this.confirm && declared.includes(AgentFeature.EdgeEnd) ? { features: [AgentFeature.EdgeEnd] } : {}),
      }),
    );
    const peer = WirePeer.adopt(socket, decoder);
    this.control = peer;
    const messages: ControlMessage[] = (this.messages = []);
    for (;;) {
      const m = await peer.next(600_000).catch(() => undefined);
      if (!m) return;
      messages.push(m);
    }
  }

  /** Pushes a config and waits until the agent applied it. */
  async configure(mappings: AgentMapping[]): Promise<void> {
    const control = await eventually(() => this.control, 'agent connected');
    const id = `c${this.nextId++}`;
    control.send(PacketType.Command, { id, name: 'config.sync', payload: { version: this.nextId, mappings } });
    await eventually(() => this.messages.some((m) => m.type === PacketType.CommandResp && m.body.id === id), 'config applied');
  }

  /** Asks the agent for the target half of a tunnel; resolves with the tunnel connection. */
  async requestTarget(servicePort: number): Promise<FakeTunnel> {
    const tunnelId = newNonce();
    this.control!.send(PacketType.Command, {
      id: `c${this.nextId++}`,
      name: 'tunnel.open',
      payload: { tunnel_id: tunnelId, mapping_id: MAPPING, target_host: '127.0.0.1', target_port: servicePort },
    });
    return this.tunnel((o) => o.tunnel_id === tunnelId);
  }

  /** The next tunnel connection matching `pred` (a source agent's, opened for a visitor). */
  async tunnel(pred: (open: TunnelOpen) => boolean = () => true): Promise<FakeTunnel> {
    return eventually(() => {
      const i = this.tunnels.findIndex((x) => pred(x.open));
      return i >= 0 ? this.tunnels.splice(i, 1)[0] : undefined;
    }, 'tunnel connection');
  }

  /** The edge vouches for the end of the agent's half of `tunnel` (or says anything it likes). */
  vouch(tunnelId: string, role: 'source' | 'target'): void {
    this.control!.send(PacketType.TunnelEnd, { tunnel_id: tunnelId, role });
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((r) => this.server.close(() => r()));
  }
}

/** A local service for the target side; hands out each accepted connection. */
async function localService(t: Test): Promise<{ port: number; next(): Promise<Socket> }> {
  const accepted: Socket[] = [];
  const all = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => undefined);
    accepted.push(s);
    all.add(s);
    s.once('close', () => all.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const s of all) s.destroy();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return { port: (server.address() as AddressInfo).port, next: () => eventually(() => accepted.shift(), 'connection at the service') };
}

/** A real agent (in-process) logged in to `edge`, with a target mapping and optionally a source mapping. */
async function agentOn(t: Test, edge: FakeEdge, servicePort: number, opts: { graceMs?: number; localPort?: number } = {}): Promise<RunningAgent> {
  const agent = startAgent({
    server: `tcp://127.0.0.1:${edge.port}`,
    clientId: 600000001,
    authCode: 'tnxc_fake',
    logger: silentLogger(),
    reconnectMinMs: 50,
    reconnectMaxMs: 200,
    ...(opts.graceMs === undefined ? {} : { edgeEndGraceMs: opts.graceMs }),
  });
  t.teardown(() => agent.stop());
  const mappings: AgentMapping[] = [{ mapping_id: MAPPING, protocol: 'tcp', role: 'target', target_host: '127.0.0.1', target_port: servicePort, secret_key: SECRET }];
  if (opts.localPort !== undefined) {
    mappings.push({ mapping_id: MAPPING + 1, protocol: 'tcp', role: 'source', local_host: '127.0.0.1', local_port: opts.localPort, secret_key: SECRET });
  }
  await edge.configure(mappings);
  return agent;
}

/** The edge's side of a fresh target tunnel and the service's side of the same stream. */
async function targetTunnel(edge: FakeEdge, service: { port: number; next(): Promise<Socket> }) {
  const tunnel = await edge.requestTarget(service.port);
  const local = await service.next();
  return { tunnelId: tunnel.open.tunnel_id, edgeSide: tunnel.socket, local };
}

t.test('agent: an edge FIN reaches the local socket only if the edge vouched for it', async (t) => {
  await t.test('FIN without TunnelEnd (what a killed edge\'s kernel sends): the target service is reset', async (t) => {
    const edge = await FakeEdge.start(t, true);
    const service = await localService(t);
    const agent = await agentOn(t, edge, service.port, { graceMs: 200 });
    t.ok(edge.handshakes[0]!.features?.includes(AgentFeature.EdgeEnd), 'the agent declares edge_end');
    const tun = await targetTunnel(edge, service);
    const atLocal = streamEnd(tun.local);
    const atEdge = outcome(tun.edgeSide);
    tun.edgeSide.end(randomBytes(100 * KiB));
    t.match(await atLocal, RESET, 'the service sees a reset, not a clean end of a truncated upload');
    t.equal((await atEdge).how, 'reset', 'the tunnel connection is reset too');
    t.ok(agent.status().connected, 'the control session is unaffected');
    t.equal(edge.handshakes.length, 1, 'no reconnect');
  });

  await t.test('FIN first, TunnelEnd within the grace: a clean end; the other direction keeps flowing (half-close)', async (t) => {
    const edge = await FakeEdge.start(t, true);
    const service = await localService(t);
    await agentOn(t, edge, service.port);
    const tun = await targetTunnel(edge, service);
    const atLocal = outcome(tun.local);
    const atEdge = outcome(tun.edgeSide);
    const upload = randomBytes(300 * KiB);
    tun.edgeSide.end(upload);
    // Every byte has reached the service, and the FIN the agent holds back is right behind them.
    const bytesAtService: Buffer[] = [];
    tun.local.on('data', (c: Buffer) => bytesAtService.push(c));
    await eventually(() => Buffer.concat(bytesAtService).length === upload.length, 'upload at the service');
    edge.vouch(tun.tunnelId, 'target');
    const got = await atLocal;
    t.equal(got.how, 'end', 'a clean end');
    t.equal(sha(got.bytes), sha(upload), 'with every byte before it');
    const reply = randomBytes(200 * KiB);
    tun.local.end(reply);
    const back = await atEdge;
    t.equal(back.how, 'end');
    t.equal(sha(back.bytes), sha(reply), 'the service still sent after the upload ended, byte-exact');
    await eventually(() => edge.messages.some((m) => m.type === PacketType.TunnelEnd && m.body.tunnel_id === tun.tunnelId && m.body.role === 'target'), 'the agent vouches for its own end');
  });

  await t.test('TunnelEnd before the FIN: a clean end too', async (t) => {
    const edge = await FakeEdge.start(t, true);
    const service = await localService(t);
    await agentOn(t, edge, service.port, { graceMs: 200 });
    const tun = await targetTunnel(edge, service);
    const atLocal = outcome(tun.local);
    const upload = randomBytes(100 * KiB);
    edge.vouch(tun.tunnelId, 'target');
    await eventually(() => edge.control!.socket.writableLength === 0, 'TunnelEnd flushed');
    tun.edgeSide.end(upload);
    const got = await atLocal;
    t.equal(got.how, 'end');
    t.equal(sha(got.bytes), sha(upload));
  });

  await t.test('a TunnelEnd for an unknown tunnel or the other role vouches for nothing and harms nothing', async (t) => {
    const edge = await FakeEdge.start(t, true);
    const service = await localService(t);
    const agent = await agentOn(t, edge, service.port, { graceMs: 200 });
    const tun = await targetTunnel(edge, service);
    const atLocal = streamEnd(tun.local);
    edge.vouch(newNonce(), 'target'); // no such tunnel
    edge.vouch(tun.tunnelId, 'source'); // this agent's half is the target
    tun.edgeSide.end(randomBytes(10 * KiB));
    t.match(await atLocal, RESET, 'still a reset');
    t.ok(agent.status().connected, 'the session stays up');
    // And the session still works: a vouched tunnel ends cleanly.
    const next = await targetTunnel(edge, service);
    const atNext = outcome(next.local);
    edge.vouch(next.tunnelId, 'target');
    const upload = randomBytes(10 * KiB);
    next.edgeSide.end(upload);
    t.match(await atNext, { how: 'end', bytes: upload }, 'a clean end, byte-exact');
    t.equal(edge.handshakes.length, 1, 'never reconnected');
  });

  await t.test('control connection lost: unvouched tunnels are reset at once; a vouched half-close keeps flowing', async (t) => {
    const edge = await FakeEdge.start(t, true);
    const service = await localService(t);
    // A grace far beyond the test: only the lost session can explain a reset here.
    await agentOn(t, edge, service.port, { graceMs: 600_000 });
    const vouched = await targetTunnel(edge, service);
    const cut = await targetTunnel(edge, service);
    const atVouchedEdge = outcome(vouched.edgeSide);
    edge.vouch(vouched.tunnelId, 'target');
    vouched.edgeSide.end(randomBytes(20 * KiB));
    t.equal((await outcome(vouched.local)).how, 'end', 'vouched tunnel half-closed cleanly');
    const atCut = streamEnd(cut.local);
    cut.edgeSide.write(randomBytes(50 * KiB)); // mid-transfer, no FIN ever
    edge.control!.socket.destroy();
    t.match(await atCut, RESET, 'the unvouched tunnel is reset without waiting for a FIN');
    const tail = randomBytes(64 * KiB);
    vouched.local.end(tail);
    const back = await atVouchedEdge;
    t.equal(back.how, 'end');
    t.equal(sha(back.bytes), sha(tail), 'the vouched tunnel\'s other direction still completes');
  });

  await t.test('source side: a visitor is reset on an unvouched edge FIN, and ends cleanly on a vouched one', async (t) => {
    const edge = await FakeEdge.start(t, true);
    const service = await localService(t);
    const localPort = await freePort();
    await agentOn(t, edge, service.port, { graceMs: 200, localPort });
    const visitor = connect({ host: '127.0.0.1', port: localPort, allowHalfOpen: true });
    visitor.on('error', () => undefined);
    const atVisitor = streamEnd(visitor);
    const tunnel = await edge.tunnel((o) => o.role === 'source');
    tunnel.socket.end(randomBytes(100 * KiB));
    t.match(await atVisitor, RESET, 'a truncated download is a reset');

    const second = connect({ host: '127.0.0.1', port: localPort, allowHalfOpen: true });
    second.on('error', () => undefined);
    const atSecond = outcome(second);
    const t2 = await edge.tunnel((o) => o.role === 'source');
    const atEdge = outcome(t2.socket);
    const download = randomBytes(100 * KiB);
    edge.vouch(t2.open.tunnel_id, 'source');
    t2.socket.end(download);
    const got = await atSecond;
    t.equal(got.how, 'end');
    t.equal(sha(got.bytes), sha(download), 'a vouched download ends cleanly, byte-exact');
    const upload = randomBytes(50 * KiB);
    second.end(upload);
    t.equal(sha((await atEdge).bytes), sha(upload), 'and the visitor still uploads after it (half-close)');
  });

  await t.test('an edge that did not confirm edge_end (older): its FIN stays a clean end, and its TunnelEnd is refused', async (t) => {
    const edge = await FakeEdge.start(t, false);
    const service = await localService(t);
    await agentOn(t, edge, service.port, { graceMs: 200 });
    t.ok(edge.handshakes[0]!.features?.includes(AgentFeature.EdgeEnd), 'declared anyway');
    const tun = await targetTunnel(edge, service);
    const upload = randomBytes(50 * KiB);
    tun.edgeSide.end(upload);
    const got = await outcome(tun.local);
    t.equal(got.how, 'end', 'as before the feature: the FIN is passed on');
    t.equal(sha(got.bytes), sha(upload));
    const first = edge.control!;
    edge.vouch(tun.tunnelId, 'target');
    await eventually(() => first.socket.readableEnded || first.socket.destroyed, 'control connection closed by the agent');
    t.pass('a TunnelEnd from an edge that never negotiated it closes the control connection (protocol violation)');
    await eventually(() => edge.handshakes.length === 2, 'the agent reconnects');
  });
});

// ---- the edge's side, with raw agents against a real edge ----

type Session = Awaited<ReturnType<typeof handshake>>;

/** A raw agent logged in with `features`, its config acknowledged. */
async function rawAgent(w: World, c: { clientId: number; authCode: string }, features?: string[]): Promise<Session> {
  const s = await handshake(w, { client_id: c.clientId, auth_code: c.authCode, ...(features ? { features } : {}) });
  const sync = await s.peer.next();
  if (sync?.type !== PacketType.Command || sync.body.name !== 'config.sync') throw new Error('expected config.sync');
  // Acknowledged with outcomes, so no retry of this push lands between the frames a test awaits.
  const { version, mappings } = sync.body.payload;
  s.peer.send(PacketType.CommandResp, { id: sync.body.id, ok: true, applied: { version, mappings: mappings.map((m) => ({ mapping_id: m.mapping_id, role: m.role, ok: true })) } });
  return s;
}

/** Answers the next tunnel.open on `s` with a raw tunnel connection. */
async function answerTunnel(w: World, s: Session, clientId: number, secret: string) {
  const cmd = await s.peer.next();
  if (cmd?.type !== PacketType.Command || cmd.body.name !== 'tunnel.open') throw new Error(`expected tunnel.open, got ${JSON.stringify(cmd)}`);
  const tun = await rawTunnel(
    w.edge.controlPort,
    { mapping_id: cmd.body.payload.mapping_id, tunnel_id: cmd.body.payload.tunnel_id, role: 'target', client_id: clientId },
    { secret, session: s.peer.session, ticket: cmd.body.payload.ticket },
  );
  s.peer.send(PacketType.CommandResp, { id: cmd.body.id, ok: true });
  return { tunnelId: cmd.body.payload.tunnel_id, ...tun };
}

/** A user, a target client and a public mapping to a port nobody dials (raw agents answer). */
async function publicWorld(t: Test, edgeOpts: Parameters<typeof createWorld>[1] = {}) {
  const w = await createWorld(t, edgeOpts);
  const user = await w.user();
  const b = await w.client(user);
  const port = await freePort();
  const m = await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: 9, publicPort: port });
  await eventually(() => w.edge.stats().publicListeners === 1, 'public listener');
  return { w, user, b, port, secret: await w.secretOf(m.mappingId) };
}

/**
 * A frame the edge writes after whatever it wrote before on the same control connection: creating
 * a mapping pushes a config. What precedes it in the peer's queue is all that was sent before.
 */
async function framesBeforeNextPush(w: World, s: Session, user: number, targetClientId: number): Promise<ControlMessage[]> {
  await w.mapping({ userId: user, targetClientId, targetPort: 9, publicPort: await freePort() });
  const before: ControlMessage[] = [];
  for (;;) {
    const m = await s.peer.next();
    if (!m) throw new Error('control connection closed');
    if (m.type === PacketType.Command && m.body.name === 'config.sync') return before;
    before.push(m);
  }
}

t.test('edge: TunnelEnd to the agent before a clean FIN, only for agents that declared edge_end', async (t) => {
  await t.test('a visitor\'s FIN on a public port: TunnelEnd to the target agent, then the FIN; half-close both ways', async (t) => {
    const { w, b, port, secret } = await publicWorld(t);
    const s = await rawAgent(w, b, [AgentFeature.EdgeEnd, 'some_future_feature']);
    t.same(s.resp.features, [AgentFeature.EdgeEnd], 'HandshakeResp names the declared features this edge uses');
    const visitor = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    visitor.on('error', () => undefined);
    const upload = randomBytes(200 * KiB);
    visitor.end(upload);
    const tun = await answerTunnel(w, s, b.clientId, secret);
    const atTarget = await outcome(tun.socket, tun.remainder);
    t.equal(atTarget.how, 'end');
    t.equal(sha(atTarget.bytes), sha(upload));
    t.match(await s.peer.next(), { type: PacketType.TunnelEnd, body: { tunnel_id: tun.tunnelId, role: 'target' } }, 'the edge vouched for the visitor\'s end');
    const atVisitor = outcome(visitor);
    const reply = randomBytes(100 * KiB);
    tun.socket.end(reply);
    s.peer.send(PacketType.TunnelEnd, { tunnel_id: tun.tunnelId, role: 'target' });
    const back = await atVisitor;
    t.equal(back.how, 'end');
    t.equal(sha(back.bytes), sha(reply), 'the target still sent after the visitor\'s end');
    s.peer.close();
  });

  await t.test('an agent without edge_end: no HandshakeResp.features, no 0x12 frame, the FIN passed on as before', async (t) => {
    const { w, user, b, port, secret } = await publicWorld(t);
    const s = await rawAgent(w, b);
    t.notOk('features' in s.resp, 'no field an older agent\'s strict schema would refuse');
    const visitor = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    visitor.on('error', () => undefined);
    visitor.end(randomBytes(50 * KiB));
    const tun = await answerTunnel(w, s, b.clientId, secret);
    t.equal((await outcome(tun.socket, tun.remainder)).how, 'end');
    const before = await framesBeforeNextPush(w, s, user, b.clientId);
    t.same(before.filter((m) => m.type === PacketType.TunnelEnd), [], 'no TunnelEnd frame reached the older agent');
    visitor.destroy();
    s.peer.close();
  });

  await t.test('an unvouched agent FIN: the other agent is reset and never told the end was clean', async (t) => {
    const w = await createWorld(t, { endAttestTimeoutMs: 200 });
    const user = await w.user();
    const a = await w.client(user);
    const b = await w.client(user);
    const m = await w.mapping({ userId: user, sourceClientId: a.clientId, targetClientId: b.clientId, targetPort: 9, localPort: await freePort() });
    const secret = await w.secretOf(m.mappingId);
    const target = await rawAgent(w, b, [AgentFeature.EdgeEnd]);
    const source = await rawAgent(w, a, [AgentFeature.EdgeEnd]);
    const tunnelId = newNonce();
    const src = rawTunnel(w.edge.controlPort, { mapping_id: m.mappingId, tunnel_id: tunnelId, role: 'source', client_id: a.clientId }, { secret, session: source.peer.session });
    const tgt = await answerTunnel(w, target, b.clientId, secret);
    const srcTun = await src;
    const atSource = outcome(srcTun.socket, srcTun.remainder);
    tgt.socket.end(randomBytes(20 * KiB)); // the target agent never vouches (killed)
    t.match(await atSource, { how: 'reset' }, 'the source agent\'s half is reset');
    const before = await framesBeforeNextPush(w, source, user, a.clientId);
    t.same(before.filter((m) => m.type === PacketType.TunnelEnd), [], 'no TunnelEnd for an end the edge could not vouch for');

    // The vouched case on the same pair: the source agent hears of the target's clean end.
    const id2 = newNonce();
    const src2 = rawTunnel(w.edge.controlPort, { mapping_id: m.mappingId, tunnel_id: id2, role: 'source', client_id: a.clientId }, { secret, session: source.peer.session });
    const tgt2 = await answerTunnel(w, target, b.clientId, secret);
    const srcTun2 = await src2;
    const banner = randomBytes(30 * KiB);
    tgt2.socket.end(banner);
    target.peer.send(PacketType.TunnelEnd, { tunnel_id: id2, role: 'target' });
    const got = await outcome(srcTun2.socket, srcTun2.remainder);
    t.equal(got.how, 'end');
    t.equal(sha(got.bytes), sha(banner));
    t.match(await source.peer.next(), { type: PacketType.TunnelEnd, body: { tunnel_id: id2, role: 'source' } }, 'TunnelEnd to the source agent');
    srcTun2.socket.destroy();
    target.peer.close();
    source.peer.close();
  });
});

t.test('edge: a reset tunnel half is told to agents that declared edge_reset (TunnelEnd {reset: true}), to no other', async (t) => {
  for (const withReset of [true, false]) {
    const { w, user, b, port, secret } = await publicWorld(t);
    const s = await rawAgent(w, b, withReset ? [AgentFeature.EdgeEnd, AgentFeature.EdgeReset] : [AgentFeature.EdgeEnd]);
    const visitor = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    visitor.on('error', () => undefined);
    visitor.write(randomBytes(10 * KiB));
    const tun = await answerTunnel(w, s, b.clientId, secret);
    const atTarget = outcome(tun.socket, tun.remainder);
    await eventually(() => w.edge.stats().tunnels === 1, 'tunnel up');
    visitor.resetAndDestroy();
    t.equal((await atTarget).how, 'reset', 'the target half is reset');
    const before = await framesBeforeNextPush(w, s, user, b.clientId);
    const notices = before.filter((m) => m.type === PacketType.TunnelEnd);
    if (withReset) t.same(notices, [{ type: PacketType.TunnelEnd, body: { tunnel_id: tun.tunnelId, role: 'target', reset: true } }], 'edge_reset: told, on its control session');
    else t.same(notices, [], 'without edge_reset: no such frame (its strict schema would refuse the field)');
    s.peer.close();
  }
});

t.test('agent: TunnelEnd {reset: true} resets the local socket at once, even when the tunnel connection reports a FIN', async (t) => {
  const edge = await FakeEdge.start(t, true);
  const service = await localService(t);
  await agentOn(t, edge, service.port, { graceMs: 60_000 });
  t.ok(edge.handshakes[0]!.features?.includes(AgentFeature.EdgeReset), 'the agent declares edge_reset');
  const tun = await targetTunnel(edge, service);
  const atLocal = streamEnd(tun.local);
  // A FIN on the tunnel connection, and the notice: without it the agent would wait the (long) grace.
  tun.edgeSide.end();
  edge.control!.send(PacketType.TunnelEnd, { tunnel_id: tun.tunnelId, role: 'target', reset: true });
  const started = Date.now();
  t.match(await atLocal, { how: 'reset' }, 'the target service sees a reset');
  t.ok(Date.now() - started < 5_000, 'not after the grace period');
});

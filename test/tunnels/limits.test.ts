import t from 'tap';
import { randomBytes } from 'node:crypto';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import type { Test } from 'tap';
import { TunnoxMetrics } from '../../services/cli/metrics.js';
import { PacketType } from '../../shared/wire/packets.js';
import { createWorld, eventually, freePort, login, rawTunnel, sha, type World, type WirePeer } from './world.js';


/**
 * Flood limits of issue 7, in-process with real sockets: flow control of tunnel requests per
 * target agent (a window of tunnel.open requests in flight, a bounded queue, refusal beyond),
 * per-mapping max_pending_opens and max_connections, idle_timeout, the per-IP rate of new
 * visitors on public ports, and a slowloris on a public port.
 */

/** A raw agent logged in whose config push is answered, so tunnel requests to it go out. */
async function readyAgent(w: World, c: { clientId: number; authCode: string }): Promise<WirePeer> {
  const peer = await login(w, c.clientId, c.authCode);
  const sync = await peer.next();
  if (sync?.type !== PacketType.Command || sync.body.name !== 'config.sync') throw new Error('expected config.sync');
  peer.send(PacketType.CommandResp, { id: sync.body.id, ok: true });
  return peer;
}

type Request = { id: string; tunnel_id: string; mapping_id: number; ticket?: string | undefined };

/** Collects every tunnel.open the raw agent receives, as it arrives. */
function collectRequests(peer: WirePeer): Request[] {
  const got: Request[] = [];
  void (async () => {
    for (;;) {
      const m = await peer.next(120_000).catch(() => undefined);
      if (!m) return;
      if (m.type === PacketType.Command && m.body.name === 'tunnel.open') got.push({ id: m.body.id, ...m.body.payload });
    }
  })();
  return got;
}

/**
 * A visitor that connects and holds the connection (a FIN from the edge closes it, as it would a
 * browser's); `closed` resolves with how soon (ms) the edge closed it.
 */
function holdVisitor(port: number, localAddress?: string): { socket: Socket; closed: Promise<number>; connected: Promise<void> } {
  const started = Date.now();
  const socket = connect({ host: '127.0.0.1', port, ...(localAddress ? { localAddress } : {}) });
  socket.on('error', () => undefined);
  socket.resume();
  return {
    socket,
    closed: new Promise((resolve) => socket.once('close', () => resolve(Date.now() - started))),
    connected: new Promise((resolve) => socket.once('connect', () => resolve())),
  };
}

/** An echo service: every byte straight back, FIN for FIN. */
async function echoService(t: Test): Promise<number> {
  const server = createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => undefined);
    s.pipe(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return (server.address() as AddressInfo).port;
}

/** Writes `payload`, resolves with the echo once it is all back; rejects if the connection ends first. */
function echoOnce(s: Socket, payload: Buffer, timeoutMs = 10_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    const timer = setTimeout(() => done(new Error('no echo in time')), timeoutMs);
    const onData = (c: Buffer): void => {
      chunks.push(c);
      n += c.length;
      if (n >= payload.length) done();
    };
    const onClose = (): void => done(new Error('closed before the echo'));
    const done = (err?: Error): void => {
      clearTimeout(timer);
      s.off('data', onData);
      s.off('close', onClose);
      if (err) reject(err);
      else resolve(Buffer.concat(chunks));
    };
    s.on('data', onData);
    s.once('close', onClose);
    s.write(payload);
  });
}

/** Until a fresh visitor from `from` gets its echo through `port`: the agent has the mapping. */
async function pathUp(port: number, from = '127.0.0.9'): Promise<void> {
  await eventually(async () => {
    const v = holdVisitor(port, from);
    const ok = await echoOnce(v.socket, Buffer.from('x'), 2_000).then(() => true, () => false);
    v.socket.destroy();
    return ok;
  }, `tunnel path through ${port} up`);
}

async function failedCount(metrics: TunnoxMetrics, code: string): Promise<number> {
  const m = (await metrics.registry.getMetricsAsJSON()).find((x) => x.name === 'tunnox_edge_tunnels_failed_total');
  return m?.values.find((v) => v.labels.code === code)?.value ?? 0;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

t.test('flow control: a silent agent gets at most the window of tunnel requests; the queue is bounded; the rest are refused at once', async (t) => {
  const metrics = new TunnoxMetrics('edge');
  // A long open timeout: no credit may come back by timing out while the test counts requests.
  const w = await createWorld(t, { tunnelLimits: { openWindowPerAgent: 8, openQueuePerAgent: 20, maxPendingOpensPerMapping: 1000 }, tunnelOpenTimeoutMs: 60_000, metrics });
  const user = await w.user();
  const b = await w.client(user);
  const port = await freePort();
  const m = await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: 9, publicPort: port });
  const agent = await readyAgent(w, b);
  t.teardown(() => agent.close());
  const requests = collectRequests(agent);
  await eventually(() => w.edge.stats().publicListeners === 1, 'public listener');

  const visitors = Array.from({ length: 50 }, () => holdVisitor(port));
  await Promise.all(visitors.map((v) => v.connected));
  await eventually(() => requests.length === 8 && w.edge.stats().queuedOpens === 20, '8 requests sent, 20 queued', 30_000);
  await sleep(500);
  t.equal(requests.length, 8, 'no more than the window of tunnel.open requests reached the agent');
  t.same(
    [w.edge.stats().inFlightOpens, w.edge.stats().queuedOpens, w.edge.stats().pendingTunnels],
    [8, 20, 28],
    '8 in flight, 20 queued',
  );
  // The 22 beyond the window and the queue were closed at once (well before the 10 s open timeout).
  t.equal(visitors.filter((v) => v.socket.destroyed).length, 22, 'the 22 excess visitors were closed at once, the 28 others wait');
  t.equal(await failedCount(metrics, 'TNX_TUNNEL_BUSY'), 22, 'and counted as TNX_TUNNEL_BUSY');

  // The agent's target halves give the credits back: each pairs a tunnel and lets one queued visitor's request out.
  const secret = await w.secretOf(m.mappingId);
  for (const r of requests.slice(0, 3)) {
    agent.send(PacketType.CommandResp, { id: r.id, ok: true });
    const half = await rawTunnel(w.edge.controlPort, { mapping_id: m.mappingId, tunnel_id: r.tunnel_id, role: 'target', client_id: b.clientId }, { secret, session: agent.session, ticket: r.ticket });
    t.match(half.ack, { type: PacketType.TunnelOpenAck, body: { ok: true } });
    t.teardown(() => half.socket.destroy());
  }
  // Generous: on a loaded machine (the unit tier runs files side by side, visitor-flood's 3000
  // sockets among them) the pairings' round trips can take seconds; the count is what is checked.
  await eventually(() => requests.length >= 11, '3 more requests after 3 pairings', 30_000).catch((err: unknown) => {
    throw new Error(`${String(err)}: ${requests.length} requests, edge ${JSON.stringify(w.edge.stats())}`);
  });
  t.equal(requests.length, 11, '3 more requests after 3 pairings');
  // A refusal by the agent gives its credit back too.
  agent.send(PacketType.CommandResp, { id: requests[3]!.id, ok: false, error: { code: 'TNX_AGENT_DIAL_FAILED', message: 'refused in the test' } });
  await eventually(() => requests.length >= 12, 'one more request after a refusal', 30_000).catch(() => undefined);
  await sleep(300);
  t.equal(requests.length, 12);
  t.same([w.edge.stats().tunnels, w.edge.stats().inFlightOpens, w.edge.stats().queuedOpens], [3, 8, 16]);
  t.ok(w.edge.stats().sessions === 1 && !agent.socket.destroyed, 'the control session is untouched');
  // (A waiting visitor's socket is paused, so the edge learns that it left only at the open
  // timeout: a pending slot is held for at most that long.)
  for (const v of visitors) v.socket.destroy();
});

t.test('max_pending_opens: visitors beyond the mapping\'s limit of waiting visitors are refused at once', async (t) => {
  const metrics = new TunnoxMetrics('edge');
  const w = await createWorld(t, { metrics });
  const user = await w.user();
  const b = await w.client(user);
  const port = await freePort();
  await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: 9, publicPort: port, maxPendingOpens: 5 });
  const agent = await readyAgent(w, b);
  t.teardown(() => agent.close());
  const requests = collectRequests(agent);
  await eventually(() => w.edge.stats().publicListeners === 1, 'public listener');
  const visitors = Array.from({ length: 12 }, () => holdVisitor(port));
  await Promise.all(visitors.map((v) => v.connected));
  await eventually(() => requests.length === 5, '5 requests');
  await eventually(() => visitors.filter((v) => v.socket.destroyed).length === 7, '7 refused at once', 3_000);
  await sleep(300);
  t.equal(visitors.filter((v) => v.socket.destroyed).length, 7, '7 refused at once, 5 wait');
  t.equal(await failedCount(metrics, 'TNX_TUNNEL_BUSY'), 7);
  t.equal(w.edge.stats().pendingTunnels, 5);
  for (const v of visitors) v.socket.destroy();
});

t.test('max_connections: the mapping\'s concurrent tunnels are capped; a freed slot takes the next visitor', async (t) => {
  const metrics = new TunnoxMetrics('edge');
  const w = await createWorld(t, { metrics });
  const echo = await echoService(t);
  const user = await w.user();
  const b = await w.client(user);
  const port = await freePort();
  const m = await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: echo, publicPort: port, maxConnections: 3 });
  w.agent({ clientId: b.clientId, authCode: b.authCode });
  await eventually(() => w.edge.stats().publicListeners === 1, 'public listener');
  await pathUp(port);
  await eventually(() => w.edge.stats().tunnels === 0, 'the probe tunnel gone');
  const held = [holdVisitor(port), holdVisitor(port), holdVisitor(port)];
  for (const v of held) {
    const p = randomBytes(1000);
    t.equal(sha(await echoOnce(v.socket, p)), sha(p));
  }
  t.same(w.edge.stats().tunnels, 3);
  const fourth = holdVisitor(port);
  const ms = await fourth.closed;
  t.ok(ms < 3_000, `the 4th visitor is closed at once (${ms} ms)`);
  t.equal(await failedCount(metrics, 'TNX_TUNNEL_LIMIT'), 1, 'counted as TNX_TUNNEL_LIMIT');
  held[0]!.socket.destroy();
  await eventually(() => w.edge.stats().tunnels === 2, 'one slot freed');
  const fifth = holdVisitor(port);
  const p = randomBytes(1000);
  t.equal(sha(await echoOnce(fifth.socket, p)), sha(p), 'the next visitor gets through');
  t.same(w.view.mapping(m.mappingId)?.max_connections, 3, 'the limit came through the view');
  for (const v of [...held, fifth]) v.socket.destroy();
});

t.test('idle_timeout resets an idle tunnel and leaves a busy one alone', async (t) => {
  const w = await createWorld(t);
  const echo = await echoService(t);
  const user = await w.user();
  const b = await w.client(user);
  const port = await freePort();
  await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: echo, publicPort: port, idleTimeout: 1 });
  w.agent({ clientId: b.clientId, authCode: b.authCode });
  await eventually(() => w.edge.stats().publicListeners === 1, 'public listener');
  await pathUp(port);
  const idle = holdVisitor(port);
  const busy = holdVisitor(port);
  const first = randomBytes(100);
  await echoOnce(idle.socket, first);
  await echoOnce(busy.socket, first);
  const idleStarted = Date.now();
  let idleReset = false;
  idle.socket.once('error', () => (idleReset = true));
  const idleClosedAt = idle.closed.then(() => Date.now());
  // The busy one sends every 300 ms for 3.3 s, more than three idle timeouts.
  const sent: Buffer[] = [];
  const echoed: Buffer[] = [];
  for (let i = 0; i < 11; i++) {
    const p = randomBytes(64);
    sent.push(p);
    echoed.push(await echoOnce(busy.socket, p));
    await sleep(300);
  }
  const idleAfter = (await idleClosedAt) - idleStarted;
  t.ok(idleReset, 'the idle tunnel was reset (RST), not ended with a FIN');
  t.ok(idleAfter >= 900 && idleAfter < 3_000, `the idle tunnel closed about a second after its last byte (${idleAfter} ms)`);
  t.notOk(busy.socket.destroyed, 'the busy tunnel is still open');
  t.equal(sha(Buffer.concat(echoed)), sha(Buffer.concat(sent)), 'and byte-exact');
  // Quiet now: it idles out too.
  await busy.closed;
  await eventually(() => w.edge.stats().tunnels === 0, 'no tunnel left');
});

t.test('per-IP rate of new visitors: one address over its burst is refused, other addresses are not', async (t) => {
  const metrics = new TunnoxMetrics('edge');
  const w = await createWorld(t, { visitorRate: { perSecond: 1, burst: 5 }, metrics });
  const echo = await echoService(t);
  const user = await w.user();
  const b = await w.client(user);
  const port = await freePort();
  await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: echo, publicPort: port });
  w.agent({ clientId: b.clientId, authCode: b.authCode });
  await eventually(() => w.edge.stats().publicListeners === 1, 'public listener');
  await pathUp(port); // the agent's config is in place before the counted visitors

  const attempt = async (from: string): Promise<boolean> => {
    const v = holdVisitor(port, from);
    const p = randomBytes(200);
    const ok = await echoOnce(v.socket, p, 5_000).then((got) => got.equals(p), () => false);
    v.socket.destroy();
    return ok;
  };
  const flood = await Promise.all(Array.from({ length: 15 }, () => attempt('127.0.0.2')));
  const served = flood.filter(Boolean).length;
  t.ok(served >= 5 && served <= 6, `127.0.0.2: ${served} of 15 served (burst 5, 1 a second)`);
  t.ok((await failedCount(metrics, 'TNX_TUNNEL_RATE_LIMITED')) >= 9, 'the excess counted as TNX_TUNNEL_RATE_LIMITED');
  for (const other of ['127.0.0.3', '127.0.0.4']) {
    const r = await Promise.all(Array.from({ length: 4 }, () => attempt(other)));
    t.same(r, [true, true, true, true], `${other} is unaffected`);
  }
});

t.test('slowloris on a public port: silent visitors fill the mapping\'s slots, idle_timeout reclaims them, other visitors get in', async (t) => {
  const w = await createWorld(t, { visitorRate: { perSecond: 1, burst: 10 } });
  const echo = await echoService(t);
  const user = await w.user();
  const b = await w.client(user);
  const port = await freePort();
  const other = await freePort();
  await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: echo, publicPort: port, maxConnections: 20, idleTimeout: 2 });
  await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: echo, publicPort: other });
  w.agent({ clientId: b.clientId, authCode: b.authCode });
  await eventually(() => w.edge.stats().publicListeners === 2, 'public listeners');
  await pathUp(other);

  // Attackers on 4 addresses each open 15 connections and send nothing: each address gets its
  // burst of 10 in, the rest are reset at once; 20 of the 40 fill the mapping, the others are refused.
  const attackers = ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5'].flatMap((ip) => Array.from({ length: 15 }, () => holdVisitor(port, ip)));
  await eventually(() => w.edge.stats().tunnels + w.edge.stats().pendingTunnels >= 20, 'the mapping is full of silent visitors');
  const legit = holdVisitor(port, '127.0.0.6');
  const legitClosedAt = await legit.closed;
  t.ok(legitClosedAt < 3_000, 'while full, a visitor is refused at once (not left hanging)');
  const p = randomBytes(300);
  const v2 = holdVisitor(other, '127.0.0.6');
  t.equal(sha(await echoOnce(v2.socket, p)), sha(p), 'another mapping on the same edge is unaffected');
  v2.socket.destroy();
  // Within idle_timeout (2 s) plus slack every silent visitor is reset.
  const started = Date.now();
  await Promise.all(attackers.map((a) => a.closed));
  t.ok(Date.now() - started < 6_000, `all 60 attacker connections closed (${Date.now() - started} ms)`);
  const after = holdVisitor(port, '127.0.0.7');
  const q = randomBytes(300);
  t.equal(sha(await echoOnce(after.socket, q)), sha(q), 'once reclaimed, a new visitor gets through');
  after.socket.destroy();
  // Whatever its visitors do once in, one address cannot open more than its burst at once.
  const trickle = Array.from({ length: 15 }, () => holdVisitor(port, '127.0.0.8'));
  await sleep(1_000);
  const alive = trickle.filter((x) => !x.socket.destroyed);
  t.ok(alive.length <= 11, `one address holds at most its burst (+1/s): ${alive.length}`);
  for (const x of trickle) x.socket.destroy();
});

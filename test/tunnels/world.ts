import { deriveMappingMasterKey, deriveMappingSecret } from '../../shared/platform/mapping-secrets.js';
import { createHash, randomBytes } from 'node:crypto';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { Test } from 'tap';
import { createMemoryBus } from '../../shared/bus/memory.js';
import type { ChangeBus } from '../../shared/contracts/notices.js';
import { createManagedClient, createMapping, createUser, deleteMapping } from '../../shared/domain/index.js';
import type { CommandMetadata } from '../../shared/eventstore/command.js';
import { PostgresEventStore } from '../../shared/eventstore/postgres.js';
import { openJetStreamEventStore } from '../../shared/eventstore/jetstream.js';
import type { EventStore } from '../../shared/eventstore/types.js';
import { silentLogger, type Logger } from '../../shared/platform/logger.js';
import { createTestDatabase, type TestDatabase } from '../../shared/testkit/pg.js';
import { FrameDecoder } from '../../shared/wire/codec.js';
import { decodeMessage, encodeMessage, type ControlMessage, type Handshake, type HandshakeResp, type MessageBody } from '../../shared/wire/messages.js';
import { PROTOCOL_VERSION, PacketType } from '../../shared/wire/packets.js';
import { readFirstFrame } from '../../shared/net/frames.js';
import { computeProof, computeSessionProof, newNonce } from '../../shared/wire/proof.js';
import { AgentFeature } from '../../shared/wire/codes.js';
import { startAgent, type AgentOptions, type RunningAgent } from '../../services/client/index.js';
import { jetstreamManager } from '@nats-io/jetstream';
import {
  MemoryEdgeView,
  startEdge,
  startJetStreamViewFeed,
  startReadModelViewFeed,
  type EdgeOptions,
  type RunningEdge,
} from '../../services/edge/index.js';
import { createProjectionWaiter, startProjector, type ProjectionWaiter } from '../../services/projector/index.js';
import { freePort } from '../../shared/net/listen.js';
import { generateSelfSigned, identityFrom, type TlsIdentity } from '../../shared/transport/cert.js';
export { freePort };

/**
 * The certificate of every in-process test edge (one per test process): agents started by
 * world.agent() connect over TLS pinned to it; raw wire peers still speak plaintext (the test
 * edges allow both on one port, like an edge run with --allow-plaintext).
 */
export const TEST_TLS: TlsIdentity = (() => {
  const made = generateSelfSigned(['127.0.0.1', 'localhost']);
  return identityFrom(made.cert, made.key, 'test certificate');
})();
/** What a test edge gets: TLS from TEST_TLS, plaintext allowed too. */
export const TEST_EDGE_TRANSPORT = { tls: TEST_TLS, allowPlaintext: true } as const;
import { createStatePublisher, stateStreamName } from '../../shared/bus/state.js';
import { createTestNats, type TestNats } from '../../shared/testkit/nats.js';

/**
 * In-process world for edge and agent tests: a fresh PostgreSQL database, the real PostgreSQL
 * event store, projector and in-memory change bus, and an edge on an ephemeral loopback port.
 * The edge has no database: its view is fed either from the read models and the bus (standalone
 * mode's feed, the default) or from the JetStream state stream the projector writes (cluster
 * mode's feed: `feed: 'jetstream'`, or TUNNOX_TEST_EDGE_FEED=jetstream for every world).
 * Everything is closed in reverse order at teardown.
 */
export interface WorldOptions {
  feed?: 'read-models' | 'jetstream';
  /**
   * The event log: the PostgreSQL store (default) or a JetStream stream (cluster mode's; implies
   * the JetStream feed). The read models are in the world's database either way.
   */
  store?: 'postgres' | 'jetstream';
  /** The bus the read-model feed listens on (default: the world's bus). */
  feedBus?: ChangeBus;
  /** The read-model feed's safety-net refresh interval. */
  viewRefreshMs?: number;
}

export interface World {
  tdb: TestDatabase;
  store: EventStore;
  storeKind: 'postgres' | 'jetstream';
  bus: ChangeBus;
  feed: 'read-models' | 'jetstream';
  /** Set with the JetStream feed. */
  nats: TestNats | undefined;
  edge: RunningEdge;
  /** The current edge's view (a new one per restartEdge). */
  view: MemoryEdgeView;
  logger: Logger;
  edgeAddress: string;
  /** Waits until the read models and the edge's view include `position`. */
  settle(position: number): Promise<void>;
  user(): Promise<number>;
  client(userId: number): Promise<{ clientId: number; authCode: string }>;
  /** Creates a mapping through the domain command and waits for its projection. */
  mapping(input: {
    userId: number;
    sourceClientId?: number | null;
    targetClientId: number;
    targetPort: number;
    targetHost?: string;
    localPort?: number;
    publicPort?: number;
    /** Flood limits (MappingCreated.idle_timeout, max_connections, max_pending_opens). */
    idleTimeout?: number;
    maxConnections?: number;
    maxPendingOpens?: number;
  }): Promise<{ mappingId: number; publicPort: number | null }>;
  deleteMapping(mappingId: number): Promise<void>;
  /** Stops the edge and starts a new one on the same control port (agents reconnect to it). */
  restartEdge(nodeId: string): Promise<RunningEdge>;
  /**
   * A second edge on loopback sharing this world's store and view (what matters in such tests is
   * routes and the bridge); stopped at teardown.
   */
  peerEdge(nodeId: string, opts?: Partial<EdgeOptions>): Promise<RunningEdge>;
  secretOf(mappingId: number): Promise<string>;
  agent(opts: Partial<AgentOptions>): RunningAgent;
}

/** The edges' mapping master key in these tests (every edge of a world shares it, as a cluster's do). */
export const TEST_MAPPING_KEY = deriveMappingMasterKey('tunnel-tests-cluster-secret-0123456789');

export const META: CommandMetadata = { actor: { kind: 'system', id: 'edge-test' } };

export async function createWorld(t: Test, edgeOpts: Partial<EdgeOptions> = {}, worldOpts: WorldOptions = {}): Promise<World> {
  const logger = silentLogger();
  const storeKind = worldOpts.store ?? 'postgres';
  const feedKind = storeKind === 'jetstream' ? 'jetstream' : worldOpts.feed ?? (process.env.TUNNOX_TEST_EDGE_FEED === 'jetstream' ? 'jetstream' : 'read-models');
  const tdb = await createTestDatabase('tnx_edge');
  const nats = feedKind === 'jetstream' ? await createTestNats() : undefined;
  const store: EventStore =
    storeKind === 'jetstream' && nats
      ? await openJetStreamEventStore({ nc: nats.nc, streamName: nats.streamName, subjectPrefix: nats.subjectPrefix })
      : new PostgresEventStore({ db: tdb.db, pool: tdb.pool, pollIntervalMs: 50 });
  const bus = createMemoryBus();
  const stateStream = nats ? stateStreamName(nats.streamName) : '';
  const statePublisher = nats ? await createStatePublisher({ nc: nats.nc, stream: stateStream, prefix: nats.subjectPrefix }) : undefined;
  const projector = await startProjector({ store, db: tdb.db, bus, logger, ...(statePublisher ? { statePublisher } : {}) });
  const waiter: ProjectionWaiter = createProjectionWaiter({ db: tdb.db, bus, pollMs: 20 });
  // One view and feed per edge process: a restarted edge builds its view from scratch.
  type Feed = { stop(): Promise<void>; caughtUp(position: number): Promise<boolean> };
  const startFeed = async (view: MemoryEdgeView): Promise<Feed> => {
    if (nats) {
      const feed = await startJetStreamViewFeed({ nc: nats.nc, stream: stateStream, subjectPrefix: nats.subjectPrefix, view, logger });
      const jsm = await jetstreamManager(nats.nc);
      return {
        stop: () => feed.stop(),
        // The read models are at `position`; once the outbox is empty the states are on the
        // stream, and the view has them when it handled the stream's last message.
        async caughtUp() {
          const left = await tdb.db.selectFrom('state_outbox').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow();
          if (Number(left.n) > 0) return false;
          return feed.seq >= (await jsm.streams.info(stateStream)).state.last_seq;
        },
      };
    }
    const feed = await startReadModelViewFeed({
      db: tdb.db,
      bus: worldOpts.feedBus ?? bus,
      view,
      logger,
      ...(worldOpts.viewRefreshMs ? { refreshIntervalMs: worldOpts.viewRefreshMs } : {}),
    });
    return { stop: () => feed.stop(), caughtUp: async (position) => feed.position >= position };
  };
  let view = new MemoryEdgeView();
  let feed = await startFeed(view);
  const launch = (nodeId: string, controlPort: number): Promise<RunningEdge> =>
    startEdge({ store, view, logger, nodeId, controlHost: '127.0.0.1', controlPort, publicHost: '127.0.0.1', mappingKey: TEST_MAPPING_KEY, ...TEST_EDGE_TRANSPORT, ...edgeOpts });
  const edge = await launch('node-001', 0);
  const agents: RunningAgent[] = [];
  t.teardown(async () => {
    const step = async (name: string, fn: () => unknown): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        process.stderr.write(`TEARDOWN ${name}: ${(err as Error).stack}\n`);
        throw err;
      }
    };
    await step('agents', () => Promise.all(agents.map((a) => a.stop())));
    await step('edge', () => world.edge.stop());
    await step('view feed', () => feed.stop());
    await step('waiter', () => waiter.close());
    await step('projector', () => projector.stop());
    await step('store', () => store.close());
    await step('bus', () => bus.close());
    await step('nats', () => nats?.cleanup());
    await step('drop', () => tdb.drop());
  });
  let n = 0;
  const world: World = {
    tdb,
    store,
    storeKind,
    bus,
    feed: feedKind,
    nats,
    edge,
    view,
    logger,
    edgeAddress: `127.0.0.1:${edge.controlPort}`,
    async settle(position) {
      if (!(await waiter.waitFor(position, 15_000))) throw new Error(`projection did not reach ${position}`);
      await eventually(() => feed.caughtUp(position), `edge view at ${position}`, 15_000);
    },
    async user() {
      n++;
      const res = await createUser(store, { username: `user${n}_${randomBytes(3).toString('hex')}`, email: `u${n}@example.com` }, META);
      await world.settle(res.position);
      return res.userId;
    },
    async client(userId) {
      const res = await createManagedClient(store, { userId, clientName: `client-${++n}` }, META);
      await world.settle(res.position);
      return { clientId: res.clientId, authCode: res.authCode };
    },
    async mapping(input) {
      const publicPort = input.publicPort ?? null;
      const res = await createMapping(
        store,
        {
          userId: input.userId,
          protocol: 'tcp',
          sourceClientId: input.sourceClientId ?? null,
          targetClientId: input.targetClientId,
          targetHost: input.targetHost ?? '127.0.0.1',
          targetPort: input.targetPort,
          localHost: input.localPort === undefined ? null : '127.0.0.1',
          localPort: input.localPort ?? null,
          publicPort,
          publicPortRange: publicPort === null ? { min: 1, max: 1 } : { min: publicPort, max: publicPort },
          idleTimeout: input.idleTimeout ?? null,
          maxConnections: input.maxConnections ?? null,
          maxPendingOpens: input.maxPendingOpens ?? null,
        },
        META,
      );
      await world.settle(res.position);
      return { mappingId: res.mappingId, publicPort: res.publicPort };
    },
    async deleteMapping(mappingId) {
      const res = await deleteMapping(store, { mappingId }, META);
      await world.settle(res.position);
    },
    async restartEdge(nodeId) {
      await world.edge.stop();
      await feed.stop();
      world.view = view = new MemoryEdgeView();
      feed = await startFeed(view);
      world.edge = await launch(nodeId, world.edge.controlPort);
      return world.edge;
    },
    async peerEdge(nodeId, opts = {}) {
      const edge = await startEdge({
        store: world.store,
        view: world.view,
        logger: world.logger,
        nodeId,
        controlHost: '127.0.0.1',
        controlPort: 0,
        publicHost: '127.0.0.1',
        mappingKey: TEST_MAPPING_KEY,
        ...TEST_EDGE_TRANSPORT,
        ...opts,
      });
      t.teardown(() => edge.stop());
      return edge;
    },
    async secretOf(mappingId) {
      // Derived, as the edge does: the read model holds only the generation.
      const row = await tdb.db.selectFrom('mappings').select('secret_generation').where('mapping_id', '=', mappingId).executeTakeFirstOrThrow();
      return deriveMappingSecret(TEST_MAPPING_KEY, mappingId, row.secret_generation);
    },
    agent(opts) {
      const agent = startAgent({ server: world.edgeAddress, logger, reconnectMinMs: 50, reconnectMaxMs: 500, tls: { fingerprint: TEST_TLS.fingerprint }, ...opts });
      agents.push(agent);
      return agent;
    },
  };
  return world;
}

/** Polls `check` until it returns a value other than undefined/false (bounded). */
export async function eventually<T>(check: () => Promise<T | undefined | false> | T | undefined | false, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}


export function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** The control session a raw agent's tunnel opens are bound to (HandshakeResp.session_id, tunnel_key). */
export interface PeerSession {
  id: string;
  tunnelKey: string;
}

/** A raw protocol peer, for driving the edge frame by frame. */
export class WirePeer {
  readonly socket: Socket;
  readonly closed: Promise<void>;
  /** Set by handshake() once logged in. */
  session: PeerSession | undefined;
  private readonly queue: ControlMessage[] = [];
  private waiter: (() => void) | undefined;
  private failure: Error | undefined;

  private constructor(
    socket: Socket,
    private readonly decoder = new FrameDecoder(),
  ) {
    this.socket = socket;
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => undefined);
    const receive = (chunk: Buffer): void => {
      try {
        for (const f of this.decoder.push(chunk)) this.queue.push(decodeMessage(f));
      } catch (err) {
        this.failure = err as Error;
      }
      this.waiter?.();
    };
    socket.on('data', receive);
    socket.on('close', () => this.waiter?.());
    receive(Buffer.alloc(0)); // frames that arrived with the first one (adopt)
    socket.resume();
  }

  /** The server side of a connection whose first frame `decoder` already read (a fake edge). */
  static adopt(socket: Socket, decoder: FrameDecoder): WirePeer {
    return new WirePeer(socket, decoder);
  }

  /** `localAddress`: another loopback address (127.0.0.2, ...) to appear as a different peer. */
  static connect(port: number, localAddress?: string): Promise<WirePeer> {
    return new Promise((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port, ...(localAddress ? { localAddress } : {}) });
      s.once('connect', () => resolve(new WirePeer(s)));
      s.once('error', reject);
    });
  }

  send<T extends ControlMessage['type']>(type: T, body: MessageBody<T>): void {
    this.socket.write(encodeMessage(type, body));
  }

  /** The next message that is not a heartbeat; undefined if the connection closed first. */
  async next(timeoutMs = 10_000): Promise<ControlMessage | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.failure) throw this.failure;
      const m = this.queue.shift();
      if (m) {
        if (m.type === PacketType.Heartbeat) continue;
        return m;
      }
      if (this.socket.destroyed || this.socket.readableEnded) return undefined;
      if (Date.now() > deadline) throw new Error('timed out waiting for a message');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  close(): void {
    this.socket.destroy();
  }
}

/** What every agent of this release declares at least: edges refuse a handshake without it. */
export const HELLO = { protocol_version: PROTOCOL_VERSION, client_version: 'test', features: [AgentFeature.TunnelKey] };

/** A raw agent's handshake: `extra` adds credentials and features to HELLO's. */
export async function handshake(w: World, extra: Partial<Handshake>): Promise<{ peer: WirePeer; resp: Extract<HandshakeResp, { ok: true }> }> {
  const peer = await WirePeer.connect(w.edge.controlPort);
  peer.send(PacketType.Handshake, { ...HELLO, ...extra, features: [...new Set([...HELLO.features, ...(extra.features ?? [])])] });
  const resp = await peer.next();
  if (resp?.type !== PacketType.HandshakeResp || !resp.body.ok) throw new Error(`login failed: ${JSON.stringify(resp)}`);
  if (!resp.body.tunnel_key) throw new Error('the edge issued no tunnel key');
  peer.session = { id: resp.body.session_id, tunnelKey: resp.body.tunnel_key };
  return { peer, resp: resp.body };
}

export async function login(w: World, clientId: number, authCode: string): Promise<WirePeer> {
  return (await handshake(w, { client_id: clientId, auth_code: authCode })).peer;
}

/**
 * What a raw tunnel half proves: the mapping secret and the control session it belongs to, plus,
 * for a target half, the ticket of the tunnel.open it answers. Without a session: the legacy proof
 * of the mapping secret alone (older agents), which edges refuse.
 */
export interface TunnelAuth {
  secret: string;
  session?: PeerSession | undefined;
  ticket?: string | undefined;
}

/** The TunnelOpen frame a raw agent sends (fresh ts and nonce). */
export function tunnelOpenFrame(f: { mapping_id: number; tunnel_id: string; role: 'source' | 'target'; client_id: number }, auth: TunnelAuth, ts = Date.now()) {
  const fields = { ...f, ts, nonce: newNonce() };
  if (!auth.session) return { protocol_version: PROTOCOL_VERSION, ...fields, proof: computeProof(auth.secret, fields) };
  const bound = { ...fields, session_id: auth.session.id, ...(auth.ticket !== undefined ? { ticket: auth.ticket } : {}) };
  return { protocol_version: PROTOCOL_VERSION, ...bound, proof: computeSessionProof(auth.session.tunnelKey, auth.secret, bound) };
}

/** Opens a raw tunnel connection; `early` is written in the same chunk as the TunnelOpen frame. */
export async function rawTunnel(
  port: number,
  f: { mapping_id: number; tunnel_id: string; role: 'source' | 'target'; client_id: number },
  auth: TunnelAuth,
  early: Buffer = Buffer.alloc(0),
): Promise<{ socket: Socket; ack: ControlMessage; remainder: Buffer }> {
  const socket = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  socket.on('error', () => undefined);
  socket.write(Buffer.concat([encodeMessage(PacketType.TunnelOpen, tunnelOpenFrame(f, auth)), early]));
  const decoder = new FrameDecoder();
  const ack = decodeMessage(await readFirstFrame(socket, decoder, 10_000));
  return { socket, ack, remainder: decoder.takeRemainder() };
}

/**
 * How a socket's stream ended: a clean FIN ('end', with the bytes before it) or a reset ('error',
 * with its code: ECONNRESET for a TCP reset).
 */
export function outcome(socket: Socket, initial: Buffer = Buffer.alloc(0)): Promise<{ how: 'end' | 'reset'; bytes: Buffer; code?: string }> {
  const chunks = [initial];
  socket.on('data', (c: Buffer) => chunks.push(c));
  socket.resume();
  return new Promise((resolve) => {
    socket.once('end', () => resolve({ how: 'end', bytes: Buffer.concat(chunks) }));
    socket.once('error', (err: NodeJS.ErrnoException) => resolve({ how: 'reset', bytes: Buffer.concat(chunks), ...(err.code ? { code: err.code } : {}) }));
  });
}

export function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/**
 * A target service. 'reverse': reads until the visitor half-closes, then answers with the bytes
 * reversed and closes (the visitor ended first, the service still sends). 'banner': sends a banner
 * and half-closes at once, then keeps reading until the visitor ends (the service ended first).
 */
export async function startTargetService(t: Test, mode: 'reverse' | 'banner', banner: Buffer = randomBytes(64 * 1024)) {
  const received: Buffer[] = [];
  const server: Server = createServer({ allowHalfOpen: true }, (s) => {
    const chunks: Buffer[] = [];
    s.on('error', () => undefined);
    if (mode === 'banner') s.end(banner);
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => {
      const all = Buffer.concat(chunks);
      received.push(all);
      if (mode === 'reverse') s.end(Buffer.from(all).reverse());
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return { port: (server.address() as AddressInfo).port, received, banner, server };
}

/** Like visit(), for tunnels expected to fail: resolves with what arrived and whether it was reset. */
export function visitOutcome(port: number, payload: Buffer): Promise<{ received: Buffer; reset: boolean }> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    const chunks: Buffer[] = [];
    let reset = false;
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('error', () => (reset = true));
    s.on('end', () => s.end());
    s.on('close', () => resolve({ received: Buffer.concat(chunks), reset }));
    s.end(payload);
  });
}

/**
 * A visitor: connects, sends `payload`, half-closes, and collects everything until the other side
 * ends. Resolves with what it received; rejects on a reset. `host`: another loopback address
 * (an edge's public ports on 127.0.0.2, ...).
 */
export function visit(port: number, payload: Buffer, host = '127.0.0.1'): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port, allowHalfOpen: true });
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('error', reject);
    s.on('end', () => {
      s.end();
      resolve(Buffer.concat(chunks));
    });
    s.on('close', () => resolve(Buffer.concat(chunks)));
    s.end(payload);
  });
}

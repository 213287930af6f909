import { randomUUID } from 'node:crypto';
import { Client, connectivityState, credentials, Metadata, type ClientDuplexStream, type ServiceError } from '@grpc/grpc-js';
import type { Logger } from '../../../shared/platform/logger.js';
import { signOpen, type BridgeOpenRequest } from './auth.js';
import { BridgeError, BridgeErrorCode } from './errors.js';
import { bridgeService, type BridgeFrame, type OutFrame } from './proto.js';
import { DEFAULT_FLOW_CONTROL_WINDOW, STREAM_ID_HEADER } from './server.js';
import { BridgeStream, type CallEnds, type FrameCall } from './stream.js';

export interface BridgePoolOptions {
  /** This node's id: the source of every Open. */
  readonly nodeId: string;
  readonly secret: string;
  readonly log?: Logger;
  /** Connections kept open per peer once it was used, even when idle. Default 1. */
  readonly minConnections?: number;
  /** Connections per peer at most. Default 4. */
  readonly maxConnections?: number;
  /** Concurrent streams per connection at most. Default 100. */
  readonly maxStreamsPerConnection?: number;
  /** A connection above minConnections with no stream for this long is closed. Default 60 s. */
  readonly idleTimeoutMs?: number;
  /** HTTP/2 ping interval on every connection, streams or not. Default 10 s. */
  readonly keepaliveTimeMs?: number;
  /** A ping unanswered for this long marks the connection dead. Default 5 s. */
  readonly keepaliveTimeoutMs?: number;
  /** How long open() waits for the peer's OpenAck. Default 10 s. */
  readonly openTimeoutMs?: number;
  /** HTTP/2 receive window per stream and per connection; 0 keeps Node's 64 KiB (bench baseline). */
  readonly flowControlWindow?: number;
  readonly now?: () => number;
}

interface Connection {
  readonly id: number;
  readonly client: Client;
  streams: number;
  /** Open streams, so forget()/close() can reset them. */
  readonly open: Set<BridgeStream>;
  /** When the last stream ended (undefined while streams > 0). */
  idleSince: number | undefined;
  dead: boolean;
}

export interface ConnectionStats {
  readonly id: number;
  readonly streams: number;
  readonly state: string;
}

/**
 * Bridge connections to peer nodes, one pool per peer address.
 *
 * - Placement packs streams onto the oldest connection with room; another connection is opened
 *   only when every one carries maxStreamsPerConnection. Packing leaves the extra connections
 *   idle when load drops, so the reaper can close them.
 * - At maxConnections with every connection full, open() refuses at once with
 *   TNX_BRIDGE_POOL_EXHAUSTED instead of queueing: the caller holds a visitor's socket and resets
 *   it, which the visitor sees immediately, rather than waiting on a peer that is already at its
 *   capacity. The bound is maxConnections × maxStreamsPerConnection streams per peer.
 * - Health: every connection pings (grpc keepalive, also without calls). A connection whose
 *   transport fails or drops (unanswered ping, closed socket, refused connect) is removed from the
 *   pool at once and never reused; its streams see a reset; the next open() dials afresh.
 */
export class BridgePool {
  private readonly peers = new Map<string, Connection[]>();
  private readonly reaper: NodeJS.Timeout;
  private readonly log: Logger | undefined;
  private readonly now: () => number;
  private nextId = 1;
  private closed = false;
  private readonly min: number;
  private readonly max: number;
  private readonly perConnection: number;
  private readonly idleMs: number;

  constructor(private readonly o: BridgePoolOptions) {
    this.min = o.minConnections ?? 1;
    this.max = o.maxConnections ?? 4;
    this.perConnection = o.maxStreamsPerConnection ?? 100;
    this.idleMs = o.idleTimeoutMs ?? 60_000;
    if (!(this.min >= 0 && this.max >= 1 && this.min <= this.max && this.perConnection >= 1)) {
      throw new RangeError(`bridge pool limits out of range: min ${this.min}, max ${this.max}, streams ${this.perConnection}`);
    }
    this.now = o.now ?? Date.now;
    this.log = o.log?.child({ component: 'bridge-pool', nodeId: o.nodeId });
    this.reaper = setInterval(() => this.reap(), Math.max(10, Math.min(this.idleMs / 2, 5_000)));
    this.reaper.unref();
  }

  /**
   * Opens one tunnel stream to the peer at `address` (host:port). Resolves once the peer
   * answered OpenAck{ok}; rejects with a BridgeError: the peer's own code when it refused
   * (refusedByPeer), or TNX_BRIDGE_UNAVAILABLE / _TIMEOUT / _POOL_EXHAUSTED / _CLOSED.
   * The caller owns the returned stream.
   */
  async open(address: string, req: BridgeOpenRequest): Promise<BridgeStream> {
    if (this.closed) throw new BridgeError(BridgeErrorCode.Closed, 'bridge pool is closed');
    const conn = this.pick(address);
    conn.streams++;
    conn.idleSince = undefined;
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      if (--conn.streams === 0) conn.idleSince = this.now();
    };
    try {
      const stream = await this.openOn(conn, address, req);
      conn.open.add(stream);
      stream.once('close', () => {
        conn.open.delete(stream);
        release();
      });
      return stream;
    } catch (err) {
      release();
      throw err;
    }
  }

  /** The pool's connections to `address`, oldest first. */
  stats(address: string): ConnectionStats[] {
    return (this.peers.get(address) ?? []).map((c) => ({
      id: c.id,
      streams: c.streams,
      state: connectivityState[c.client.getChannel().getConnectivityState(false)] ?? 'UNKNOWN',
    }));
  }

  /** Every peer's connections and the streams open on them (the metrics' pool gauges). */
  peerStats(): { address: string; connections: number; streams: number }[] {
    return [...this.peers.entries()].map(([address, conns]) => ({
      address,
      connections: conns.length,
      streams: conns.reduce((n, c) => n + c.streams, 0),
    }));
  }

  /** Closes every connection to a peer that left the cluster and resets their streams. */
  forget(address: string): void {
    for (const c of [...(this.peers.get(address) ?? [])]) {
      this.drop(address, c, 'forgotten');
      for (const s of c.open) s.destroy(new BridgeError(BridgeErrorCode.Closed, `bridge to ${address} closed`));
    }
  }

  close(): void {
    this.closed = true;
    clearInterval(this.reaper);
    for (const address of [...this.peers.keys()]) this.forget(address);
  }

  private pick(address: string): Connection {
    let conns = this.peers.get(address);
    if (!conns) {
      conns = [];
      this.peers.set(address, conns);
    }
    while (conns.length < this.min) this.connect(address, conns);
    const roomy = conns.find((c) => c.streams < this.perConnection);
    if (roomy) return roomy;
    if (conns.length < this.max) return this.connect(address, conns);
    throw new BridgeError(
      BridgeErrorCode.PoolExhausted,
      `bridge pool to ${address} is full (${this.max} connections × ${this.perConnection} streams)`,
      { details: { address } },
    );
  }

  private connect(address: string, conns: Connection[]): Connection {
    const window = this.o.flowControlWindow ?? DEFAULT_FLOW_CONTROL_WINDOW;
    const client = new Client(address, credentials.createInsecure(), {
      // Each pool connection is its own channel with its own HTTP/2 connection; without this
      // grpc-js would share one subchannel between channels of the same target and options.
      'grpc.use_local_subchannel_pool': 1,
      // Transparent retries buffer sent messages per call; a byte stream must not be replayed.
      'grpc.enable_retries': 0,
      'grpc.keepalive_time_ms': this.o.keepaliveTimeMs ?? 10_000,
      'grpc.keepalive_timeout_ms': this.o.keepaliveTimeoutMs ?? 5_000,
      'grpc.keepalive_permit_without_calls': 1,
      // Idleness is the pool's business (reap()), not the channel's.
      'grpc.client_idle_timeout_ms': 2_147_483_647,
      ...(window > 65_535 ? { 'grpc-node.flow_control_window': window } : {}),
    });
    const conn: Connection = { id: this.nextId++, client, streams: 0, open: new Set(), idleSince: this.now(), dead: false };
    conns.push(conn);
    this.watch(address, conn);
    this.log?.debug({ address, connection: conn.id }, 'bridge connection opened');
    return conn;
  }

  /** Drops the connection as soon as its channel fails or loses a transport it had. */
  private watch(address: string, conn: Connection): void {
    const channel = conn.client.getChannel();
    let wasReady = false;
    const step = (): void => {
      if (conn.dead) return;
      const state = channel.getConnectivityState(false);
      if (state === connectivityState.READY) wasReady = true;
      if (state === connectivityState.TRANSIENT_FAILURE || state === connectivityState.SHUTDOWN || (wasReady && state === connectivityState.IDLE)) {
        this.drop(address, conn, connectivityState[state] ?? 'failed');
        return;
      }
      channel.watchConnectivityState(state, Infinity, step);
    };
    channel.getConnectivityState(true); // dial now: min connections are warm, and failures show early
    step();
  }

  /**
   * Takes the connection out of the pool: no new stream goes there. Its running streams are left
   * alone: on a dead transport they fail by themselves, and a peer that drains (GOAWAY, which
   * also shows as IDLE) lets them finish on the old transport.
   */
  private drop(address: string, conn: Connection, why: string): void {
    if (conn.dead) return;
    conn.dead = true;
    const conns = this.peers.get(address);
    const i = conns?.indexOf(conn) ?? -1;
    if (conns && i >= 0) conns.splice(i, 1);
    if (conns?.length === 0 && this.min === 0) this.peers.delete(address);
    this.log?.info({ address, connection: conn.id, streams: conn.streams, why }, 'bridge connection dropped');
    conn.client.close();
  }

  private reap(): void {
    const now = this.now();
    for (const [address, conns] of this.peers) {
      // Newest first: packing keeps the oldest connections busy.
      for (const c of [...conns].reverse()) {
        if (conns.length <= this.min) break;
        if (c.streams === 0 && c.idleSince !== undefined && now - c.idleSince >= this.idleMs) this.drop(address, c, 'idle');
      }
    }
  }

  private openOn(conn: Connection, address: string, req: BridgeOpenRequest): Promise<BridgeStream> {
    const def = bridgeService()['Tunnel']!;
    const md = new Metadata();
    md.set(STREAM_ID_HEADER, randomUUID());
    const call = conn.client.makeBidiStreamRequest<OutFrame, BridgeFrame>(
      def.path,
      def.requestSerialize as (v: OutFrame) => Buffer,
      def.responseDeserialize as (b: Buffer) => BridgeFrame,
      md,
    ) as ClientDuplexStream<OutFrame, BridgeFrame> & FrameCall;
    call.write({ open: signOpen(this.o.secret, this.o.nodeId, req, this.now()) });
    return new Promise((resolve, reject) => {
      const cleanup = (): void => {
        clearTimeout(timer);
        call.off('error', onError);
        call.off('end', onEnd);
        call.off('data', onFirst);
      };
      const fail = (err: BridgeError): void => {
        cleanup();
        call.on('error', () => undefined); // the cancel's own status
        call.cancel();
        reject(err);
      };
      const onError = (err: ServiceError): void =>
        fail(new BridgeError(BridgeErrorCode.Unavailable, `bridge to ${address} failed before OpenAck: ${err.details || err.message}`, { cause: err }));
      const onEnd = (): void => fail(new BridgeError(BridgeErrorCode.Unavailable, `bridge to ${address} ended before OpenAck`));
      const onFirst = (frame: BridgeFrame): void => {
        call.pause(); // the BridgeStream reads on from here, when its consumer asks
        if (frame.kind !== 'open_ack') return fail(new BridgeError(BridgeErrorCode.Protocol, `expected OpenAck from ${address}, got ${frame.kind}`));
        const ack = frame.open_ack;
        if (!ack.ok) {
          cleanup();
          call.on('error', () => undefined);
          call.end(); // the peer ends its side after a refusal; finish ours so the call completes
          call.resume();
          reject(new BridgeError(ack.error_code || BridgeErrorCode.TargetFailed, ack.error_message || 'bridge open refused', { refusedByPeer: true, details: { address } }));
          return;
        }
        cleanup();
        resolve(new BridgeStream(call, CLIENT_ENDS));
      };
      const timer = setTimeout(() => fail(new BridgeError(BridgeErrorCode.Timeout, `no OpenAck from ${address} in time`)), this.o.openTimeoutMs ?? 10_000);
      call.on('error', onError);
      call.once('end', onEnd);
      call.on('data', onFirst);
    });
  }
}

const CLIENT_ENDS: CallEnds = {
  // Our HTTP/2 END_STREAM follows the fin frame; the callee then ends the call with status OK.
  afterFin: (call) => call.end(),
  finish: () => undefined,
  reset: (call) => (call as ClientDuplexStream<OutFrame, BridgeFrame>).cancel(),
};

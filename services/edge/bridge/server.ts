import { constants as h2c, type Http2Server, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import type { Duplex } from 'node:stream';
import { Server, ServerCredentials, status as GrpcStatus, type ServerDuplexStream } from '@grpc/grpc-js';
import type { Logger } from '../../../shared/platform/logger.js';
import { errorMessage, TunnoxError } from '../../../shared/platform/errors.js';
import { LogRationer } from '../rate-limit.js';
import { OpenVerifier, type BridgeOpen } from './auth.js';
import { BridgeErrorCode } from './errors.js';
import { bridgeService, type BridgeFrame, type OutFrame } from './proto.js';
import { BridgeStream, type CallEnds } from './stream.js';
import { keepAlive } from '../../../shared/net/keepalive.js';
import type { Socket } from 'node:net';

/**
 * Called for each authenticated Open with the tunnel's byte stream. It owns the stream from then
 * on (typically: ask the local target agent for a tunnel, then pipeSockets(stream, agentSocket)).
 * Resolving sends OpenAck{ok} and lets the stream's writes through; rejecting sends
 * OpenAck{ok: false} with the error's TNX_ code (TNX_BRIDGE_TARGET_FAILED if it has none) and
 * closes the stream. A peer reset before that destroys the stream with an error.
 */
export type BridgeHandler = (open: BridgeOpen, stream: Duplex) => Promise<void> | void;

/** Carries the caller's per-stream id so a callee-side reset can find its HTTP/2 stream. */
export const STREAM_ID_HEADER = 'tunnox-bridge-stream';

/** Default HTTP/2 window (per stream and per connection) on both ends of the bridge. */
export const DEFAULT_FLOW_CONTROL_WINDOW = 4 * 1024 * 1024;

export interface BridgeServerOptions {
  readonly nodeId: string;
  /** Cluster secret shared by all nodes (at least 16 characters). */
  readonly secret: string;
  readonly host: string;
  /** 0 picks a free port (tests). */
  readonly port: number;
  readonly handler: BridgeHandler;
  readonly log?: Logger;
  /** HTTP/2 receive window per stream and per connection; 0 keeps Node's 64 KiB (for the bench's baseline). */
  readonly flowControlWindow?: number;
  /** Streams a caller may open per connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS). */
  readonly maxConcurrentStreams?: number;
  /** How long a new call may take to send its Open. */
  readonly openTimeoutMs?: number;
  /** Accepted clock skew and replay memory (±). */
  readonly replayWindowMs?: number;
  /** HTTP/2 ping period towards callers (their liveness) and how long a ping may go unanswered; default 10 s and 5 s. */
  readonly keepaliveTimeMs?: number;
  readonly keepaliveTimeoutMs?: number;
  readonly now?: () => number;
}

/** Serves Bridge.Tunnel: authenticates each Open, then hands its stream to the handler. */
export class BridgeServer {
  private readonly server: Server;
  private readonly verifier: OpenVerifier;
  private readonly window: number;
  private readonly h2Streams = new Map<string, ServerHttp2Stream>();
  private readonly sessions = new Set<ServerHttp2Session>();
  private readonly log: Logger | undefined;
  /** Refusals are logged, but a flood of forged Opens must not flood the log. */
  private readonly refusals: LogRationer | undefined;
  private activeStreams = 0;
  private boundPort = 0;

  constructor(private readonly o: BridgeServerOptions) {
    this.verifier = new OpenVerifier(o.secret, o.nodeId, o.replayWindowMs ?? 60_000, o.now ?? Date.now);
    this.window = o.flowControlWindow ?? DEFAULT_FLOW_CONTROL_WINDOW;
    this.log = o.log?.child({ component: 'bridge-server', nodeId: o.nodeId });
    this.refusals = this.log ? new LogRationer(this.log) : undefined;
    this.server = new Server({
      'grpc.max_concurrent_streams': o.maxConcurrentStreams ?? 1000,
      // Callers ping idle connections (their health check); never refuse those pings.
      'grpc.keepalive_permit_without_calls': 1,
      // And ping them: a caller edge that went silent (stopped, gone without a FIN) loses its
      // connection, and the tunnels on it, after one unanswered ping.
      'grpc.keepalive_time_ms': o.keepaliveTimeMs ?? 10_000,
      'grpc.keepalive_timeout_ms': o.keepaliveTimeoutMs ?? 5_000,
    });
    this.server.addService(bridgeService(), { Tunnel: (call: ServerDuplexStream<BridgeFrame, OutFrame>) => this.onCall(call) });
  }

  async start(): Promise<{ host: string; port: number }> {
    this.boundPort = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync(`${this.o.host.includes(':') ? `[${this.o.host}]` : this.o.host}:${this.o.port}`, ServerCredentials.createInsecure(), (err, port) =>
        err ? reject(err) : resolve(port),
      ),
    );
    try {
      this.hookHttp2Servers();
    } catch (err) {
      this.server.forceShutdown();
      throw err;
    }
    this.log?.info({ host: this.o.host, port: this.boundPort }, 'bridge listening');
    return { host: this.o.host, port: this.boundPort };
  }

  get port(): number {
    return this.boundPort;
  }

  /** Live connections (HTTP/2 sessions) and streams: for tests, metrics and the nodes API. */
  stats(): { connections: number; streams: number } {
    return { connections: this.sessions.size, streams: this.activeStreams };
  }

  /**
   * Stops accepting. Running streams get `graceMs` to finish, then every connection is closed
   * (their streams see a reset). graceMs 0 closes at once, like a crashed node.
   */
  async close(graceMs = 0): Promise<void> {
    if (graceMs > 0) {
      const done = new Promise<void>((r) => this.server.tryShutdown(() => r()));
      const timer = setTimeout(() => this.server.forceShutdown(), graceMs);
      await done;
      clearTimeout(timer);
    } else {
      this.server.forceShutdown();
    }
    for (const s of this.sessions) s.destroy();
    this.refusals?.stop();
  }

  /**
   * grpc-js (1.14) never raises the server's HTTP/2 receive windows (upstream grpc-node PR #3058
   * is still open): every session would advertise Node's 64 KiB and cap each caller->callee
   * stream at 64 KiB per round trip. grpc-js keeps its http2 servers in a private map; we take
   * them from there once, right after binding, and from then on use only public Node APIs:
   * SETTINGS_INITIAL_WINDOW_SIZE and the connection window on each new session, and an index of
   * HTTP/2 streams by STREAM_ID_HEADER so a callee-side reset is an immediate RST_STREAM. The
   * grpc-js version is pinned; if its internals move, start() fails loudly here.
   */
  private hookHttp2Servers(): void {
    const internal = (this.server as unknown as { http2Servers?: unknown }).http2Servers;
    if (!(internal instanceof Map) || internal.size === 0) throw new Error('grpc-js internals changed: Server.http2Servers not found (bridge needs it for HTTP/2 windows)');
    for (const h2 of internal.keys() as IterableIterator<Http2Server>) {
      if (typeof h2.on !== 'function') throw new Error('grpc-js internals changed: Server.http2Servers holds no http2 servers');
      // TCP keepalive under the HTTP/2 pings, as on every other socket of the edge.
      h2.on('connection', (socket: Socket) => keepAlive(socket));
      h2.on('session', (session: ServerHttp2Session) => {
        this.sessions.add(session);
        session.once('close', () => this.sessions.delete(session));
        if (this.window > 65_535) {
          session.settings({ initialWindowSize: this.window });
          session.setLocalWindowSize(this.window);
        }
      });
      h2.on('stream', (stream: ServerHttp2Stream, headers: Record<string, string | string[] | undefined>) => {
        const id = headers[STREAM_ID_HEADER];
        // First come keeps the id: a caller cannot take over another's entry (ids are random UUIDs).
        if (typeof id !== 'string' || this.h2Streams.has(id)) return;
        this.h2Streams.set(id, stream);
        stream.once('close', () => {
          if (this.h2Streams.get(id) === stream) this.h2Streams.delete(id);
        });
      });
    }
  }

  private ends(streamId: string | undefined): CallEnds {
    return {
      afterFin: () => undefined,
      // Status OK goes out after every queued frame, so the caller reads all bytes first.
      finish: (call) => call.end(),
      reset: (call, err) => {
        const h2 = streamId === undefined ? undefined : this.h2Streams.get(streamId);
        if (h2 && !h2.closed) h2.close(h2c.NGHTTP2_CANCEL);
        // Without the HTTP/2 stream, a non-OK status: still a reset to the caller, but queued behind buffered frames.
        else call.emit('error', { code: GrpcStatus.ABORTED, details: `${BridgeErrorCode.Reset}: ${err ? errorMessage(err) : 'reset by callee'}` });
      },
    };
  }

  private onCall(call: ServerDuplexStream<BridgeFrame, OutFrame>): void {
    const streamId = call.metadata.get(STREAM_ID_HEADER)[0];
    const ends = this.ends(typeof streamId === 'string' ? streamId : undefined);
    call.on('error', () => undefined); // a reset before Open: nothing to tell anyone
    let settled = false;
    const refuse = (code: string, message: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      this.refusals?.warn(code, { code, peer: call.getPeer() }, `bridge open refused: ${message}`);
      call.write({ open_ack: { ok: false, error_code: code, error_message: message } });
      call.end();
    };
    const timer = setTimeout(() => refuse(BridgeErrorCode.Protocol, 'no Open received in time'), this.o.openTimeoutMs ?? 10_000);
    call.once('data', (first: BridgeFrame) => {
      call.pause(); // the BridgeStream reads on from here, when its consumer asks
      if (settled) return;
      if (first.kind !== 'open') return refuse(BridgeErrorCode.Protocol, `first frame must be Open, got ${first.kind}`);
      const verdict = this.verifier.verify(first.open);
      if (!verdict.ok) return refuse(verdict.code, verdict.message);
      settled = true;
      clearTimeout(timer);
      void this.accept(call, verdict.open, ends);
    });
  }

  private async accept(call: ServerDuplexStream<BridgeFrame, OutFrame>, open: BridgeOpen, ends: CallEnds): Promise<void> {
    const log = this.log?.child({ tunnelId: open.tunnelId, mappingId: open.mappingId, sourceNodeId: open.sourceNodeId });
    const stream = new BridgeStream(call, ends, { holdWrites: true });
    // Peer resets are expected; the handler adds its own listener (the pump does).
    stream.on('error', (err) => log?.debug({ err: errorMessage(err) }, 'bridge stream reset'));
    this.activeStreams++;
    stream.once('close', () => this.activeStreams--);
    try {
      await this.o.handler(open, stream);
    } catch (err) {
      const code = err instanceof TunnoxError && err.code.startsWith('TNX_') ? err.code : BridgeErrorCode.TargetFailed;
      log?.info({ code }, `bridge open failed at target: ${errorMessage(err)}`);
      if (stream.destroyed) return; // the handler already reset it: the caller sees that
      stream.abandon();
      call.write({ open_ack: { ok: false, error_code: code, error_message: errorMessage(err) } });
      call.end();
      return;
    }
    if (stream.destroyed) return;
    call.write({ open_ack: { ok: true, error_code: '', error_message: '' } });
    stream.release();
  }
}

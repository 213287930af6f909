import { randomUUID } from 'node:crypto';
import { createServer as createHttpServer, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { EventStore } from '../../shared/eventstore/types.js';
import { ByteBudget, closeAfterFlush, readFirstFrame } from '../../shared/net/frames.js';
import { errorMessage } from '../../shared/platform/errors.js';
import type { Logger } from '../../shared/platform/logger.js';
import { FrameDecoder } from '../../shared/wire/codec.js';
import { AgentFeature, SessionCloseReason, WireErrorCode } from '../../shared/wire/codes.js';
import { decodeMessage, encodeMessage, type ConfigSync, type ControlMessage, type Handshake } from '../../shared/wire/messages.js';
import { DEFAULT_MAX_FRAME_SIZE, PROTOCOL_VERSION, PacketType, packetTypeName } from '../../shared/wire/packets.js';
import { newTunnelKey } from '../../shared/wire/proof.js';
import { SessionFacts } from './facts.js';
import { authenticate, decoy, usedFeatures } from './handshake.js';
import { PublicListeners } from './public.js';
import { ControlSession, type ConfigRetryPolicy } from './session.js';
import { SessionTokens, type SessionTokenOptions } from './session-token.js';
import { TunnelBroker, type TunnelLimits } from './tunnels.js';
import type { EdgeRoutes } from './routes.js';
import { ConcurrencyCap, KeyedRateLimiter, LogRationer, LoginRationer } from './rate-limit.js';
import { verifySecret } from '../../shared/platform/secrets.js';
import { keepAlive } from '../../shared/net/keepalive.js';
import type { ClientConfig, EdgeView, ViewChange } from './view/view.js';
import { MappingSecrets } from '../../shared/platform/mapping-secrets.js';
import { Acceptor } from '../../shared/transport/accept.js';
import type { TlsIdentity } from '../../shared/transport/cert.js';
import type { Conn } from '../../shared/transport/conn.js';
import { WS_PATH } from '../../shared/transport/url.js';
import { WsAcceptor } from '../../shared/transport/ws.js';
import { BridgeServer } from './bridge/index.js';
import type { RemoteTargets } from './tunnels.js';
import type { EdgeMetrics } from './metrics.js';

/**
 * The first bytes of every connection are not charged to the pre-auth budget: any Handshake or
 * TunnelOpen fits, so real agents get in even while an attacker keeps the budget full, and this
 * much is what the connection's socket costs anyway.
 */
const PRE_AUTH_FREE_BYTES = 1024;

/** Drain: the least time between two passes over the sessions whose tunnels have all ended. */
const DRAIN_PASS_MS = 50;

/** Defaults of EdgeOptions.heartbeatIntervalMs / heartbeatTimeoutMs (see docs/protocol.md, Liveness). */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 10_000;
export const DEFAULT_HEARTBEAT_TIMEOUT_MS = 30_000;
/**
 * What "a silent agent is offline and reclaimed within 45 s" rests on: the deadline fires at most
 * heartbeatTimeoutMs after the agent's last byte, and the session's close, its ClientDisconnected
 * fact and the reset of its tunnels follow in the same tick (the projection a moment later).
 */
export const SILENT_AGENT_RECLAIM_BOUND_MS = 45_000;

/** Thrown when the credential-check cap is full; answered with a retryable code. */
class LoginBusyError extends Error {}

export { closeStaleSessions } from './facts.js';
export { DEFAULT_TUNNEL_LIMITS, type TunnelLimits } from './tunnels.js';
export { DEFAULT_VISITOR_RATE } from './public.js';
export type { EdgeMetrics, TunnelKind } from './metrics.js';
export * from './view/index.js';
export {
  DEFAULT_SESSION_TOKEN_TTL_MS,
  SESSION_TOKEN_KEY_LABEL,
  SessionTokens,
  deriveSessionTokenKey,
  generateSessionTokenKey,
  type SessionTokenOptions,
} from './session-token.js';

/**
 * Everything an edge needs: the event store (anonymous registration, session facts), its view of
 * clients and mappings (fed from the state stream in a cluster, from the read models standalone),
 * a node id and a logger. No database: nothing on the handshake, TunnelOpen or public-accept path
 * waits on PostgreSQL.
 */
export interface EdgeOptions {
  store: EventStore;
  view: EdgeView;
  logger: Logger;
  nodeId: string;
  controlHost: string;
  /** 0 = ephemeral (tests). */
  controlPort: number;
  /** Bind address for public mapping listeners; default '0.0.0.0'. */
  publicHost?: string;
  /** Cap on a frame from an authenticated agent; default 1 MiB. */
  maxFrameSize?: number;
  /**
   * Cap on the first frame (Handshake or TunnelOpen), the only one an unauthenticated peer may
   * send; default 4 KiB (a handshake is a few hundred bytes).
   */
  preAuthMaxFrameSize?: number;
  /**
   * Bytes all not-yet-authenticated connections together may hold; a connection whose next read
   * does not fit is closed; each connection's first KiB is free (see PRE_AUTH_FREE_BYTES).
   * Default 32 MiB (about 10 000 connections each holding a whole 4 KiB frame).
   */
  preAuthBufferBytes?: number;
  /** How often the edge heartbeats an idle session (and asks agents to); default 10 s. */
  heartbeatIntervalMs?: number;
  /**
   * The heartbeat deadline: a session the edge heard no byte from for this long is closed, and the
   * tunnels of its agent here are reset (the agent is alive but silent, or gone without a FIN).
   * Announced to agents that declared AgentFeature.HeartbeatTimeout, which hold the edge to it.
   * Default 30 s, or 3 intervals when only the interval is given: with the defaults a silent agent
   * is offline and reclaimed within 45 s.
   */
  heartbeatTimeoutMs?: number;
  /**
   * Time a new connection has to deliver its whole first frame (Handshake or TunnelOpen), counted
   * from accept, however it trickles in; default 10 s.
   */
  handshakeTimeoutMs?: number;
  /** Time a visitor waits for the target agent's half of the tunnel; default 10 s. */
  tunnelOpenTimeoutMs?: number;
  /** Time an agent's FIN on a tunnel waits for the agent's TunnelEnd before it is a reset; default 5 s. */
  endAttestTimeoutMs?: number;
  /** Accepted clock difference for TunnelOpen timestamps (replay window); default 60 s. */
  replayWindowMs?: number;
  /** Register agents that connect without credentials (default true). */
  allowAnonymous?: boolean;
  /** Anonymous registrations allowed per remote IP per minute (burst of the same size); default 10. */
  anonymousPerMinutePerIp?: number;
  /**
   * Safety net: every interval the edge re-checks its public listeners against the view and pushes
   * to every connected agent whose acknowledged config is older than the view's. Default 30 s.
   */
  reconcileIntervalMs?: number;
  /**
   * Backoff between config pushes an agent did not acknowledge (no answer, an error) or that left
   * some of its mappings failing (e.g. a local port in use): exponential, jittered, per session.
   * Default 1 s doubling to 60 s.
   */
  configRetry?: ConfigRetryPolicy;
  /** Failed logins tolerated per remote IP per minute (see LoginRationer for the full rule); default 30. */
  failedLoginsPerMinutePerIp?: number;
  /** Failed logins tolerated per client id per minute, from all addresses together; default 10. */
  failedLoginsPerMinutePerClient?: number;
  /** Warning lines per reason per 10 s before they are only counted and summed up; default 20. */
  warningsPerInterval?: number;
  /** Credential checks (scrypt) running at once; more are refused with a retryable code. Default 32. */
  maxConcurrentLogins?: number;
  /** Cluster mode: client routes in NATS KV (services/edge/routes.ts); the caller owns it. */
  routes?: EdgeRoutes;
  /**
   * Cluster mode: serve the node-to-node bridge (tunnels from other edges to agents connected
   * here) and reach agents connected elsewhere through `remote` (services/edge/remote.ts).
   */
  bridge?: { secret: string; host: string; port: number; remote: RemoteTargets };
  /**
   * Issue session tokens to agents that declare AgentFeature.SessionToken, and accept them on
   * reconnect (services/edge/session-token.ts). Every edge of a cluster must have the same key
   * (deriveSessionTokenKey(cluster secret)). Without it tokens are neither issued nor accepted.
   */
  sessionTokens?: SessionTokenOptions;
  /**
   * The master key mapping secrets are derived from (shared/platform/mapping-secrets.ts): what
   * agents get in config.sync and what TunnelOpen proofs are checked against. Every edge of a
   * cluster should have the same one (deriveMappingMasterKey(cluster secret)); an agent that moves
   * to an edge with another key gets that edge's secrets in its config push.
   */
  mappingKey: Buffer;
  /** Tunnel counts, bytes and config push latency for the process's metrics (services/edge/metrics.ts). */
  metrics?: EdgeMetrics;
  /**
   * The certificate agents' control and tunnel connections are secured with (TLS 1.3), on the
   * control port and, for wss, the WebSocket port. Without one the edge serves plain TCP only,
   * which it must be told it may (allowPlaintext).
   */
  tls?: TlsIdentity;
  /**
   * Accept agents that speak plain TCP (tcp://) or plain WebSocket (ws://) too, on the same ports
   * (the first byte tells TLS from plaintext). Otherwise a plaintext agent is answered
   * TNX_WIRE_PLAINTEXT_REFUSED and closed. Default false.
   */
  allowPlaintext?: boolean;
  /** Serve the same protocol over WebSocket at path /tunnox on this port (0 = ephemeral); default: no WebSocket. */
  wsPort?: number;
  /**
   * Flood limits: per mapping (defaults for mappings that set no max_connections/max_pending_opens)
   * and the flow control of tunnel requests per target agent; see TunnelLimits and DEFAULT_TUNNEL_LIMITS.
   */
  tunnelLimits?: Partial<TunnelLimits>;
  /** New visitor connections per source IP on public ports (token bucket); default DEFAULT_VISITOR_RATE, perSecond 0 = off. */
  visitorRate?: { perSecond: number; burst: number };
}

export interface RunningEdge {
  readonly controlPort: number;
  /** The bound WebSocket port, when the edge serves WebSocket. */
  readonly wsPort: number | undefined;
  /** The SHA-256 fingerprint of the edge's certificate, when it has one. */
  readonly fingerprint: string | undefined;
  /** The bound bridge port, when this edge serves the bridge (cluster mode). */
  readonly bridgePort: number | undefined;
  readonly nodeId: string;
  /** Stops at once: running tunnels are reset, agents told `shutdown`. */
  stop(): Promise<void>;
  /**
   * Graceful shutdown (SIGTERM). Takes no new sessions or tunnels (the control port answers
   * handshakes with TNX_EDGE_DRAINING and closes once no tunnel waits for its target's half; the
   * public ports close at once; bridged opens are refused), gives up this edge's client routes and
   * tells every agent to log in elsewhere now (session.close `drain`). Running tunnels go on until
   * they end or `timeoutMs` passes; then whatever is left is reset and the edge stops as stop()
   * does. Resolves once stopped.
   */
  drain(timeoutMs: number): Promise<void>;
  stats(): EdgeStats;
}

export interface EdgeStats {
  /** The agents served here, not the draining sessions that only wait for their tunnels. */
  sessions: number;
  tunnels: number;
  /** Tunnels waiting for their target's half here; of those, tunnel.open requests in flight and visitors queued (flow control). */
  pendingTunnels: number;
  inFlightOpens: number;
  queuedOpens: number;
  publicListeners: number;
  /** scrypt auth-code verifications run since start (what session tokens save). */
  credentialChecks: number;
  /** Logins accepted with a session token since start. */
  tokenLogins: number;
  /** Session tokens refused (forged, expired, revoked, another client's) since start. */
  tokensRejected: number;
}

/**
 * The edge: one TCP port for both connection kinds (the first frame decides: Handshake → control
 * session, TunnelOpen → tunnel half), public TCP listeners, config push on view changes.
 * Holds no durable state; everything it knows comes from its view and the event store. Waits for
 * the view to be ready (caught up with its feed) before it listens.
 */
export async function startEdge(opts: EdgeOptions): Promise<RunningEdge> {
  const { store, view, nodeId } = opts;
  // The caller may have bound nodeId already (pino would repeat the key).
  const log = opts.logger.bindings().nodeId === nodeId ? opts.logger : opts.logger.child({ nodeId });
  const maxFrameSize = opts.maxFrameSize ?? DEFAULT_MAX_FRAME_SIZE;
  const heartbeatIntervalMs = opts.heartbeatIntervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS;
  // An interval alone keeps the deadline at 3 intervals (as before the deadline was configurable).
  const heartbeatTimeoutMs = opts.heartbeatTimeoutMs ?? (opts.heartbeatIntervalMs !== undefined ? 3 * heartbeatIntervalMs : DEFAULT_HEARTBEAT_TIMEOUT_MS);
  if (heartbeatTimeoutMs <= heartbeatIntervalMs) {
    throw new Error(`the heartbeat timeout (${heartbeatTimeoutMs} ms) must be longer than the heartbeat interval (${heartbeatIntervalMs} ms)`);
  }
  const handshakeTimeoutMs = opts.handshakeTimeoutMs ?? 10_000;
  const anonymousLimiter = new KeyedRateLimiter(opts.anonymousPerMinutePerIp ?? 10);
  // Credential checks cost ~50 ms of scrypt on the libuv pool: cap them so a flood of bogus
  // logins cannot starve real agents, and ration failures per address and per client id (brute
  // force). Successful logins are not rationed: a fleet behind one NAT must be able to reconnect at once.
  const logins = new LoginRationer({
    failuresPerMinutePerAddress: opts.failedLoginsPerMinutePerIp ?? 30,
    failuresPerMinutePerClient: opts.failedLoginsPerMinutePerClient ?? 10,
  });
  const scryptCap = new ConcurrencyCap(opts.maxConcurrentLogins ?? 32);
  const preAuthMaxFrameSize = Math.min(opts.preAuthMaxFrameSize ?? 4096, maxFrameSize);
  const preAuthBudget = new ByteBudget(opts.preAuthBufferBytes ?? 32 * 1024 * 1024);
  // Every refused connection is a warning; hostile traffic must not turn that into a log flood.
  const warnings = new LogRationer(log, { perInterval: opts.warningsPerInterval ?? 20 });
  const tunnelOpenTimeoutMs = opts.tunnelOpenTimeoutMs ?? 10_000;
  const tokens = opts.sessionTokens ? new SessionTokens({ ...opts.sessionTokens, nodeId }) : undefined;
  const counters = { credentialChecks: 0, tokenLogins: 0, tokensRejected: 0 };
  // Mapping secrets are derived here, for the config push and the TunnelOpen check, never stored.
  const secrets = new MappingSecrets(opts.mappingKey);
  const agentConfig = (config: ClientConfig): ConfigSync => ({
    version: config.version,
    mappings: config.mappings.map(({ secret_generation, ...m }) => ({ ...m, secret_key: secrets.secretOf({ mapping_id: m.mapping_id, secret_generation }) })),
  });

  const sessions = new Map<number, ControlSession>();
  /** Connections still deciding what they are (before the first frame is handled). */
  const unclassified = new Set<Conn>();
  if (!opts.tls && !opts.allowPlaintext) throw new Error('an edge without a TLS certificate must be allowed plaintext (allowPlaintext)');
  const allowPlaintext = opts.allowPlaintext === true;
  const facts = new SessionFacts(store, nodeId, log);
  const broker = new TunnelBroker({
    findMapping: (mappingId) => view.mapping(mappingId),
    mappingSecret: (mapping) => secrets.secretOf(mapping),
    findClient: (clientId) => view.client(clientId),
    logger: log,
    warnings,
    findSession: (clientId) => sessions.get(clientId),
    openTimeoutMs: tunnelOpenTimeoutMs,
    replayWindowMs: opts.replayWindowMs ?? 60_000,
    endAttestTimeoutMs: opts.endAttestTimeoutMs ?? 5_000,
    ...(opts.bridge ? { remote: opts.bridge.remote } : {}),
    ...(opts.metrics ? { metrics: opts.metrics } : {}),
    ...(opts.tunnelLimits ? { limits: opts.tunnelLimits } : {}),
  });
  const publicListeners = new PublicListeners({
    view,
    logger: log,
    host: opts.publicHost ?? '0.0.0.0',
    broker,
    warnings,
    ...(opts.visitorRate ? { visitorRate: opts.visitorRate } : {}),
    ...(opts.metrics ? { metrics: opts.metrics } : {}),
  });
  let stopping: Promise<void> | undefined;
  let draining: Promise<void> | undefined;

  const onSessionClosed = (session: ControlSession, reason: string): void => {
    if (sessions.get(session.clientId) === session) sessions.delete(session.clientId);
    opts.routes?.loggedOut(session);
    broker.failSession(session);
    if (session.timedOut && !sessions.has(session.clientId)) {
      // Silent past the deadline with no newer session: the agent is stopped, hung or gone without
      // a FIN, and its tunnel connections are as dead as its control connection. Reset them now
      // rather than hold their sockets (and their visitors) until TCP gives up.
      const reset = broker.resetAgent(session.clientId);
      if (reset > 0) log.info({ clientId: session.clientId, sessionId: session.sessionId, tunnels: reset }, 'silent agent: its tunnels here were reset');
    }
    facts.disconnected(session.clientId, session.sessionId, reason);
    log.info({ clientId: session.clientId, sessionId: session.sessionId, reason }, 'agent session closed');
  };

  /** Handshakes while draining: a retryable refusal, so the agent tries its next edge. */
  const refuseDraining = (socket: Conn, clientId: number | undefined): void => {
    log.debug({ clientId, remoteAddr: `${socket.remoteAddress}:${socket.remotePort}` }, 'handshake refused: edge draining');
    socket.write(encodeMessage(PacketType.HandshakeResp, { ok: false, error: { code: WireErrorCode.EdgeDraining, message: 'edge draining, connect to another edge' } }));
    closeAfterFlush(socket);
  };

  async function onHandshake(socket: Conn, decoder: FrameDecoder, hs: Handshake): Promise<void> {
    const remoteAddr = `${socket.remoteAddress}:${socket.remotePort}`;
    if (draining) {
      refuseDraining(socket, hs.client_id);
      return;
    }
    const outcome = await authenticate(hs, {
      view,
      store,
      nodeId,
      admitAnonymous: () =>
        opts.allowAnonymous === false ? 'disabled' : anonymousLimiter.take(socket.remoteAddress ?? '?') ? 'ok' : 'rate-limited',
      admitLogin: (clientId) => (socket.destroyed ? 'busy' : (logins.admit(socket.remoteAddress ?? '?', clientId) ?? 'rate-limited')),
      ...(tokens ? { tokens } : {}),
      verify: async (secret, hash) => {
        if (!scryptCap.tryAcquire()) throw new LoginBusyError();
        counters.credentialChecks++;
        try {
          return await verifySecret(secret, hash);
        } finally {
          scryptCap.release();
        }
      },
    }).catch((err: unknown) => {
      if (err instanceof LoginBusyError) {
        return { ok: false as const, code: WireErrorCode.RateLimited, message: 'edge busy, retry later', logReason: 'too many concurrent credential checks' };
      }
      log.error({ err, clientId: hs.client_id }, 'handshake failed on an internal error');
      return { ok: false as const, code: WireErrorCode.EdgeInternal, message: 'edge error, retry later', logReason: 'internal error' };
    });
    if (!outcome.ok && outcome.code === WireErrorCode.SessionTokenRejected) counters.tokensRejected++;
    if (!outcome.ok) {
      warnings.warn(`handshake refused: ${outcome.logReason}`, { clientId: hs.client_id, remoteAddr, code: outcome.code }, `handshake refused: ${outcome.logReason}`);
      socket.write(encodeMessage(PacketType.HandshakeResp, { ok: false, error: { code: outcome.code, message: outcome.message } }));
      closeAfterFlush(socket);
      return;
    }
    const { clientId, clientType, epoch } = outcome;
    if (stopping || socket.destroyed) {
      socket.destroy();
      return;
    }
    if (draining) {
      // An anonymous registration made meanwhile is not lost: the agent registers again elsewhere,
      // and this unused client is like any abandoned anonymous one.
      refuseDraining(socket, clientId);
      return;
    }
    // The credentials were checked against the view as it was before an await; a revocation that
    // arrived since found no session to close, so look again now, in the same tick the session
    // is registered. (A client registered just now may not be in the view yet.)
    const current = view.client(clientId);
    if (outcome.via !== 'registration' && (!current || !current.enabled || current.epoch !== epoch)) {
      warnings.warn('handshake refused: credentials changed during login', { clientId, remoteAddr }, 'handshake refused: credentials changed during login');
      socket.write(encodeMessage(PacketType.HandshakeResp, { ok: false, error: { code: WireErrorCode.EdgeInternal, message: 'credentials changed during login, retry' } }));
      closeAfterFlush(socket);
      return;
    }
    if (outcome.via === 'session-token') counters.tokenLogins++;
    const features = new Set(hs.features ?? []);
    // Only to agents that said they take tokens: an older agent's strict schema refuses the field.
    const sessionTokens = tokens && features.has(AgentFeature.SessionToken) ? tokens : undefined;
    // Authenticated: from here on the agent may send frames of the full size.
    decoder.setMaxFrameSize(maxFrameSize);
    const tunnelKey = newTunnelKey();
    const session = new ControlSession({
      clientId,
      clientType,
      features,
      epoch,
      ...(sessionTokens ? { tokenRefresh: { everyMs: Math.floor(sessionTokens.ttlMs / 2), issue: () => sessionTokens.issue(clientId, epoch) } } : {}),
      sessionId: randomUUID(),
      tunnelKey,
      remoteAddr,
      socket,
      decoder,
      loadConfig: () => agentConfig(view.clientConfig(clientId)),
      logger: log,
      heartbeatIntervalMs,
      heartbeatTimeoutMs,
      commandTimeoutMs: tunnelOpenTimeoutMs,
      onClosed: onSessionClosed,
      ...(opts.configRetry ? { configRetry: opts.configRetry } : {}),
      onMappingStatus: (report) => facts.mappingStatus(clientId, session.sessionId, report),
      onTunnelEnd: (s, end) => broker.attestEnd(s.clientId, end),
      ...(opts.metrics ? { metrics: opts.metrics } : {}),
    });
    const previous = sessions.get(clientId);
    // Registered before the first config read, so a notice arriving meanwhile is not missed.
    sessions.set(clientId, session);
    opts.routes?.loggedIn(session); // before the previous session's logout, which must not delete this route
    if (previous) {
      log.info({ clientId, sessionId: previous.sessionId }, 'replacing the previous session of this client');
      previous.close('replaced by a new login', SessionCloseReason.Replaced);
    }
    socket.write(
      encodeMessage(PacketType.HandshakeResp, {
        ok: true,
        protocol_version: PROTOCOL_VERSION,
        client_id: clientId,
        client_type: clientType,
        ...(outcome.issuedAuthCode ? { auth_code: outcome.issuedAuthCode } : {}),
        node_id: nodeId,
        session_id: session.sessionId,
        server_time_ms: Date.now(),
        heartbeat_interval_ms: heartbeatIntervalMs,
        // Only to agents that know the field (an older agent's strict schema refuses it).
        ...(features.has(AgentFeature.HeartbeatTimeout) ? { heartbeat_timeout_ms: heartbeatTimeoutMs } : {}),
        // Every login gets a fresh token (rotation); the one presented, if any, is not reused.
        ...(sessionTokens ? { session_token: sessionTokens.issue(clientId, epoch) } : {}),
        ...usedFeatures(features),
        // Every admitted agent declared AgentFeature.TunnelKey (authenticate refuses the others).
        tunnel_key: tunnelKey.toString('hex'),
      }),
    );
    facts.connected(clientId, session.sessionId, remoteAddr);
    session.start();
    log.info({ clientId, sessionId: session.sessionId, clientType, remoteAddr, via: outcome.via, issued: outcome.issuedAuthCode !== undefined }, 'agent session open');
    void session.syncConfig();
  }

  /** A plaintext agent at an edge that takes TLS only: told so in the protocol, so its error is clear. */
  const refusePlaintext = (socket: Conn, msg: ControlMessage, remoteAddr: string): void => {
    warnings.warn('connection refused: plaintext', { remoteAddr }, 'connection refused: plaintext (the edge runs without --allow-plaintext)');
    const error = {
      code: WireErrorCode.PlaintextRefused,
      message: 'this edge accepts TLS only: connect with --server HOST:PORT (TLS) or wss://; plaintext needs --allow-plaintext on the edge and tcp:// or ws:// on the agent',
    };
    if (msg.type === PacketType.TunnelOpen) socket.write(encodeMessage(PacketType.TunnelOpenAck, { tunnel_id: msg.body.tunnel_id, ok: false, error }));
    else socket.write(encodeMessage(PacketType.HandshakeResp, { ok: false, error }));
    closeAfterFlush(socket);
  };

  async function onConnection(socket: Conn, secure: boolean): Promise<void> {
    socket.setNoDelay(true);
    keepAlive(socket);
    // Permanent: whoever owns the socket later adds its own handling, this one prevents a crash.
    socket.on('error', (err) => log.debug({ err: err.message }, 'connection error'));
    if (stopping) {
      socket.destroy();
      return;
    }
    unclassified.add(socket);
    const decoder = new FrameDecoder(preAuthMaxFrameSize);
    const remoteAddr = `${socket.remoteAddress}:${socket.remotePort}`;
    // Held until the connection is authenticated and handed over (or closed); it covers the
    // first frame and whatever arrived with it.
    const lease = preAuthBudget.lease(PRE_AUTH_FREE_BYTES);
    let msg: ControlMessage;
    try {
      const frame = await readFirstFrame(socket, decoder, handshakeTimeoutMs, lease);
      if (frame.type !== PacketType.Handshake && frame.type !== PacketType.TunnelOpen) {
        throw new Error(`first frame must be Handshake or TunnelOpen, got ${packetTypeName(frame.type)}`);
      }
      msg = decodeMessage(frame);
    } catch (err) {
      lease.release();
      const code = (err as { code?: string }).code;
      const reason = code === 'TNX_WIRE_BUSY' ? 'connection closed: pre-authentication buffer budget exhausted' : 'connection closed: bad first frame';
      warnings.warn(reason, { remoteAddr, reason: errorMessage(err) }, reason);
      socket.destroy();
      return;
    } finally {
      unclassified.delete(socket);
    }
    if (!secure && !allowPlaintext) {
      lease.release();
      refusePlaintext(socket, msg, remoteAddr);
      return;
    }
    try {
      if (msg.type === PacketType.Handshake) await onHandshake(socket, decoder, msg.body);
      else if (msg.type === PacketType.TunnelOpen) await broker.handleOpen(socket, decoder.takeRemainder(), msg.body);
    } catch (err) {
      log.error({ err, remoteAddr }, 'connection closed: internal error');
      socket.destroy();
    } finally {
      lease.release();
    }
  }

  /**
   * What change notices drove before the view: a removed or disabled mapping loses its tunnels (and
   * its public listener), public mappings are reconciled, and every affected connected agent gets a
   * push of its new config. A client that is gone or disabled loses its session.
   */
  const onViewChange = (change: ViewChange): void => {
    let publicChanged = false;
    for (const [mappingId, { before, after }] of change.mappings) {
      if (before?.public_port != null || after?.public_port != null) publicChanged = true;
      if (before?.enabled && !after?.enabled) broker.closeMapping(mappingId);
    }
    if (publicChanged) void publicListeners.reconcile();
    // Before the sessions close: tunnels of a revoked client end now, whichever session opened them.
    if (change.clients.size > 0) broker.revokeClients(change.clients);
    for (const clientId of change.clients) {
      const session = sessions.get(clientId);
      if (!session) continue;
      const client = view.client(clientId);
      if (!client || !client.enabled) {
        // No close reason: the agent reconnects and its login is refused like any unknown client's.
        session.close(client ? 'client disabled' : 'client deleted');
        continue;
      }
      if (client.epoch !== session.epoch) {
        // Kicked or auth code rotated: the agent's token is revoked with it; it may log in again
        // with an auth code that is (still) valid.
        session.close('client credentials revoked');
        continue;
      }
      void session.syncConfig(client.config_version);
    }
  };

  if (!view.ready) {
    log.info('waiting for the edge view to catch up');
    await view.whenReady();
  }
  const acceptor = new Acceptor({
    host: opts.controlHost,
    port: opts.controlPort,
    tls: opts.tls,
    firstByteTimeoutMs: handshakeTimeoutMs,
    onConn: (socket, secure) => void onConnection(socket, secure),
  });
  await acceptor.start();
  const ws = opts.wsPort !== undefined ? await startWebSocket(opts.wsPort) : undefined;
  // One close for drain and stop: resolves once the last accepted connection is gone.
  let listenerClosed: Promise<void> | undefined;
  const closeListener = (): Promise<void> => (listenerClosed ??= Promise.all([acceptor.close(), ws?.close()]).then(() => undefined));

  /**
   * The WebSocket port: the same peeking acceptor (wss and, when allowed, ws on one port), an HTTP
   * server that only upgrades GET /tunnox, and each upgraded WebSocket handled like a TCP connection.
   */
  async function startWebSocket(port: number): Promise<Acceptor> {
    const wsAcceptor = new WsAcceptor(WS_PATH, (conn) => void onConnection(conn, (conn.raw as TLSSocket).encrypted === true));
    const http = createHttpServer({ headersTimeout: handshakeTimeoutMs, requestTimeout: handshakeTimeoutMs, keepAliveTimeout: 1000 });
    http.on('request', (_req, res) => {
      res.writeHead(426, { 'content-type': 'text/plain', connection: 'close', upgrade: 'websocket' });
      res.end(`tunnox edge: WebSocket agents connect to ${WS_PATH}\n`);
    });
    http.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
      if (stopping || draining) {
        socket.end('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
        return;
      }
      if (!(socket as TLSSocket).encrypted && !allowPlaintext) {
        const body = 'this edge accepts wss:// (TLS) only; ws:// needs --allow-plaintext on the edge\n';
        socket.end(`HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Type: text/plain\r\nX-Tunnox-Error: ${WireErrorCode.PlaintextRefused}\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
        return;
      }
      wsAcceptor.upgrade(req, socket, head);
    });
    http.on('clientError', (_err, socket) => socket.destroy());
    const acc = new Acceptor({ host: opts.controlHost, port, tls: opts.tls, firstByteTimeoutMs: handshakeTimeoutMs, onConn: (socket) => void http.emit('connection', socket) });
    await acc.start();
    log.info({ host: opts.controlHost, port: acc.port, path: WS_PATH, tls: opts.tls !== undefined, plaintext: allowPlaintext }, 'edge WebSocket listening');
    return acc;
  }
  await decoy();
  const unsubscribe = view.subscribe(onViewChange);
  opts.routes?.start({
    closeSession: (clientId, sessionId, reason) => {
      const s = sessions.get(clientId);
      // A draining session's agent logged in elsewhere because we asked it to: its session here
      // lives on for its running tunnels (drain gave up the route already; this is a backstop).
      if (s?.sessionId === sessionId && !s.draining) s.close('logged in on another edge', reason);
    },
  });
  let bridgeServer: BridgeServer | undefined;
  if (opts.bridge) {
    bridgeServer = new BridgeServer({
      nodeId,
      secret: opts.bridge.secret,
      host: opts.bridge.host,
      port: opts.bridge.port,
      log,
      handler: (open, stream) => broker.openForBridge(stream, open),
    });
    await bridgeServer.start();
  }
  await publicListeners.reconcile();
  const reconcileTimer = setInterval(() => {
    void (async () => {
      await publicListeners.reconcile();
      // Compared with what each agent ACKNOWLEDGED (not merely what was sent): a version still
      // unacknowledged without a push in flight or a retry due is pushed again.
      for (const session of [...sessions.values()]) void session.syncConfig(view.clientConfig(session.clientId).version);
    })().catch((err: unknown) => log.warn({ err }, 'periodic reconcile failed; retrying next interval'));
  }, opts.reconcileIntervalMs ?? 30_000);
  reconcileTimer.unref();
  const controlPort = acceptor.port;
  log.info({ host: opts.controlHost, port: controlPort, tls: opts.tls !== undefined, plaintext: allowPlaintext, fingerprint: opts.tls?.fingerprint }, 'edge listening');

  /**
   * A draining session ends once no tunnel here involves its agent: an agent that declared the
   * drain feature has already moved (this only closes the connection it kept to vouch for its
   * tunnels); any other agent is told `drain` now and reconnects, with its own backoff.
   */
  const closeIdleDrainedSessions = (): void => {
    const inUse = broker.clientsInUse();
    for (const s of [...sessions.values()]) {
      if (!s.draining || inUse.has(s.clientId)) continue;
      if (s.features.has(AgentFeature.Drain)) s.close('edge draining: no tunnel of this agent left here');
      else s.close('edge draining: no tunnel of this agent left here', SessionCloseReason.Drain);
    }
  };

  /** Until the tunnels end or the deadline; edge.drain() then stops the edge, resetting what is left. */
  async function drainSessions(timeoutMs: number): Promise<void> {
    const started = Date.now();
    const before = broker.stats();
    log.info({ timeoutMs, sessions: sessions.size, tunnels: before.active, pending: before.pending }, 'draining: no new sessions or tunnels; agents are moving to other edges');
    broker.drain();
    const publicClosed = publicListeners.stopAccepting();
    for (const s of [...sessions.values()]) {
      // This edge stops being where other edges bridge tunnels for the client (a route another
      // edge already wrote is left alone: the delete is conditional on our revision).
      opts.routes?.loggedOut(s);
      s.beginDrain(s.features.has(AgentFeature.Drain));
    }
    let expired = false;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        expired = true;
        resolve();
      }, timeoutMs);
    });
    for (;;) {
      closeIdleDrainedSessions();
      // Only the target halves of already requested tunnels may still arrive on the control port.
      if (broker.stats().pending === 0) void closeListener();
      if (broker.idle || expired) break;
      await Promise.race([broker.nextSettle(), deadline]);
      // Each pass scans every tunnel and session: with thousands ending, take them in batches.
      if (!broker.idle && !expired) await Promise.race([new Promise((r) => setTimeout(r, DRAIN_PASS_MS)), deadline]);
    }
    clearTimeout(timer);
    await publicClosed;
    const left = broker.stats();
    if (left.active + left.pending > 0) {
      log.warn({ tunnels: left.active, pending: left.pending, ms: Date.now() - started }, 'drain deadline reached: resetting the tunnels still running');
    } else {
      log.info({ ms: Date.now() - started }, 'drained: every tunnel has ended');
    }
  }

  const edge: RunningEdge = {
    controlPort,
    wsPort: ws?.port,
    fingerprint: opts.tls?.fingerprint,
    bridgePort: bridgeServer?.port,
    nodeId,
    stats: () => {
      let served = 0;
      for (const s of sessions.values()) if (!s.draining) served++;
      const b = broker.stats();
      return {
        sessions: served,
        tunnels: b.active,
        pendingTunnels: b.pending,
        inFlightOpens: b.inFlightOpens,
        queuedOpens: b.queuedOpens,
        publicListeners: publicListeners.count,
        ...counters,
      };
    },
    drain(timeoutMs) {
      if (stopping) return stopping;
      draining ??= drainSessions(timeoutMs);
      return draining.then(() => edge.stop());
    },
    stop() {
      stopping ??= (async () => {
        clearInterval(reconcileTimer);
        unsubscribe();
        const closed = closeListener();
        await publicListeners.stop();
        acceptor.destroyPending();
        ws?.destroyPending();
        for (const socket of unclassified) socket.destroy();
        for (const session of [...sessions.values()]) session.close('edge shutting down', SessionCloseReason.Shutdown);
        broker.stop();
        await bridgeServer?.close(0);
        await opts.routes?.stop();
        await facts.drain();
        await closed;
        warnings.stop();
        log.info('edge stopped');
      })();
      return stopping;
    },
  };
  return edge;
}

import type { Conn } from '../../shared/transport/conn.js';
import type { Duplex } from 'node:stream';
import type { ClientState as ClientRow, MappingState as MappingRow } from './view/view.js';
import { closeAfterFlush } from '../../shared/net/frames.js';
import { pipeSockets, resetStream as reset, type PipeOptions } from '../../shared/net/pipe.js';
import { TunnoxError } from '../../shared/platform/errors.js';
import type { Logger } from '../../shared/platform/logger.js';
import { WireErrorCode } from '../../shared/wire/codes.js';
import { encodeMessage, type TunnelEnd, type TunnelOpen } from '../../shared/wire/messages.js';
import { PROTOCOL_VERSION, PacketType } from '../../shared/wire/packets.js';
import { ReplayGuard, newTicket, sameHex, verifySessionProof } from '../../shared/wire/proof.js';
import type { EdgeMetrics } from './metrics.js';
import type { LogRationer } from './rate-limit.js';
import type { ControlSession } from './session.js';

/**
 * Where the visitor's bytes come from: a source agent's tunnel connection, a public port, or (on
 * the target's edge) a bridge stream from the visitor's edge, whose caller waits in `settle`.
 */
type Origin =
  | { readonly kind: 'client'; readonly socket: Conn; readonly early: Buffer; readonly clientId: number }
  | { readonly kind: 'public'; readonly socket: Conn }
  | { readonly kind: 'bridge'; readonly socket: Duplex; readonly settle: { resolve(): void; reject(err: Error): void } };

/**
 * Targets connected to other edges (cluster mode): a byte stream to the target's edge, which asks
 * its agent for the other half, or null when no edge holds the target. Rejects with a TunnoxError
 * whose code is a wire code when the target edge refuses.
 */
export interface RemoteTargets {
  open(target: { tunnelId: string; mappingId: number; targetClientId: number }): Promise<Duplex> | null;
}

/**
 * Whose access a tunnel runs on: the mapping's clients and their auth epochs when it started. A
 * tunnel lives only as long as both stay enabled at that epoch: disabling, kicking or deleting
 * either client (its epoch moves) ends it, on every edge the tunnel crosses, since each edge
 * checks its own view (revokeClients). One record per tunnel, shared by its pending and active forms.
 */
interface Grant {
  readonly source: number | null;
  readonly sourceEpoch: number;
  readonly target: number;
  readonly targetEpoch: number;
}

interface PendingTunnel {
  readonly tunnelId: string;
  readonly mappingId: number;
  readonly targetClientId: number;
  readonly grant: Grant;
  readonly origin: Origin;
  /** The target agent's session: the tunnel.open went there, and only its TunnelOpen pairs. */
  readonly session: ControlSession;
  /** One-time: sent with the tunnel.open, presented by the target half, gone once paired. */
  readonly ticket: string;
  readonly timer: NodeJS.Timeout;
  readonly onOriginClose: () => void;
  /** The mapping's idle_timeout in ms, for the pump (undefined: never). */
  readonly idleTimeoutMs: number | undefined;
  /** Flow control: waiting in its target session's queue, tunnel.open sent, or gone from `pending`. */
  phase: 'queued' | 'sent' | 'done';
}

/**
 * Flow control of the tunnel requests to one target agent session: at most `window` tunnel.open
 * requests in flight (a credit each, from sending it until the agent's target half arrives, the
 * agent refuses it, or the open timeout passes), the rest wait in a FIFO of at most `queue`
 * visitors; beyond that new visitors are refused at once (TNX_TUNNEL_BUSY). A flood therefore
 * costs the agent's control connection `window` small frames at a time, never a backlog.
 */
interface OpenFlow {
  readonly credits: Map<string, NodeJS.Timeout>;
  /** FIFO; may hold entries that left meanwhile (phase 'done'), skipped when they come up. */
  queue: PendingTunnel[];
  /** Live entries of `queue`. */
  queued: number;
}

/** A mapping's tunnels on this edge: all of them (pending, waiting for a bridge stream, running) and the pending ones. */
interface MappingSlots {
  connections: number;
  pending: number;
}

/** Defaults of the flood limits (TunnelBrokerOptions.limits). */
export const DEFAULT_TUNNEL_LIMITS: TunnelLimits = {
  maxConnectionsPerMapping: 10_000,
  maxPendingOpensPerMapping: 256,
  openWindowPerAgent: 32,
  openQueuePerAgent: 1024,
};

export interface TunnelLimits {
  /** Concurrent tunnels of one mapping on this edge, unless the mapping sets max_connections. */
  maxConnectionsPerMapping: number;
  /** Visitors of one mapping waiting for the target's half on this edge, unless the mapping sets max_pending_opens. */
  maxPendingOpensPerMapping: number;
  /** tunnel.open requests in flight to one target agent session. */
  openWindowPerAgent: number;
  /** Visitors queued behind that window, per target agent session. */
  openQueuePerAgent: number;
}

type AgentRole = TunnelEnd['role'];

/** An agent's FIN on a tunnel connection, waiting for that agent's TunnelEnd. */
interface EndWait {
  readonly session: ControlSession;
  readonly finish: (clean: boolean) => void;
}

interface ActiveTunnel {
  readonly tunnelId: string;
  readonly mappingId: number;
  readonly grant: Grant;
  readonly kind: Origin['kind'];
  readonly a: Duplex;
  readonly b: Duplex;
  /** The agent behind each agent-side half: the target always, the source for client origins. */
  readonly agents: Partial<Record<AgentRole, number>>;
  /**
   * Halves whose agent has sent TunnelEnd, and FINs waiting for one. Two roles at most: plain
   * records of fixed shape (see noEnds()), not a Set and a Map, whose hash tables would cost an
   * idle tunnel about 400 bytes (bench/memory).
   */
  readonly attested: Record<AgentRole, boolean>;
  readonly waits: Record<AgentRole, EndWait | undefined>;
  /**
   * The sessions of the agent-side halves whose agents take a FIN only with the edge's TunnelEnd
   * (AgentFeature.EdgeEnd): the sessions that opened them, since the agent forgets its tunnels
   * with the session they were opened in.
   */
  readonly vouchees: Partial<Record<AgentRole, ControlSession>>;
}

export interface TunnelBrokerOptions {
  /** The mapping a TunnelOpen names, from the edge view (no database on this path). */
  findMapping: (mappingId: number) => MappingRow | undefined;
  /** The mapping's secret, which agents got in their config (half of the tunnel-open proof's key). */
  mappingSecret: (mapping: MappingRow) => string;
  /** The client as the edge view has it now: a TunnelOpen is refused for one disabled, gone or revoked meanwhile. */
  findClient: (clientId: number) => ClientRow | undefined;
  logger: Logger;
  /** The control session of a client connected to this edge, if any. */
  findSession: (clientId: number) => ControlSession | undefined;
  openTimeoutMs: number;
  replayWindowMs: number;
  /** How long an agent's FIN waits for its TunnelEnd before it becomes a reset; default 5 s. */
  endAttestTimeoutMs?: number;
  /** Where refusals are logged (rationed: hostile peers must not flood the log). */
  warnings?: LogRationer;
  /** Cluster mode: how to reach a target agent connected to another edge. */
  remote?: RemoteTargets;
  /** Tunnel counts and bytes for the process's metrics. */
  metrics?: EdgeMetrics;
  /** Flood limits; each one missing takes DEFAULT_TUNNEL_LIMITS'. */
  limits?: Partial<TunnelLimits>;
}

export interface TunnelStats {
  pending: number;
  active: number;
  /** tunnel.open requests in flight to target agents, and visitors queued behind them (flow control). */
  inFlightOpens: number;
  queuedOpens: number;
}

/**
 * Pairs the two halves of a tunnel and hands them to the byte pump. A tunnel starts when a source
 * agent opens a tunnel connection (or a visitor reaches a public port); the edge then asks the
 * target agent, over its control session, to open the other half with the same tunnel id. Until
 * paired, the origin socket is paused (nothing is buffered beyond what already arrived) and a
 * timer bounds the wait. Ownership: a socket belongs to the broker from handleOpen/openForVisitor
 * until it is either closed here or handed to pipeSockets, which then owns it.
 *
 * Truncation must never look like completion. Tearing a tunnel down (mapping removed, edge
 * stopping) resets its sockets. And an agent's FIN is passed on only once the agent has vouched
 * for it with TunnelEnd on its control connection: a killed agent's kernel sends FIN as well, so
 * an unvouched FIN (its control session died first, or no TunnelEnd within endAttestTimeoutMs)
 * resets the other side instead. The same holds the other way for agents that declared
 * AgentFeature.EdgeEnd: a clean end of the far side (a visitor's FIN, an agent's vouched FIN, a
 * bridge stream's fin) is vouched for to the agent with TunnelEnd before the FIN is passed on, so
 * the FINs this edge's kernel sends when it is killed reach the agents' local sockets as resets.
 */
export class TunnelBroker {
  private readonly pending = new Map<string, PendingTunnel>();
  private readonly active = new Map<string, ActiveTunnel>();
  /** Origins waiting for a bridge stream (reset if the edge stops or their grant is revoked meanwhile). */
  private readonly remotePending = new Map<Duplex, Grant>();
  private readonly guard: ReplayGuard;
  private readonly log: Logger;
  private stopping = false;
  /** Draining: no new tunnels; the target halves of tunnels already requested may still pair. */
  private draining = false;
  /** Called (and cleared) whenever a tunnel, pending or running, goes away: see nextSettle(). */
  private settleWaiters: (() => void)[] = [];
  private readonly limits: TunnelLimits;
  private readonly flows = new Map<ControlSession, OpenFlow>();
  private readonly slots = new Map<number, MappingSlots>();

  constructor(private readonly o: TunnelBrokerOptions) {
    this.guard = new ReplayGuard(o.replayWindowMs);
    this.log = o.logger;
    this.limits = { ...DEFAULT_TUNNEL_LIMITS, ...o.limits };
  }

  stats(): TunnelStats {
    let inFlightOpens = 0;
    let queuedOpens = 0;
    for (const f of this.flows.values()) {
      inFlightOpens += f.credits.size;
      queuedOpens += f.queued;
    }
    return { pending: this.pending.size, active: this.active.size, inFlightOpens, queuedOpens };
  }

  /** A mapping's tunnels here now (for tests and operators). */
  mappingLoad(mappingId: number): MappingSlots {
    const s = this.slots.get(mappingId);
    return { connections: s?.connections ?? 0, pending: s?.pending ?? 0 };
  }

  /** No tunnel at all: none running, none waiting for its target's half or for a bridge stream. */
  get idle(): boolean {
    return this.pending.size === 0 && this.active.size === 0 && this.remotePending.size === 0;
  }

  /** The clients whose agents are on an end of a tunnel here, pending or running. */
  clientsInUse(): Set<number> {
    const ids = new Set<number>();
    for (const p of this.pending.values()) {
      ids.add(p.targetClientId);
      if (p.origin.kind === 'client') ids.add(p.origin.clientId);
    }
    for (const t of this.active.values()) {
      if (t.agents.source !== undefined) ids.add(t.agents.source);
      if (t.agents.target !== undefined) ids.add(t.agents.target);
    }
    return ids;
  }

  /** Resolves the next time a tunnel (pending or running) goes away, at once when there is none. */
  nextSettle(): Promise<void> {
    if (this.idle) return Promise.resolve();
    return new Promise((resolve) => this.settleWaiters.push(resolve));
  }

  /**
   * Stops taking new tunnels (TunnelOpen from a source, public visitors, bridged opens are refused
   * with TNX_EDGE_DRAINING) and lets the running ones go on. A tunnel already requested from its
   * target agent still pairs when the agent's half arrives: its visitor has waited for it.
   */
  drain(): void {
    this.draining = true;
  }

  private settled(): void {
    const waiters = this.settleWaiters;
    this.settleWaiters = [];
    for (const w of waiters) w();
  }

  /** A connection whose first frame was TunnelOpen. `early` = bytes that followed the frame. */
  async handleOpen(socket: Conn, early: Buffer, open: TunnelOpen): Promise<void> {
    const ctx = { mappingId: open.mapping_id, tunnelId: open.tunnel_id, clientId: open.client_id, role: open.role };
    let mapping: MappingRow | undefined;
    try {
      mapping = this.o.findMapping(open.mapping_id);
    } catch (err) {
      this.log.error({ ...ctx, err }, 'tunnel refused: could not load the mapping');
      this.refuse(socket, open.tunnel_id, WireErrorCode.EdgeInternal, 'edge could not load the mapping');
      return;
    }
    const verdict = this.authorize(open, mapping);
    if (typeof verdict === 'string' || !mapping) {
      // One answer for every authorization failure; the reason goes to the log only.
      const reason = typeof verdict === 'string' ? verdict : 'unknown mapping';
      this.warn(`tunnel refused: ${reason}`, { ...ctx, remoteAddr: socket.remoteAddress });
      this.refuse(socket, open.tunnel_id, WireErrorCode.TunnelRefused, verdict === NOT_BOUND ? NOT_BOUND_ANSWER : 'tunnel refused');
      return;
    }
    if (socket.destroyed || this.stopping) {
      socket.destroy();
      return;
    }
    if (open.role === 'target') this.pairTarget(socket, early, open, verdict);
    else if (this.draining) this.refuse(socket, open.tunnel_id, WireErrorCode.EdgeDraining, 'edge draining: no new tunnels here');
    else this.start(open.tunnel_id, mapping, { kind: 'client', socket, early, clientId: open.client_id });
  }

  /** A visitor accepted on a public port (socket created paused). */
  openForVisitor(visitor: Conn, mapping: MappingRow, tunnelId: string): void {
    visitor.on('error', (err) => this.log.debug({ mappingId: mapping.mapping_id, tunnelId, err: err.message }, 'visitor socket error'));
    if (this.stopping || this.draining) {
      visitor.destroy();
      return;
    }
    this.start(tunnelId, mapping, { kind: 'public', socket: visitor });
  }

  /**
   * The visitor's edge bridged a tunnel here, to a target agent it believes is connected to this
   * edge. Resolves once the agent's half is paired (the bridge then answers OpenAck ok); rejects
   * with a wire-coded TunnoxError otherwise. Never bridges further: a target that is not here is
   * offline as far as this edge knows (no loops between edges with stale routes).
   */
  openForBridge(stream: Duplex, open: { tunnelId: string; mappingId: number; targetClientId: number; sourceNodeId: string }): Promise<void> {
    const mapping = this.o.findMapping(open.mappingId);
    const ctx = { mappingId: open.mappingId, tunnelId: open.tunnelId, sourceNodeId: open.sourceNodeId };
    if (!mapping || !mapping.enabled || mapping.target_client_id !== open.targetClientId) {
      this.warn('bridged tunnel refused: no such enabled mapping to that target here', ctx);
      return Promise.reject(new TunnoxError(WireErrorCode.TunnelRefused, 'tunnel refused'));
    }
    if (this.stopping) return Promise.reject(new TunnoxError(WireErrorCode.TunnelTargetOffline, 'edge shutting down'));
    if (this.draining) return Promise.reject(new TunnoxError(WireErrorCode.EdgeDraining, 'edge draining: no new tunnels here'));
    stream.on('error', (err) => this.log.debug({ ...ctx, err: err.message }, 'bridge stream error'));
    return new Promise((resolve, reject) => this.start(open.tunnelId, mapping, { kind: 'bridge', socket: stream, settle: { resolve, reject } }, false));
  }

  /**
   * An agent's session ended: its pending tunnels can never be completed, and a FIN from it that
   * is still waiting for its TunnelEnd never gets one.
   */
  failSession(session: ControlSession): void {
    for (const p of this.pending.values()) {
      if (p.session === session) this.fail(p, WireErrorCode.TunnelTargetOffline, 'target agent disconnected');
    }
    const flow = this.flows.get(session);
    if (flow) {
      for (const credit of flow.credits.values()) clearTimeout(credit);
      this.flows.delete(session);
    }
    for (const t of this.active.values()) {
      for (const w of [t.waits.source, t.waits.target]) if (w && w.session === session) w.finish(false);
    }
  }

  /** TunnelEnd from `clientId`: its half of the tunnel ended cleanly. */
  attestEnd(clientId: number, end: TunnelEnd): void {
    if (end.reset) {
      this.log.debug({ clientId, tunnelId: end.tunnel_id }, 'agent TunnelEnd with reset: not a vouch, ignored');
      return;
    }
    const t = this.active.get(end.tunnel_id);
    if (!t || t.agents[end.role] !== clientId) {
      this.log.debug({ clientId, tunnelId: end.tunnel_id, role: end.role }, 'TunnelEnd for no tunnel half of this agent (already closed?)');
      return;
    }
    const w = t.waits[end.role];
    if (w) w.finish(true);
    else t.attested[end.role] = true;
  }

  /** Tears down every tunnel of a mapping that stopped existing here (public listener closed). */
  closeMapping(mappingId: number): void {
    for (const p of this.pending.values()) {
      if (p.mappingId === mappingId) this.fail(p, WireErrorCode.TunnelRefused, 'mapping removed');
    }
    for (const t of this.active.values()) {
      if (t.mappingId === mappingId) {
        reset(t.a);
        reset(t.b);
      }
    }
  }

  /**
   * Some clients changed in the view: every tunnel, waiting or running, that one of them takes part
   * in and whose grant no longer holds (a client disabled, deleted, or its epoch moved by a kick or
   * an auth code rotation) is torn down now, with resets. Running tunnels are not bound to the
   * session they were opened in (they survive a reconnect), so ending the session is not enough.
   */
  revokeClients(changed: ReadonlySet<number>): void {
    const revoked = (g: Grant): boolean => (changed.has(g.target) || (g.source !== null && changed.has(g.source))) && !this.holds(g);
    let ended = 0;
    for (const p of this.pending.values()) {
      if (!revoked(p.grant)) continue;
      ended++;
      this.fail(p, WireErrorCode.TunnelRefused, 'client disabled, deleted or revoked');
    }
    for (const [origin, grant] of this.remotePending) {
      if (!revoked(grant)) continue;
      // The bridge stream, when it comes, finds the origin gone and is reset (startRemote).
      ended++;
      reset(origin);
    }
    for (const t of this.active.values()) {
      if (!revoked(t.grant)) continue;
      ended++;
      reset(t.a);
      reset(t.b);
    }
    if (ended > 0) this.log.info({ tunnels: ended, clients: [...changed] }, 'tunnels of a disabled, deleted or revoked client reset');
  }

  /**
   * Resets every tunnel here that `clientId`'s agent is an agent-side end of, waiting or running:
   * the agent went silent past its heartbeat deadline, so its tunnel connections are presumed as
   * dead as its control connection (a stopped process still has a kernel that ACKs, so TCP alone
   * would hold them, and their visitors, for ever). Returns how many tunnels were reset.
   */
  resetAgent(clientId: number): number {
    let ended = 0;
    for (const p of [...this.pending.values()]) {
      if (p.targetClientId !== clientId && !(p.origin.kind === 'client' && p.origin.clientId === clientId)) continue;
      ended++;
      this.fail(p, WireErrorCode.TunnelTargetOffline, 'agent went silent (heartbeat deadline)');
    }
    for (const [origin, grant] of this.remotePending) {
      if (grant.source !== clientId) continue;
      ended++;
      reset(origin);
    }
    for (const t of this.active.values()) {
      if (t.agents.source !== clientId && t.agents.target !== clientId) continue;
      ended++;
      reset(t.a);
      reset(t.b);
    }
    return ended;
  }

  /** Whether the clients a tunnel runs on are still enabled at the epochs it started with. */
  private holds(g: Grant): boolean {
    const granted = (clientId: number, epoch: number): boolean => {
      const c = this.o.findClient(clientId);
      return c !== undefined && c.enabled && c.epoch === epoch;
    };
    return granted(g.target, g.targetEpoch) && (g.source === null || granted(g.source, g.sourceEpoch));
  }

  /** The grant for a tunnel of `mapping` starting now, or undefined when one of its clients is disabled or gone. */
  private grantFor(mapping: MappingRow): Grant | undefined {
    const target = this.o.findClient(mapping.target_client_id);
    const source = mapping.source_client_id === null ? undefined : this.o.findClient(mapping.source_client_id);
    if (!target?.enabled || (mapping.source_client_id !== null && !source?.enabled)) return undefined;
    return { source: mapping.source_client_id, sourceEpoch: source?.epoch ?? 0, target: mapping.target_client_id, targetEpoch: target.epoch };
  }

  stop(): void {
    this.stopping = true;
    for (const p of this.pending.values()) this.fail(p, WireErrorCode.TunnelTargetOffline, 'edge shutting down');
    for (const flow of this.flows.values()) for (const credit of flow.credits.values()) clearTimeout(credit);
    this.flows.clear();
    for (const origin of this.remotePending.keys()) reset(origin);
    for (const t of this.active.values()) {
      reset(t.a);
      reset(t.b);
    }
  }

  /**
   * The live session of this edge the open belongs to, or why it is not allowed. A TunnelOpen is
   * bound to a control session of its client that is open on this edge now: it names the session,
   * and its proof is keyed by that session's tunnel key (and the mapping secret), so neither a
   * mapping secret alone, nor a session that ended (kicked, disabled, deleted, replaced), opens a
   * tunnel. Proof before replay check: junk never fills the guard.
   */
  private authorize(open: TunnelOpen, mapping: MappingRow | undefined): ControlSession | string {
    if (open.protocol_version !== PROTOCOL_VERSION) return `protocol version ${open.protocol_version} not supported`;
    if (!mapping) return 'unknown mapping';
    if (!mapping.enabled) return 'mapping disabled';
    const party = open.role === 'source' ? mapping.source_client_id : mapping.target_client_id;
    if (party !== open.client_id) return `client is not the mapping's ${open.role}`;
    if (open.session_id === undefined) return NOT_BOUND;
    const session = this.o.findSession(open.client_id);
    if (!session || session.closed || session.sessionId !== open.session_id) return 'no live session of this client with that session id on this edge';
    if (!verifySessionProof(session.tunnelKey, this.o.mappingSecret(mapping), { ...open, session_id: open.session_id }, open.proof)) return 'bad proof';
    const replay = this.guard.check(open.ts, open.nonce);
    if (replay === 'stale') return 'timestamp outside the replay window (agent clock?)';
    if (replay === 'replayed') return 'replayed nonce';
    // The session closes in the same tick its client's revocation reaches the view; this is the
    // belt to those braces.
    const client = this.o.findClient(open.client_id);
    if (!client || !client.enabled || client.epoch !== session.epoch) return 'client disabled, deleted or revoked';
    return session;
  }

  private start(tunnelId: string, mapping: MappingRow, origin: Origin, mayBridge = true): void {
    const ctx = { mappingId: mapping.mapping_id, tunnelId };
    if (this.pending.has(tunnelId) || this.active.has(tunnelId)) {
      this.warn('tunnel refused: duplicate tunnel id', ctx);
      this.failOrigin(origin, tunnelId, WireErrorCode.TunnelRefused, 'duplicate tunnel id');
      return;
    }
    const grant = this.grantFor(mapping);
    if (!grant) {
      this.warn('tunnel refused: a client of the mapping is disabled or gone', ctx);
      this.failOrigin(origin, tunnelId, WireErrorCode.TunnelRefused, 'tunnel refused');
      return;
    }
    const slots = this.slots.get(mapping.mapping_id) ?? { connections: 0, pending: 0 };
    const maxConnections = mapping.max_connections ?? this.limits.maxConnectionsPerMapping;
    if (slots.connections >= maxConnections) {
      this.warn('tunnel refused: the mapping has max_connections tunnels on this edge', { ...ctx, maxConnections });
      this.failOrigin(origin, tunnelId, WireErrorCode.TunnelLimit, 'too many connections to this mapping');
      return;
    }
    const session = this.o.findSession(mapping.target_client_id);
    if (!session || session.closed) {
      const remote = mayBridge ? this.o.remote?.open({ tunnelId, mappingId: mapping.mapping_id, targetClientId: mapping.target_client_id }) : null;
      if (remote) {
        this.takeSlot(mapping.mapping_id, slots, false);
        this.startRemote(tunnelId, mapping, grant, origin, remote);
        return;
      }
      this.log.info({ ...ctx, targetClientId: mapping.target_client_id }, 'tunnel failed: target agent not connected to this edge or any other');
      this.failOrigin(origin, tunnelId, WireErrorCode.TunnelTargetOffline, 'target agent is offline');
      return;
    }
    const maxPending = mapping.max_pending_opens ?? this.limits.maxPendingOpensPerMapping;
    if (slots.pending >= maxPending) {
      this.warn('tunnel refused: the mapping has max_pending_opens visitors waiting for its target on this edge', { ...ctx, maxPending });
      this.failOrigin(origin, tunnelId, WireErrorCode.TunnelBusy, 'too many connections waiting for the target');
      return;
    }
    let flow = this.flows.get(session);
    if (!flow) this.flows.set(session, (flow = { credits: new Map(), queue: [], queued: 0 }));
    const mustQueue = flow.credits.size >= this.limits.openWindowPerAgent;
    if (mustQueue && flow.queued >= this.limits.openQueuePerAgent) {
      this.warn('tunnel refused: the target agent\'s queue of tunnel requests is full', { ...ctx, targetClientId: mapping.target_client_id });
      this.failOrigin(origin, tunnelId, WireErrorCode.TunnelBusy, 'too many connections waiting for the target');
      return;
    }
    const p: PendingTunnel = {
      tunnelId,
      mappingId: mapping.mapping_id,
      targetClientId: mapping.target_client_id,
      grant,
      origin,
      session,
      ticket: newTicket(),
      timer: setTimeout(() => this.fail(p, WireErrorCode.TunnelTimeout, `target did not open within ${this.o.openTimeoutMs} ms`), this.o.openTimeoutMs),
      onOriginClose: () => {
        if (this.pending.get(tunnelId) !== p) return;
        this.dropPending(p, true);
        this.settled();
        clearTimeout(p.timer);
        if (origin.kind === 'bridge') origin.settle.reject(new TunnoxError(WireErrorCode.TunnelRefused, 'visitor went away'));
        this.log.debug(ctx, 'origin went away before the target answered');
      },
      idleTimeoutMs: mapping.idle_timeout ? mapping.idle_timeout * 1000 : undefined,
      phase: 'queued',
    };
    p.timer.unref();
    this.takeSlot(mapping.mapping_id, slots, true);
    this.pending.set(tunnelId, p);
    origin.socket.once('close', p.onOriginClose);
    if (!mustQueue) this.sendOpen(p, flow, mapping);
    else {
      flow.queue.push(p);
      flow.queued++;
      // Entries that left while queued are skipped when they come up; compact a queue made mostly of them.
      if (flow.queue.length > 2 * this.limits.openQueuePerAgent + 16) flow.queue = flow.queue.filter((q) => q.phase === 'queued');
    }
  }

  /** Counts a new tunnel of a mapping here (`pending`: it waits for the target's half on this edge). */
  private takeSlot(mappingId: number, slots: MappingSlots, pending: boolean): void {
    slots.connections++;
    if (pending) slots.pending++;
    this.slots.set(mappingId, slots);
  }

  /** A tunnel of a mapping is gone from this edge: its origin is closed or handed to nobody. */
  private freeSlot(mappingId: number): void {
    const s = this.slots.get(mappingId);
    if (!s) return;
    s.connections--;
    if (s.connections <= 0 && s.pending <= 0) this.slots.delete(mappingId);
  }

  /**
   * Removes a pending tunnel (paired, failed or abandoned); `gone`: the tunnel ends here with it
   * (its mapping slot is freed too; a paired one keeps its slot while it runs).
   */
  private dropPending(p: PendingTunnel, gone: boolean): void {
    this.pending.delete(p.tunnelId);
    const s = this.slots.get(p.mappingId);
    if (s) s.pending--;
    if (gone) this.freeSlot(p.mappingId);
    if (p.phase === 'queued') {
      const flow = this.flows.get(p.session);
      if (flow) flow.queued--;
    }
    p.phase = 'done';
  }

  /** Sends a pending tunnel's tunnel.open on a credit of its target session's window. */
  private sendOpen(p: PendingTunnel, flow: OpenFlow, mapping: MappingRow): void {
    const { session, tunnelId } = p;
    p.phase = 'sent';
    const credit = setTimeout(() => this.releaseCredit(session, tunnelId), this.o.openTimeoutMs);
    credit.unref();
    flow.credits.set(tunnelId, credit);
    void session
      .configSettled()
      .then(() => {
        if (this.pending.get(tunnelId) !== p) {
          this.releaseCredit(session, tunnelId); // failed or abandoned meanwhile: nothing was asked
          return undefined;
        }
        const request = { tunnel_id: tunnelId, mapping_id: mapping.mapping_id, target_host: mapping.target_host, target_port: mapping.target_port, ticket: p.ticket };
        return session.command('tunnel.open', request, this.o.openTimeoutMs);
      })
      .then((resp) => {
        if (!resp || resp.ok) return; // ok: the credit comes back with the agent's target half
        this.releaseCredit(session, tunnelId);
        if (this.pending.get(tunnelId) === p) {
          const code = resp.error?.code === WireErrorCode.TunnelTimeout ? WireErrorCode.TunnelTimeout : WireErrorCode.TunnelTargetFailed;
          this.fail(p, code, resp.error?.message ?? 'target agent refused');
        }
      });
  }

  /** A tunnel.open's work at the agent is over: its credit goes to the next queued visitor. */
  private releaseCredit(session: ControlSession, tunnelId: string): void {
    const flow = this.flows.get(session);
    const credit = flow?.credits.get(tunnelId);
    if (!flow || credit === undefined) return;
    clearTimeout(credit);
    flow.credits.delete(tunnelId);
    while (flow.credits.size < this.limits.openWindowPerAgent && flow.queue.length > 0) {
      const next = flow.queue.shift()!;
      if (next.phase !== 'queued' || this.pending.get(next.tunnelId) !== next) continue;
      const mapping = this.o.findMapping(next.mappingId);
      flow.queued--;
      if (!mapping || !mapping.enabled) {
        next.phase = 'done';
        this.fail(next, WireErrorCode.TunnelRefused, 'mapping removed');
        continue;
      }
      this.sendOpen(next, flow, mapping);
    }
  }

  /**
   * A target half: it pairs the pending tunnel of its id only if it comes from the session the
   * tunnel.open went to and carries that request's ticket. The ticket is spent by pairing: a
   * second TunnelOpen with it finds nothing. A wrong ticket leaves the pending tunnel alone, so a
   * guess cannot take the real target half's place or cancel it.
   */
  private pairTarget(target: Conn, targetEarly: Buffer, open: TunnelOpen, session: ControlSession): void {
    const ctx = { mappingId: open.mapping_id, tunnelId: open.tunnel_id, clientId: open.client_id };
    // Whatever becomes of it: the agent's work on this tunnel.open is done.
    this.releaseCredit(session, open.tunnel_id);
    const p = this.pending.get(open.tunnel_id);
    if (!p || p.mappingId !== open.mapping_id || p.targetClientId !== open.client_id) {
      this.warn('tunnel refused: no pending tunnel with this id (expired, already paired or never requested)', ctx);
      this.refuse(target, open.tunnel_id, WireErrorCode.TunnelRefused, 'tunnel refused');
      return;
    }
    if (p.session !== session || open.ticket === undefined || !sameHex(p.ticket, open.ticket)) {
      this.warn('tunnel refused: target half without the ticket its tunnel.open carried, or from another session', ctx);
      this.refuse(target, open.tunnel_id, WireErrorCode.TunnelRefused, 'tunnel refused');
      return;
    }
    const { origin } = p;
    this.dropPending(p, origin.socket.destroyed);
    clearTimeout(p.timer);
    // Not settled() here: below, the tunnel either becomes active in this same tick or is refused.
    origin.socket.off('close', p.onOriginClose);
    if (origin.socket.destroyed) {
      this.log.debug(ctx, 'origin went away before pairing');
      if (origin.kind === 'bridge') origin.settle.reject(new TunnoxError(WireErrorCode.TunnelRefused, 'visitor went away'));
      this.refuse(target, open.tunnel_id, WireErrorCode.TunnelRefused, 'visitor went away');
      this.settled();
      return;
    }
    const ack = encodeMessage(PacketType.TunnelOpenAck, { ok: true, tunnel_id: p.tunnelId });
    target.write(ack);
    if (origin.kind === 'client') {
      origin.socket.write(ack);
      if (origin.early.length > 0) target.write(origin.early);
    }
    if (origin.kind === 'bridge') origin.settle.resolve();
    if (targetEarly.length > 0) origin.socket.write(targetEarly);
    // From here on: nothing but the pump. The early bytes were written before it counts anything.
    const earlyToTarget = origin.kind === 'client' ? origin.early.length : 0;
    const earlyToVisitor = targetEarly.length;
    const source = origin.kind === 'client' ? 'source' : undefined;
    const tunnel: ActiveTunnel = {
      tunnelId: p.tunnelId,
      mappingId: p.mappingId,
      grant: p.grant,
      kind: origin.kind,
      a: origin.socket,
      b: target,
      agents: origin.kind === 'client' ? { source: origin.clientId, target: p.targetClientId } : { target: p.targetClientId },
      ...noEnds(),
      vouchees: this.vouchees(p.session, origin),
    };
    this.active.set(p.tunnelId, tunnel);
    this.o.metrics?.tunnelOpened(tunnel.kind);
    this.log.debug(ctx, 'tunnel open');
    // The continuation names `tunnel`, never `p`: the pending record (its timer, its close
    // handler and the context of start()) must not live as long as the tunnel.
    const idleTimeoutMs = p.idleTimeoutMs;
    void pipeSockets(origin.socket, target, { ...this.endChecks(tunnel, source, 'target', ctx), ...(idleTimeoutMs ? { idleTimeoutMs } : {}) }).then((r) => {
      for (const w of [tunnel.waits.source, tunnel.waits.target]) w?.finish(false);
      this.noticeIfReset(tunnel);
      this.active.delete(tunnel.tunnelId);
      this.freeSlot(tunnel.mappingId);
      if (r.idle) this.log.debug(ctx, 'tunnel reset: idle timeout');
      this.o.metrics?.tunnelClosed(tunnel.kind, r.bytesAtoB + earlyToTarget, r.bytesBtoA + earlyToVisitor);
      this.settled();
      this.log.debug({ ...ctx, bytesIn: r.bytesAtoB, bytesOut: r.bytesBtoA, err: r.error?.message }, 'tunnel closed');
    });
  }

  /** The EdgeEnd sessions of a tunnel's agent-side halves (`target`: the target agent's, when on this edge). */
  private vouchees(target: ControlSession | undefined, origin: Origin): ActiveTunnel['vouchees'] {
    const v: { -readonly [R in AgentRole]?: ControlSession } = {};
    if (target?.vouchesEnds) v.target = target;
    if (origin.kind === 'client') {
      const source = this.o.findSession(origin.clientId);
      if (source && !source.closed && source.vouchesEnds) v.source = source;
    }
    return v;
  }

  /**
   * The pump's checks on each side's FIN: `aAgent`/`bAgent` name the agent-side halves (undefined:
   * a visitor or a bridge stream, whose FIN is clean as it stands). A FIN from an agent waits for
   * that agent's TunnelEnd; a clean FIN towards an EdgeEnd agent is first vouched for to it (edge →
   * agent TunnelEnd), so the agent can tell it from the FIN of this edge's kernel after a kill.
   */
  private endChecks(t: ActiveTunnel, aAgent: AgentRole | undefined, bAgent: AgentRole | undefined, ctx: Record<string, unknown>): PipeOptions {
    const check = (from: AgentRole | undefined, to: AgentRole | undefined): (() => Promise<boolean>) | undefined => {
      const vouchee = to && t.vouchees[to];
      if (!from && !vouchee) return undefined;
      return async () => {
        if (from && !(await this.confirmEnd(t, from, ctx))) return false;
        if (!to || !vouchee) return true;
        if (vouchee.vouchForEnd({ tunnel_id: t.tunnelId, role: to })) return true;
        this.log.info({ ...ctx, role: to }, 'clean end, but the agent\'s control session that must hear of it is gone: resetting the tunnel');
        return false;
      };
    };
    const confirmEndOfA = check(aAgent, bAgent);
    const confirmEndOfB = check(bAgent, aAgent);
    return { ...(confirmEndOfA ? { confirmEndOfA } : {}), ...(confirmEndOfB ? { confirmEndOfB } : {}) };
  }

  /** Resolves true once the agent behind `role` has vouched for its FIN; false if it cannot anymore. */
  private confirmEnd(t: ActiveTunnel, role: AgentRole, ctx: Record<string, unknown>): Promise<boolean> {
    if (t.attested[role]) return Promise.resolve(true);
    const session = this.o.findSession(t.agents[role]!);
    if (!session || session.closed) {
      this.log.info({ ...ctx, role }, 'agent FIN without a control session to vouch for it: resetting the tunnel');
      return Promise.resolve(false);
    }
    const timeoutMs = this.o.endAttestTimeoutMs ?? 5_000;
    return new Promise((resolve) => {
      const finish = (clean: boolean): void => {
        if (t.waits[role] !== wait) return;
        t.waits[role] = undefined;
        clearTimeout(timer);
        if (!clean) this.log.info({ ...ctx, role }, 'agent FIN not vouched for by TunnelEnd: resetting the tunnel');
        resolve(clean);
      };
      const wait: EndWait = { session, finish };
      const timer = setTimeout(() => finish(false), timeoutMs);
      timer.unref();
      t.waits[role] = wait;
    });
  }

  /**
   * A tunnel that did not end cleanly both ways was reset: its agents hear so on their control
   * sessions (AgentFeature.EdgeReset). Their kernel may report the RST as a FIN (when it meets
   * unread bytes), which they would otherwise hold for the TunnelEnd grace period.
   */
  private noticeIfReset(t: ActiveTunnel): void {
    const clean = (s: Duplex): boolean => s.readableEnded && s.writableFinished;
    if (clean(t.a) && clean(t.b)) return;
    for (const role of ['source', 'target'] as const) t.vouchees[role]?.noticeReset({ tunnel_id: t.tunnelId, role });
  }

  private warn(reason: string, fields: Record<string, unknown>): void {
    if (this.o.warnings) this.o.warnings.warn(reason, fields, reason);
    else this.log.warn(fields, reason);
  }

  private fail(p: PendingTunnel, code: WireErrorCode, message: string): void {
    if (this.pending.get(p.tunnelId) !== p) return;
    this.dropPending(p, true);
    this.settled();
    clearTimeout(p.timer);
    p.origin.socket.off('close', p.onOriginClose);
    this.log.info({ mappingId: p.mappingId, tunnelId: p.tunnelId, code }, `tunnel failed: ${message}`);
    this.failOrigin(p.origin, p.tunnelId, code, message);
  }

  private failOrigin(origin: Origin, tunnelId: string, code: WireErrorCode, message: string): void {
    this.o.metrics?.tunnelFailed(code);
    if (origin.kind === 'client') this.refuse(origin.socket, tunnelId, code, message);
    else if (origin.kind === 'bridge') origin.settle.reject(new TunnoxError(code, message));
    else origin.socket.destroy();
  }

  /**
   * The target agent sits on another edge: once the bridge stream to that edge is open (its agent's
   * half paired there), the origin is piped with the stream. The bridge stream's FIN is trusted
   * like a public visitor's: the target's edge only sends it for a FIN its agent vouched for, and
   * any other end arrives as a reset. A client origin's FIN still needs its agent's TunnelEnd.
   */
  private startRemote(tunnelId: string, mapping: MappingRow, grant: Grant, origin: Origin, remote: Promise<Duplex>): void {
    const ctx = { mappingId: mapping.mapping_id, tunnelId, targetClientId: mapping.target_client_id };
    this.remotePending.set(origin.socket, grant);
    remote.then(
      (stream) => {
        this.remotePending.delete(origin.socket);
        if (origin.socket.destroyed || this.stopping) {
          this.freeSlot(mapping.mapping_id);
          reset(stream);
          if (!origin.socket.destroyed) origin.socket.destroy();
          this.settled();
          return;
        }
        if (origin.kind === 'client') {
          origin.socket.write(encodeMessage(PacketType.TunnelOpenAck, { ok: true, tunnel_id: tunnelId }));
          if (origin.early.length > 0) stream.write(origin.early);
        }
        const tunnel: ActiveTunnel = {
          tunnelId,
          mappingId: mapping.mapping_id,
          grant,
          kind: origin.kind,
          a: origin.socket,
          b: stream,
          agents: origin.kind === 'client' ? { source: origin.clientId } : {},
          ...noEnds(),
          vouchees: this.vouchees(undefined, origin),
        };
        this.active.set(tunnelId, tunnel);
        this.o.metrics?.tunnelOpened(tunnel.kind);
        const earlyToTarget = origin.kind === 'client' ? origin.early.length : 0;
        this.log.debug(ctx, 'tunnel open across the bridge');
        const idleTimeoutMs = mapping.idle_timeout ? mapping.idle_timeout * 1000 : undefined;
        const checks = this.endChecks(tunnel, origin.kind === 'client' ? 'source' : undefined, undefined, ctx);
        void pipeSockets(origin.socket, stream, { ...checks, ...(idleTimeoutMs ? { idleTimeoutMs } : {}) }).then((r) => {
          for (const w of [tunnel.waits.source, tunnel.waits.target]) w?.finish(false);
          this.noticeIfReset(tunnel);
          this.active.delete(tunnelId);
          this.freeSlot(tunnel.mappingId);
          this.o.metrics?.tunnelClosed(tunnel.kind, r.bytesAtoB + earlyToTarget, r.bytesBtoA);
          this.settled();
          this.log.debug({ ...ctx, bytesIn: r.bytesAtoB, bytesOut: r.bytesBtoA, err: r.error?.message }, 'bridged tunnel closed');
        });
      },
      (err: unknown) => {
        this.remotePending.delete(origin.socket);
        this.freeSlot(mapping.mapping_id);
        this.settled();
        const code = err instanceof TunnoxError && isWireCode(err.code) ? err.code : WireErrorCode.TunnelTargetFailed;
        this.log.info({ ...ctx, code, err: (err as Error).message }, 'tunnel failed: the target\'s edge did not open it');
        this.failOrigin(origin, tunnelId, code, (err as Error).message);
      },
    );
  }

  private refuse(socket: Conn, tunnelId: string, code: WireErrorCode, message: string): void {
    if (socket.destroyed) return;
    socket.write(encodeMessage(PacketType.TunnelOpenAck, { ok: false, tunnel_id: tunnelId, error: { code, message } }));
    closeAfterFlush(socket);
  }
}

/** A fresh tunnel's end bookkeeping: nobody attested, nothing waiting. */
function noEnds(): Pick<ActiveTunnel, 'attested' | 'waits'> {
  return { attested: { source: false, target: false }, waits: { source: undefined, target: undefined } };
}

/** Why an older agent's TunnelOpen (no session id: the mapping secret alone) is refused. */
const NOT_BOUND = 'TunnelOpen not bound to a session (an agent that predates session-bound tunnels)';
/** Told to the agent, unlike the other reasons: it names nothing an attacker could learn from. */
const NOT_BOUND_ANSWER = 'tunnel refused: this edge takes only session-bound tunnel opens; upgrade the agent';

const WIRE_CODES: ReadonlySet<string> = new Set(Object.values(WireErrorCode));
function isWireCode(code: string): code is WireErrorCode {
  return WIRE_CODES.has(code);
}

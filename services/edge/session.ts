import type { Conn } from '../../shared/transport/conn.js';
import { ControlChannel } from '../../shared/net/control.js';
import type { Logger } from '../../shared/platform/logger.js';
import type { FrameDecoder } from '../../shared/wire/codec.js';
import { AgentFeature, SessionCloseReason, WireErrorCode } from '../../shared/wire/codes.js';
import type { AgentMapping, Command, ConfigSync, CommandResp, ConfigApplied, ConfigDelta, ControlMessage, TunnelEnd } from '../../shared/wire/messages.js';
import { PacketType } from '../../shared/wire/packets.js';
import type { EdgeMetrics } from './metrics.js';

/** A client's config as pushed (config.sync): the view's, with each mapping's derived secret. */
type ClientConfig = ConfigSync;

/** What an agent may send on its control connection once the handshake is done. */
const FROM_AGENT: ReadonlySet<number> = new Set([PacketType.Heartbeat, PacketType.CommandResp, PacketType.TunnelEnd]);

type CommandName = Command['name'];
type CommandPayload<N extends CommandName> = Extract<Command, { name: N }>['payload'];

export interface ControlSessionOptions {
  clientId: number;
  clientType: 'managed' | 'anonymous';
  /** Handshake.features the agent declared (AgentFeature). */
  features?: ReadonlySet<string>;
  /** The client's auth epoch the login was checked against; a different one in the view ends the session. */
  epoch?: number;
  /**
   * Agents that take session tokens get a fresh one (`session.token`) every `everyMs`, so the
   * token they hold when this edge dies is never older than that.
   */
  tokenRefresh?: { everyMs: number; issue: () => string };
  sessionId: string;
  /**
   * This session's tunnel key (HandshakeResp.tunnel_key): every TunnelOpen of the session is MACed
   * with it, so tunnels open only while the session lives. Memory only; never logged.
   */
  tunnelKey: Buffer;
  remoteAddr: string;
  socket: Conn;
  decoder: FrameDecoder;
  /** The client's current config (from the edge view). */
  loadConfig: () => ClientConfig;
  logger: Logger;
  heartbeatIntervalMs: number;
  /** Silence (no byte from the agent) this long closes the session; default 3 intervals. */
  heartbeatTimeoutMs?: number;
  commandTimeoutMs: number;
  /** Called once when the session ends, for whatever reason. */
  onClosed: (session: ControlSession, reason: string) => void;
  /** The agent vouches that its half of a tunnel ended cleanly (see TunnelBroker). */
  onTunnelEnd?: (session: ControlSession, end: TunnelEnd) => void;
  /** Backoff between config pushes that were not acknowledged or left mappings failing. */
  configRetry?: ConfigRetryPolicy;
  /**
   * Called when the agent's outcome for one side of one mapping changes within this session (the
   * first outcome counts as a change). Never once per push or per retry.
   */
  onMappingStatus?: (report: MappingStatusReport) => void;
  /** Config push latency for the process's metrics. */
  metrics?: Pick<EdgeMetrics, 'configPushAnswered'>;
}

function sideKey(m: { role: string; mapping_id: number }): string {
  return `${m.role}:${m.mapping_id}`;
}

function sameMapping(a: AgentMapping, b: AgentMapping): boolean {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]) as Set<keyof AgentMapping>;
  for (const k of keys) if (a[k] !== b[k]) return false;
  return true;
}

/** What turns `base` into `next`: sides added or changed, sides gone. */
export function configDelta(base: ClientConfig, next: ClientConfig): ConfigDelta {
  const before = new Map(base.mappings.map((m) => [sideKey(m), m]));
  const after = new Set(next.mappings.map(sideKey));
  return {
    base_version: base.version,
    version: next.version,
    upsert: next.mappings.filter((m) => {
      const old = before.get(sideKey(m));
      return !old || !sameMapping(old, m);
    }),
    remove: base.mappings.filter((m) => !after.has(sideKey(m))).map((m) => ({ mapping_id: m.mapping_id, role: m.role })),
  };
}

/** Exponential, jittered, bounded: the n-th retry waits a random time in [d/2, d], d = min(maxMs, minMs * 2^n). */
export interface ConfigRetryPolicy {
  minMs: number;
  maxMs: number;
}
export const DEFAULT_CONFIG_RETRY: ConfigRetryPolicy = { minMs: 1_000, maxMs: 60_000 };

export interface MappingStatusReport {
  mapping_id: number;
  role: 'source' | 'target';
  status: 'active' | 'error';
  error?: string;
  /** The config version the agent applied. */
  config_version: number;
}

/**
 * One agent's control connection on this edge: commands with matched responses, config pushes
 * (versioned, never older than what the agent already has, counted as delivered only when the
 * agent acknowledges them, retried with backoff until it does or the session ends), per-mapping
 * outcome reports, and orderly close. Owns its socket through the ControlChannel.
 */
export class ControlSession {
  readonly clientId: number;
  readonly clientType: 'managed' | 'anonymous';
  /** Handshake.features the agent declared: send newer frames only when listed. */
  readonly features: ReadonlySet<string>;
  readonly epoch: number;
  readonly sessionId: string;
  readonly tunnelKey: Buffer;
  readonly remoteAddr: string;
  private readonly log: Logger;
  private readonly channel: ControlChannel;
  private readonly waiting = new Map<string, { resolve: (r: CommandResp) => void; timer: NodeJS.Timeout }>();
  private nextCommandId = 1;
  private configQueue: Promise<void> = Promise.resolve();
  /** Settles when the agent has answered the latest config push (or the push failed). */
  private configAnswered: Promise<unknown> = Promise.resolve();
  /**
   * Config delivery state. `ackedVersion`: the newest version the agent acknowledged (answered
   * with its per-mapping outcomes): the only version counted as delivered. `sentVersion`: the
   * newest version pushed. Invariant while the session lives: a version sent but not acked has a
   * push in flight or a retry scheduled, so a notice for it can be skipped without losing it.
   */
  private ackedVersion = -1;
  private sentVersion = -1;
  private inFlight = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  /** Consecutive pushes that were not acknowledged or left a mapping failing (the backoff exponent). */
  private failedPushes = 0;
  /** The newest config the agent acknowledged: the base of the next delta. */
  private acked: ClientConfig | undefined;
  /** The agent refused a delta (its config was another one): the next push is the full config. */
  private fullNext = false;
  /** Pushes sent in this session, by kind (for the config-push tests and operators' debugging). */
  readonly pushes = { full: 0, delta: 0 };
  /** `role:mapping_id` → last outcome reported for it in this session (`active` or `error:<text>`). */
  private readonly reported = new Map<string, string>();
  private tokenTimer: NodeJS.Timeout | undefined;
  private isDraining = false;

  constructor(private readonly o: ControlSessionOptions) {
    this.clientId = o.clientId;
    this.clientType = o.clientType;
    this.features = o.features ?? new Set();
    this.epoch = o.epoch ?? 0;
    this.sessionId = o.sessionId;
    this.tunnelKey = o.tunnelKey;
    this.remoteAddr = o.remoteAddr;
    this.log = o.logger.child({ clientId: o.clientId, sessionId: o.sessionId });
    this.channel = new ControlChannel({
      socket: o.socket,
      decoder: o.decoder,
      accept: FROM_AGENT,
      heartbeatIntervalMs: o.heartbeatIntervalMs,
      ...(o.heartbeatTimeoutMs !== undefined ? { silenceTimeoutMs: o.heartbeatTimeoutMs } : {}),
      onMessage: (msg) => this.onMessage(msg),
      onClose: (reason) => this.onChannelClosed(reason),
    });
  }

  get closed(): boolean {
    return this.channel.closed;
  }

  /** The session ended because the agent missed the heartbeat deadline. */
  get timedOut(): boolean {
    return this.channel.timedOut;
  }

  /** The edge is draining and this session only lives on for the agent's running tunnels. */
  get draining(): boolean {
    return this.isDraining;
  }

  /**
   * The edge is draining: no more config pushes or token refreshes (the agent's next session,
   * elsewhere, gets both), and, with `tellAgent`, session.close `drain` now, without closing: the
   * agent logs in elsewhere and uses this connection only to vouch (TunnelEnd) for its tunnels
   * still running here. Heartbeats go on, so a dead agent is still noticed. The edge closes the
   * session later.
   */
  beginDrain(tellAgent: boolean): void {
    if (this.closed || this.draining) return;
    this.isDraining = true;
    if (this.retryTimer) {
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
    }
    clearInterval(this.tokenTimer);
    if (tellAgent) this.sendClose(SessionCloseReason.Drain);
  }

  start(): void {
    this.channel.start();
    const refresh = this.o.tokenRefresh;
    if (refresh) {
      this.tokenTimer = setInterval(() => {
        void this.command('session.token', { token: refresh.issue() }).then((resp) => {
          if (!resp.ok && !this.closed) this.log.debug({ code: resp.error?.code }, 'session token refresh not acknowledged');
        });
      }, refresh.everyMs);
      this.tokenTimer.unref();
    }
  }

  /**
   * Sends a command and resolves with the agent's answer. Never rejects: a timeout or a closed
   * session resolves as a failed response, so callers handle one outcome shape.
   */
  command<N extends CommandName>(name: N, payload: CommandPayload<N>, timeoutMs = this.o.commandTimeoutMs): Promise<CommandResp> {
    const id = `c${this.nextCommandId++}`;
    return new Promise((resolve) => {
      if (this.closed) {
        resolve({ id, ok: false, error: { code: WireErrorCode.TunnelTargetOffline, message: 'session closed' } });
        return;
      }
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        resolve({ id, ok: false, error: { code: WireErrorCode.TunnelTimeout, message: `no answer to ${name} within ${timeoutMs} ms` } });
      }, timeoutMs);
      timer.unref();
      this.waiting.set(id, { resolve, timer });
      this.channel.send(PacketType.Command, { id, name, payload } as Command);
    });
  }

  /**
   * Queues a config push for `minVersion` (a change notice or the periodic reconcile; omitted =
   * push whatever is current). Pushes run one at a time and never wait for each other's answers
   * (the agent applies them in order). A push is skipped when the agent already acknowledged
   * `minVersion`, or when a push for it is in flight or scheduled for retry: duplicate or late
   * notices cost a comparison. A newer version supersedes a scheduled retry and goes out at once.
   */
  syncConfig(minVersion?: number): Promise<void> {
    return this.enqueuePush(minVersion, false);
  }

  private enqueuePush(minVersion: number | undefined, retry: boolean): Promise<void> {
    this.configQueue = this.configQueue.then(async () => {
      if (this.closed || this.draining) return;
      if (!retry && minVersion !== undefined && this.covered(minVersion)) return;
      try {
        const config = this.o.loadConfig();
        if (this.closed) return;
        // A retry re-pushes even an acknowledged version: the agent starts the mappings that
        // failed last time (a port may have come free) and leaves running ones alone.
        if (!retry && this.covered(config.version)) return;
        this.push(config, retry);
      } catch (err) {
        this.log.error({ err }, 'could not load the client config; retrying');
        this.scheduleRetry();
      }
    });
    return this.configQueue;
  }

  /** Whether `version` needs no new push: acknowledged, or pending with a push in flight or a retry due. */
  private covered(version: number): boolean {
    if (version <= this.ackedVersion) return true;
    return version <= this.sentVersion && (this.inFlight > 0 || this.retryTimer !== undefined);
  }

  /**
   * A delta when the agent understands them and the last acknowledged config is known to be what
   * it holds (nothing else in flight), and the delta is smaller than the config; the full config
   * otherwise, on retries, and after a refused delta.
   */
  private deltaFor(config: ClientConfig, retry: boolean): ConfigDelta | undefined {
    const base = this.acked;
    if (retry || this.fullNext || this.inFlight > 0 || !base || base.version >= config.version) return undefined;
    if (!this.features.has(AgentFeature.ConfigDelta)) return undefined;
    const delta = configDelta(base, config);
    return delta.upsert.length + delta.remove.length < config.mappings.length ? delta : undefined;
  }

  private push(config: ClientConfig, retry: boolean): void {
    if (this.retryTimer) {
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
    }
    const delta = this.deltaFor(config, retry);
    this.sentVersion = Math.max(this.sentVersion, config.version);
    this.inFlight++;
    this.pushes[delta ? 'delta' : 'full']++;
    const started = Date.now();
    this.configAnswered = (delta ? this.command('config.delta', delta) : this.command('config.sync', config)).then((resp) => {
      this.inFlight--;
      if (this.closed) return;
      this.o.metrics?.configPushAnswered(delta ? 'delta' : 'full', resp.applied ? 'applied' : 'not_applied', (Date.now() - started) / 1000);
      const latest = config.version >= this.sentVersion;
      if (!resp.applied && delta && resp.error?.code === WireErrorCode.AgentConfigBase) {
        // The agent holds another config than we thought: send the whole one now (not a backoff:
        // nothing failed on the agent's side).
        this.log.info({ version: config.version, base: delta.base_version }, 'agent refused a config delta; pushing the full config');
        this.fullNext = true;
        if (latest) void this.enqueuePush(undefined, true);
        return;
      }
      if (!resp.applied) {
        // Not delivered: timed out, refused, or the agent could not apply it (or is too old to
        // report outcomes). Push again unless a newer push is already on its way.
        this.log.warn({ version: config.version, error: resp.error, latest }, 'config push not acknowledged');
        if (latest) this.scheduleRetry();
        return;
      }
      this.ackedVersion = Math.max(this.ackedVersion, config.version);
      if (config.version >= (this.acked?.version ?? -1)) this.acked = config;
      if (!delta) this.fullNext = false;
      const failed = this.recordOutcomes(config, resp.applied);
      this.log.debug({ version: config.version, mappings: config.mappings.length, failed, ms: Date.now() - started }, 'config acknowledged');
      if (!latest) return;
      if (failed > 0) this.scheduleRetry();
      else this.failedPushes = 0;
    }).catch((err: unknown) => this.log.error({ err }, 'could not handle the answer to a config push'));
  }

  /**
   * Reports each mapping side whose outcome changed, and returns how many failed. Only sides that
   * were in the pushed config count: an agent cannot speak for mappings it was not given.
   */
  private recordOutcomes(config: ClientConfig, applied: ConfigApplied): number {
    const pushed = new Set(config.mappings.map((m) => `${m.role}:${m.mapping_id}`));
    let failed = 0;
    for (const key of [...this.reported.keys()]) if (!pushed.has(key)) this.reported.delete(key);
    for (const o of applied.mappings) {
      const key = `${o.role}:${o.mapping_id}`;
      if (!pushed.has(key)) continue;
      if (!o.ok) failed++;
      const outcome = o.ok ? 'active' : `error:${o.error ?? ''}`;
      if (this.reported.get(key) === outcome) continue;
      this.reported.set(key, outcome);
      this.o.onMappingStatus?.({
        mapping_id: o.mapping_id,
        role: o.role,
        status: o.ok ? 'active' : 'error',
        ...(o.ok ? {} : { error: o.error ?? '' }),
        config_version: config.version,
      });
    }
    return failed;
  }

  /** At most one retry is ever scheduled; it ends with the session. */
  private scheduleRetry(): void {
    if (this.closed || this.retryTimer) return;
    const policy = this.o.configRetry ?? DEFAULT_CONFIG_RETRY;
    const d = Math.min(policy.maxMs, policy.minMs * 2 ** Math.min(this.failedPushes, 20));
    this.failedPushes++;
    const delay = Math.round(d / 2 + Math.random() * (d / 2));
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      void this.enqueuePush(undefined, true);
    }, delay);
    this.retryTimer.unref();
  }

  /**
   * Resolves once every config push queued so far has been answered by the agent. A new mapping
   * reaches the edge's listeners (public port, source agent) and the target agent in parallel; a
   * tunnel request must not overtake the config that tells the target about the mapping.
   */
  async configSettled(): Promise<void> {
    await this.configQueue;
    await this.configAnswered;
  }

  /** Whether the agent honours edge → agent TunnelEnd (AgentFeature.EdgeEnd). */
  get vouchesEnds(): boolean {
    return this.features.has(AgentFeature.EdgeEnd);
  }

  /**
   * Edge → agent TunnelEnd: the far end of the agent's half in `end.role` ended cleanly; the FIN
   * on its tunnel connection must follow, never precede, this call. Returns false when not sent:
   * the session is closed, or the agent never declared AgentFeature.EdgeEnd (an older agent,
   * whose strict schemas would refuse the frame).
   */
  vouchForEnd(end: TunnelEnd): boolean {
    if (!this.vouchesEnds) return false;
    return this.channel.send(PacketType.TunnelEnd, end);
  }

  /**
   * Edge → agent TunnelEnd {reset: true}: the agent's half in `end.role` was reset here. Only to
   * agents that declared AgentFeature.EdgeReset (and EdgeEnd, which makes them take TunnelEnd).
   */
  noticeReset(end: Omit<TunnelEnd, 'reset'>): void {
    if (!this.vouchesEnds || !this.features.has(AgentFeature.EdgeReset)) return;
    this.channel.send(PacketType.TunnelEnd, { ...end, reset: true });
  }

  /** Tells the agent why (when `notify` is given), flushes, and closes. Idempotent. */
  close(reason: string, notify?: SessionCloseReason): void {
    if (this.closed) return;
    if (notify) this.sendClose(notify);
    this.channel.close(reason);
  }

  private sendClose(reason: SessionCloseReason): void {
    this.channel.send(PacketType.Command, { id: `c${this.nextCommandId++}`, name: 'session.close', payload: { reason } });
  }

  private onMessage(msg: ControlMessage): void {
    if (msg.type === PacketType.TunnelEnd) this.o.onTunnelEnd?.(this, msg.body);
    if (msg.type !== PacketType.CommandResp) return;
    const w = this.waiting.get(msg.body.id);
    if (!w) return; // late answer to a command that already timed out
    this.waiting.delete(msg.body.id);
    clearTimeout(w.timer);
    w.resolve(msg.body);
  }

  private onChannelClosed(reason: string): void {
    clearInterval(this.tokenTimer);
    if (this.retryTimer) {
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
    }
    for (const [id, w] of this.waiting) {
      clearTimeout(w.timer);
      w.resolve({ id, ok: false, error: { code: WireErrorCode.TunnelTargetOffline, message: 'session closed' } });
    }
    this.waiting.clear();
    this.o.onClosed(this, reason);
  }
}

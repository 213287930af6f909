import { ControlChannel } from '../../shared/net/control.js';
import { readFirstFrame } from '../../shared/net/frames.js';
import { TunnoxError, errorMessage } from '../../shared/platform/errors.js';
import type { Logger } from '../../shared/platform/logger.js';
import type { Conn } from '../../shared/transport/conn.js';
import { EdgeDialer, type PendingDial } from '../../shared/transport/dial.js';
import type { ProxySettings } from '../../shared/transport/proxy.js';
import { KnownEdges, TrustError } from '../../shared/transport/trust.js';
import { FrameDecoder } from '../../shared/wire/codec.js';
import { AgentFeature, SessionCloseReason, WireErrorCode } from '../../shared/wire/codes.js';
import { decodeMessage, encodeMessage, type AgentMapping, type Command, type ConfigDelta, type ControlMessage } from '../../shared/wire/messages.js';
import { PROTOCOL_VERSION, PacketType, packetTypeName } from '../../shared/wire/packets.js';
import { loadCredentials, saveCredentials } from './credentials.js';
import { EdgeEnds } from './ends.js';
import { AgentFatalError } from './errors.js';
import { MappingRuntime, type TunnelContext } from './mappings.js';
import { parseServerList, sameCluster, type EdgeAddress, type ServerList } from './servers.js';

export { AgentFatalError } from './errors.js';
export type { AgentMapping } from '../../shared/wire/messages.js';

/** Reported to the edge in the handshake. */
export const AGENT_VERSION = '0.1.0';
/** What this agent understands beyond protocol version 1 (Handshake.features). */
export const AGENT_FEATURES: readonly string[] = [
  AgentFeature.ConfigDelta,
  AgentFeature.SessionToken,
  AgentFeature.EdgeEnd,
  AgentFeature.Drain,
  AgentFeature.TunnelKey,
  AgentFeature.EdgeReset,
  AgentFeature.HeartbeatTimeout,
];

export interface AgentOptions {
  /**
   * Edge control address(es), [scheme://]host[:port]: one, a comma-separated list, or an array.
   * HOST:PORT alone is TLS; tcp:// is plain TCP (the edge must allow plaintext), ws:// and wss://
   * WebSocket (path /tunnox unless given). With several,
   * the agent tries them in turn and moves to the next one when its edge goes away, refuses it, or
   * drains; backoff applies only once a whole round of the list has failed.
   */
  server: string | readonly string[];
  /** Where the first round starts: a random edge of the list (default: agents spread out), or the first. */
  serverStart?: 'random' | 'first';
  clientId?: number;
  authCode?: string;
  /** Where anonymous credentials are saved (0600) and loaded from when no clientId is given. */
  credentialsPath?: string;
  logger: Logger;
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
  /** Heartbeat period; never slower than the edge's. Default: the edge's. */
  heartbeatIntervalMs?: number;
  /**
   * How long the edge may be silent (no byte at all) before the agent gives the connection up and
   * reconnects. Default: the deadline the edge announces (HandshakeResp.heartbeat_timeout_ms), or
   * 3 of its heartbeat intervals from an edge that announces none.
   */
  heartbeatTimeoutMs?: number;
  /** Time for the handshake and for a tunnel open to be acked; default 10 s. */
  handshakeTimeoutMs?: number;
  /** How long an edge's FIN on a tunnel connection waits for the edge's TunnelEnd before it is a reset; default 5 s. */
  edgeEndGraceMs?: number;
  /**
   * How TLS (and wss) edges are trusted: a pinned `fingerprint` (sha256:…), else `ca` (PEM
   * certificates), else the system CAs and, with `knownEdgesPath`, trust on first use recorded
   * there (a changed certificate is then refused). Without any of them only a certificate the
   * system CAs vouch for is accepted.
   */
  tls?: { fingerprint?: string | undefined; ca?: string | undefined; knownEdgesPath?: string | undefined };
  /** HTTP CONNECT proxy for the edge connections (--proxy, or HTTPS_PROXY/HTTP_PROXY/NO_PROXY). */
  proxy?: ProxySettings;
  onReady?: (info: { clientId: number; clientType: 'managed' | 'anonymous'; nodeId: string }) => void;
  /** Called with each applied config before it is acknowledged; a throw leaves it unacknowledged (the edge pushes again). */
  onConfig?: (mappings: AgentMapping[], version: number) => void;
  /** The agent gave up for good (bad credentials, replaced by another login, ...); it is stopped. */
  onFatal?: (err: AgentFatalError) => void;
}

export interface AgentStatus {
  connected: boolean;
  /** The edge address (host:port) of the current session. */
  server: string | undefined;
  clientId: number | undefined;
  nodeId: string | undefined;
  configVersion: number | undefined;
  /** mapping id → bound local port, for the source-side mappings this agent listens for. */
  listening: Record<string, number>;
}

export interface RunningAgent {
  stop(): Promise<void>;
  readonly clientId: number | undefined;
  listeningPorts(): Map<number, number>;
  status(): AgentStatus;
}

const FROM_EDGE: ReadonlySet<number> = new Set([PacketType.Heartbeat, PacketType.Command]);
/** With AgentFeature.EdgeEnd negotiated, the edge also vouches for its FINs (TunnelEnd). */
const FROM_EDGE_WITH_ENDS: ReadonlySet<number> = new Set([...FROM_EDGE, PacketType.TunnelEnd]);

interface Identity {
  clientId: number;
  authCode: string;
}

/** How a control session ended: it decides where the agent connects next, and whether it waits first. */
type SessionEnd = 'failed' | 'ended' | 'drained' | 'token-refused';

/**
 * A control connection past its handshake, and what tunnels through its edge need. When its edge
 * drains, the link retires: the agent logs in elsewhere and keeps this connection only to vouch
 * (TunnelEnd) for its tunnels still running through that edge and to answer tunnel requests sent
 * before the drain, until the edge closes it (once none of those tunnels is left).
 */
interface Link {
  readonly edge: EdgeAddress;
  readonly nodeId: string;
  readonly channel: ControlChannel;
  readonly context: TunnelContext;
  retiring: boolean;
}

/**
 * Starts the agent: connects to an edge of its list, authenticates (or registers anonymously and
 * saves the issued credentials), applies pushed config, and reconnects: to the next edge of the
 * list at once, with exponential backoff and jitter once a whole round has failed. Mappings and
 * running tunnels keep going across reconnects; mappings are resynced from the full config each
 * time. Throws at once on a malformed server list.
 */
export function startAgent(opts: AgentOptions): RunningAgent {
  const agent = new Agent(opts);
  const done = agent.run();
  return {
    get clientId() {
      return agent.clientId;
    },
    listeningPorts: () => agent.runtime.listeningPorts(),
    status: () => ({
      connected: agent.connectedTo !== undefined,
      server: agent.connectedTo === undefined ? undefined : agent.link?.edge.address,
      clientId: agent.clientId,
      nodeId: agent.connectedTo,
      configVersion: agent.configVersion,
      listening: Object.fromEntries(agent.runtime.listeningPorts()),
    }),
    async stop() {
      agent.stop();
      await done;
    },
  };
}

class Agent {
  clientId: number | undefined;
  /** Node id of the edge while a session is up. */
  connectedTo: string | undefined;
  configVersion: number | undefined;
  /** The live session (undefined between sessions). */
  link: Link | undefined;
  readonly runtime: MappingRuntime;
  private readonly log: Logger;
  private readonly servers: ServerList;
  /** Links to drained edges, kept while tunnels through them run (see Link). */
  private readonly retired = new Set<Link>();
  private identity: Identity | undefined;
  /**
   * The session token from the last login (or refresh): presented instead of the auth code on the
   * next login, at any edge of the cluster. A credential: memory only, never saved, never logged.
   */
  private sessionToken: string | undefined;
  private stopped = false;
  private socket: Conn | undefined;
  private pendingDial: PendingDial | undefined;
  private readonly dialer: EdgeDialer;
  private wake: (() => void) | undefined;
  private configQueue: Promise<void> = Promise.resolve();
  /** The mappings of the config last applied (`configVersion`): what a config.delta applies to. */
  private appliedMappings: AgentMapping[] | undefined;

  constructor(private readonly o: AgentOptions) {
    this.servers = parseServerList(o.server);
    this.log = o.logger.child({ server: this.servers.text });
    const tls = o.tls ?? {};
    this.dialer = new EdgeDialer({
      trust: {
        fingerprint: tls.fingerprint,
        ca: tls.ca,
        knownEdges: tls.knownEdgesPath !== undefined ? new KnownEdges(tls.knownEdgesPath) : undefined,
      },
      proxy: o.proxy,
      onTrusted: (address, verdict, fingerprint) => {
        if (verdict === 'first-use') this.log.warn({ edge: address, fingerprint, knownEdges: tls.knownEdgesPath }, 'trusting the edge certificate on first use: recorded, a different one will be refused');
        else this.log.info({ edge: address, fingerprint, via: verdict }, 'edge certificate verified');
      },
    });
    for (const e of this.servers.edges) {
      if (e.scheme === 'tcp' || e.scheme === 'ws') {
        this.log.warn({ edge: e.text }, 'plaintext connection to the edge: auth codes and tunnel traffic cross the network unencrypted; use HOST:PORT (TLS) or wss://');
      }
    }
    // A local visitor's tunnel goes through the edge of the live session.
    this.runtime = new MappingRuntime(this.log, () => this.link?.context);
    if (o.clientId !== undefined && o.authCode !== undefined) this.identity = { clientId: o.clientId, authCode: o.authCode };
    this.clientId = o.clientId;
  }

  async run(): Promise<void> {
    try {
      if ((this.o.clientId === undefined) !== (this.o.authCode === undefined)) {
        throw new AgentFatalError('TNX_AGENT_CREDENTIALS_INVALID', 'clientId and authCode go together (omit both for saved or anonymous credentials)');
      }
      if (!this.identity && this.o.credentialsPath) await this.useSavedCredentials(this.o.credentialsPath);
      const edges = this.servers.edges;
      let next = this.o.serverStart === 'first' ? 0 : Math.floor(Math.random() * edges.length);
      /** Attempts in a row that did not end in a drain, counting the edge that was just lost. */
      let failed = 0;
      while (!this.stopped) {
        const end = await this.session(edges[next]!);
        if (this.stopped) break;
        // The token was refused: log in with the auth code at once, to the same edge, not after a
        // backoff. Happens at most once in a row (the token is gone until the next login issues one).
        if (end === 'token-refused') continue;
        next = (next + 1) % edges.length;
        if (end === 'drained') {
          // Asked to move: the next edge now, never the draining one again first.
          failed = 0;
          this.log.info({ next: edges[next]!.address }, 'edge draining: connecting to the next edge now');
          continue;
        }
        // An edge that just went away counts as the first failure of a new round.
        failed = end === 'ended' ? 1 : failed + 1;
        if (failed % edges.length !== 0) continue;
        const delay = this.backoff(failed / edges.length - 1);
        this.log.info({ delayMs: delay }, 'reconnecting');
        await this.sleep(delay);
      }
    } catch (err) {
      const fatal = err instanceof AgentFatalError ? err : new AgentFatalError('TNX_AGENT_FAILED', errorMessage(err), { cause: err });
      this.log.error({ code: fatal.code }, fatal.message);
      this.stopped = true;
      this.closeLinks();
      this.o.onFatal?.(fatal);
    } finally {
      this.runtime.stop();
    }
  }

  stop(): void {
    this.stopped = true;
    this.closeLinks();
    this.pendingDial?.abort();
    this.socket?.destroy();
    this.wake?.();
  }

  private closeLinks(): void {
    this.link?.channel.close('agent stopping');
    for (const l of [...this.retired]) l.channel.close('agent stopping');
  }

  /**
   * Saved anonymous credentials are presented only to the cluster that issued them: the saved
   * `server` (one address, or the list as given) must share an edge with the list given now. The
   * file then records the list given now, so it follows a cluster whose edges change over time.
   */
  private async useSavedCredentials(path: string): Promise<void> {
    const saved = await loadCredentials(path);
    if (!saved) return;
    if (!sameCluster(saved.server, this.servers)) {
      throw new AgentFatalError(
        'TNX_AGENT_CREDENTIALS_MISMATCH',
        `credentials in ${path} were issued by ${saved.server}, which shares no edge with ${this.servers.text}; ` +
          'use --server ' + saved.server + ', or point --credentials at another file to register a new anonymous client',
      );
    }
    this.identity = { clientId: saved.client_id, authCode: saved.auth_code };
    this.clientId = saved.client_id;
    this.log.info({ clientId: saved.client_id, path }, 'using saved credentials');
    if (saved.server === this.servers.text) return;
    try {
      await saveCredentials(path, { ...saved, server: this.servers.text });
    } catch (err) {
      this.log.warn({ path, err: errorMessage(err) }, 'could not record the new server list in the credentials file; it still names the old one');
    }
  }

  /** Delay after the n-th failed round: ~min, doubling up to max; drawn from [d/2, d] so agents spread out. */
  private backoff(attempt: number): number {
    const min = this.o.reconnectMinMs ?? 1_000;
    const max = this.o.reconnectMaxMs ?? 30_000;
    const d = Math.min(max, min * 2 ** Math.min(attempt, 20));
    return Math.round(d / 2 + Math.random() * (d / 2));
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }

  /**
   * One control connection to `edge`, from dial to close (or to its edge's drain notice), or to a
   * refused session token (log in again at once with the auth code).
   * Throws AgentFatalError for what reconnecting cannot fix.
   */
  private async session(edge: EdgeAddress): Promise<SessionEnd> {
    const timeoutMs = this.o.handshakeTimeoutMs ?? 10_000;
    const dial = this.dialer.dial(edge, timeoutMs);
    this.pendingDial = dial;
    let socket: Conn;
    try {
      socket = await dial.conn;
    } catch (err) {
      // A certificate that is not the trusted one: retrying would not change it.
      if (err instanceof TrustError) throw new AgentFatalError(err.code, err.message, { cause: err });
      // A ws:// upgrade refused because the edge takes TLS only: as fatal as the TCP refusal below.
      if ((err as { code?: string }).code === WireErrorCode.PlaintextRefused) throw new AgentFatalError(WireErrorCode.PlaintextRefused, errorMessage(err), { cause: err });
      if (!this.stopped) this.log.warn({ edge: edge.text, err: errorMessage(err) }, 'cannot reach the edge');
      return 'failed';
    } finally {
      this.pendingDial = undefined;
    }
    this.socket = socket;
    if (this.stopped) {
      socket.destroy();
      return 'ended';
    }
    let socketError: Error | undefined;
    socket.on('error', (err) => {
      socketError ??= err;
    });
    const sentAt = Date.now();
    const token = this.identity ? this.sessionToken : undefined;
    const credentials = this.identity
      ? token
        ? { client_id: this.identity.clientId, session_token: token }
        : { client_id: this.identity.clientId, auth_code: this.identity.authCode }
      : {};
    socket.write(
      encodeMessage(PacketType.Handshake, {
        protocol_version: PROTOCOL_VERSION,
        client_version: AGENT_VERSION,
        features: [...AGENT_FEATURES],
        ...credentials,
      }),
    );
    const decoder = new FrameDecoder();
    let msg: ControlMessage;
    try {
      const frame = await readFirstFrame(socket, decoder, timeoutMs);
      if (frame.type !== PacketType.HandshakeResp) throw new TunnoxError('TNX_AGENT_PROTOCOL', `edge answered with ${packetTypeName(frame.type)}`);
      msg = decodeMessage(frame);
    } catch (err) {
      socket.destroy();
      // An edge that closes on a token handshake without answering may predate session tokens
      // (its strict schema refuses the field): the next attempt uses the auth code.
      if (token && (err as { code?: string }).code === 'TNX_WIRE_CLOSED') this.sessionToken = undefined;
      if (!this.stopped) this.log.warn({ edge: edge.address, err: errorMessage(socketError ?? err) }, 'cannot reach the edge');
      return 'failed';
    }
    if (msg.type !== PacketType.HandshakeResp) return 'failed';
    const resp = msg.body;
    if (!resp.ok) {
      socket.destroy();
      if (resp.error.code === WireErrorCode.SessionTokenRejected && token) {
        this.sessionToken = undefined;
        this.log.info('the edge refused the session token; logging in with the auth code');
        return 'token-refused';
      }
      if (resp.error.code === WireErrorCode.AuthFailed) {
        const where = this.o.credentialsPath && this.o.clientId === undefined ? ` (credentials from ${this.o.credentialsPath})` : '';
        throw new AgentFatalError(
          WireErrorCode.AuthFailed,
          `the edge refused client ${this.identity?.clientId ?? '?'}${where}: unknown client id or wrong auth code`,
        );
      }
      if (resp.error.code === WireErrorCode.PlaintextRefused) {
        throw new AgentFatalError(resp.error.code, `the edge ${edge.address} refused plaintext: ${resp.error.message}`);
      }
      if (resp.error.code === WireErrorCode.ProtocolVersion || resp.error.code === WireErrorCode.AnonymousDisabled) {
        throw new AgentFatalError(resp.error.code, resp.error.message);
      }
      this.log.warn({ edge: edge.address, code: resp.error.code }, `handshake refused: ${resp.error.message}`);
      return 'failed';
    }
    const receivedAt = Date.now();
    // Rotation: each login's token replaces the last; an edge that issues none leaves none.
    this.sessionToken = resp.session_token;
    if (this.stopped) {
      socket.destroy();
      return 'ended';
    }
    if (resp.auth_code !== undefined) await this.adoptIssuedIdentity(resp.client_id, resp.auth_code);
    this.clientId = resp.client_id;
    // Assume the edge stamped its clock half-way through the round trip.
    const clockOffsetMs = resp.server_time_ms - (sentAt + receivedAt) / 2;
    const log = this.log.child({ clientId: resp.client_id, nodeId: resp.node_id, edge: edge.address });
    // Only an edge that confirmed the feature vouches for its FINs; with an older one a FIN stays a FIN.
    const ends = resp.features?.includes(AgentFeature.EdgeEnd) ? new EdgeEnds(log, this.o.edgeEndGraceMs) : undefined;
    log.info({ clientType: resp.client_type, sessionId: resp.session_id }, 'connected to the edge');

    let fatal: AgentFatalError | undefined;
    const end = await new Promise<SessionEnd>((resolve) => {
      // Tunnels through this edge dial this edge and vouch on this connection (see Link).
      const context: TunnelContext = {
        edge,
        dialer: this.dialer,
        clientId: resp.client_id,
        // Tunnels through this edge are bound to this session (an older edge issues no key).
        ...(resp.tunnel_key ? { session: { id: resp.session_id, tunnelKey: resp.tunnel_key } } : {}),
        clockOffsetMs,
        timeoutMs,
        attestEnd: (tunnelId, role) => this.attestEnd(link, tunnelId, role),
        ...(ends ? { ends } : {}),
      };
      const channel = new ControlChannel({
        socket,
        decoder,
        accept: ends ? FROM_EDGE_WITH_ENDS : FROM_EDGE,
        heartbeatIntervalMs: Math.min(this.o.heartbeatIntervalMs ?? resp.heartbeat_interval_ms, resp.heartbeat_interval_ms),
        // The edge's deadline when it announces one (AgentFeature.HeartbeatTimeout), else 3 of its
        // intervals: an edge silent that long (stopped, hung, or a middlebox that dropped the
        // connection without a word) is dead to us, and the agent reconnects.
        silenceTimeoutMs: this.o.heartbeatTimeoutMs ?? resp.heartbeat_timeout_ms ?? resp.heartbeat_interval_ms * 3,
        onMessage: (m) => {
          if (m.type === PacketType.TunnelEnd) {
            if (m.body.reset) ends?.abort(m.body);
            else ends?.attest(m.body);
          }
          if (m.type !== PacketType.Command) return;
          if (m.body.name !== 'session.close') {
            this.onCommand(link, m.body, log);
            return;
          }
          // A retired link is closed by its edge once our tunnels there have ended.
          if (link.retiring) return;
          log.info({ reason: m.body.payload.reason }, 'edge closed the session');
          if (m.body.payload.reason === SessionCloseReason.Replaced) {
            fatal = new AgentFatalError('TNX_AGENT_REPLACED', `another agent logged in as client ${resp.client_id}; this one stops`);
          } else if (m.body.payload.reason === SessionCloseReason.Drain) {
            this.retire(link);
            resolve('drained');
          }
        },
        onClose: (reason) => {
          if (link.retiring) {
            this.retired.delete(link);
            ends?.lose();
            log.info({ reason }, 'connection to the drained edge closed');
            return;
          }
          if (!this.stopped) log.warn({ reason }, 'control connection closed');
          // At once, not after the reconnect: the tunnels of a killed edge must not wait for it.
          ends?.lose();
          resolve('ended');
        },
      });
      const link: Link = { edge, nodeId: resp.node_id, channel, context, retiring: false };
      this.link = link;
      this.connectedTo = resp.node_id;
      channel.start();
      this.o.onReady?.({ clientId: resp.client_id, clientType: resp.client_type, nodeId: resp.node_id });
    });
    this.link = undefined;
    this.connectedTo = undefined;
    if (fatal) throw fatal;
    return end;
  }

  /** The edge drains: this link stops being the live session, but stays open (see Link). */
  private retire(link: Link): void {
    link.retiring = true;
    this.retired.add(link);
    if (this.link === link) {
      this.link = undefined;
      this.connectedTo = undefined;
    }
  }

  /**
   * TunnelEnd for a tunnel through `link`'s edge, on `link`'s connection; if that one is gone, on
   * the live session when it is on the same edge (a reconnect: the edge checks the client, not the
   * session). Otherwise no edge can use it: that edge will reset the tunnel, which is the truth.
   */
  private attestEnd(link: Link, tunnelId: string, role: AgentMapping['role']): void {
    const end = { tunnel_id: tunnelId, role };
    if (link.channel.send(PacketType.TunnelEnd, end)) return;
    const live = this.link;
    if (live && live.nodeId === link.nodeId) live.channel.send(PacketType.TunnelEnd, end);
  }

  private onCommand(link: Link, cmd: Command, log: Logger): void {
    const { channel } = link;
    if (cmd.name === 'config.sync' || cmd.name === 'config.delta') {
      // The next session (on another edge) gets the config; a draining edge pushes none.
      if (link.retiring) return;
      // Configs apply one at a time, in the order they were pushed. Each step settles on its own:
      // a failed apply answers that push with an error (the edge pushes again) and the queue goes
      // on with the next config; it never stays rejected and never rejects unhandled.
      const { version } = cmd.payload;
      this.configQueue = this.configQueue.then(() => {
        const mappings = cmd.name === 'config.sync' ? cmd.payload.mappings : this.applyDelta(cmd.payload);
        if (!mappings) {
          log.info({ version, base: (cmd.payload as ConfigDelta).base_version, have: this.configVersion }, 'config delta for another base; asking for the full config');
          channel.send(PacketType.CommandResp, {
            id: cmd.id,
            ok: false,
            error: { code: WireErrorCode.AgentConfigBase, message: `config ${version} is a delta on ${(cmd.payload as ConfigDelta).base_version}; this agent has ${this.configVersion ?? 'none'}` },
          });
          return;
        }
        return this.applyConfig(channel, cmd.id, version, mappings, log).catch((err: unknown) => {
          log.error({ err, version }, 'could not apply the pushed config');
          channel.send(PacketType.CommandResp, {
            id: cmd.id,
            ok: false,
            error: { code: WireErrorCode.AgentConfigFailed, message: `config ${version} not applied: ${errorMessage(err)}`.slice(0, 300) },
          });
        });
      });
      return;
    }
    if (cmd.name === 'session.token') {
      // A drained edge's refresh must not replace the token of the login elsewhere (it refreshes none).
      if (link.retiring) return;
      this.sessionToken = cmd.payload.token;
      channel.send(PacketType.CommandResp, { id: cmd.id, ok: true });
      return;
    }
    if (cmd.name === 'tunnel.open') {
      // The edge that asked pairs the tunnel: dial that one, even when it is draining.
      void this.runtime.handleTunnelRequest(cmd.payload, link.context).then((answer) => channel.send(PacketType.CommandResp, { id: cmd.id, ...answer }));
    }
  }

  /** The whole config a delta describes, or undefined when it is not based on what this agent applied. */
  private applyDelta(d: ConfigDelta): AgentMapping[] | undefined {
    if (!this.appliedMappings || this.configVersion !== d.base_version) return undefined;
    const key = (m: { role: string; mapping_id: number }): string => `${m.role}:${m.mapping_id}`;
    const next = new Map(this.appliedMappings.map((m) => [key(m), m]));
    for (const r of d.remove) next.delete(key(r));
    for (const m of d.upsert) next.set(key(m), m);
    return [...next.values()];
  }

  /**
   * Applies one pushed config and answers with one outcome per mapping: the edge's
   * acknowledgement. The embedding's onConfig hook runs before the answer, so a throw there (like
   * any throw in this step) leaves the push unacknowledged and the edge pushes again.
   */
  private async applyConfig(channel: ControlChannel, id: string, version: number, mappings: AgentMapping[], log: Logger): Promise<void> {
    const outcomes = await this.runtime.apply(mappings);
    const failed = outcomes.filter((o) => !o.ok);
    this.o.onConfig?.(mappings, version);
    channel.send(PacketType.CommandResp, {
      id,
      ok: failed.length === 0,
      // `error` keeps the answer older edges understand; `applied` is what newer edges read.
      ...(failed.length > 0
        ? { error: { code: WireErrorCode.AgentListenFailed, message: failed.map((f) => `mapping ${f.mapping_id}: ${f.error}`).join('; ').slice(0, 1000) } }
        : {}),
      applied: { version, mappings: outcomes },
    });
    this.configVersion = version;
    this.appliedMappings = mappings;
    log.info({ version, mappings: mappings.length, failed: failed.length }, 'config applied');
  }

  private async adoptIssuedIdentity(clientId: number, authCode: string): Promise<void> {
    this.identity = { clientId, authCode };
    if (!this.o.credentialsPath) {
      this.log.warn({ clientId }, 'registered as an anonymous client, but no credentials path is set: the identity is lost when the agent stops');
      return;
    }
    try {
      await saveCredentials(this.o.credentialsPath, { server: this.servers.text, client_id: clientId, auth_code: authCode });
      this.log.info({ clientId, path: this.o.credentialsPath }, 'registered as an anonymous client; credentials saved');
    } catch (err) {
      this.log.error({ clientId, path: this.o.credentialsPath, err: errorMessage(err) }, 'could not save the issued credentials; this identity is lost when the agent stops');
    }
  }
}

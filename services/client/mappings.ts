import { randomBytes } from 'node:crypto';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { pipeSockets, resetStream } from '../../shared/net/pipe.js';
import { errorMessage } from '../../shared/platform/errors.js';
import type { Logger } from '../../shared/platform/logger.js';
import { WireErrorCode } from '../../shared/wire/codes.js';
import type { AgentMapping, MappingOutcome, TunnelRequest } from '../../shared/wire/messages.js';
import type { EdgeEnds } from './ends.js';
import { dialTunnel, type TunnelDial } from './tunnel.js';
import { listen } from '../../shared/net/listen.js';
import { KEEPALIVE_OPTIONS, keepAlive } from '../../shared/net/keepalive.js';
import type { Conn } from '../../shared/transport/conn.js';
import type { EdgeDialer } from '../../shared/transport/dial.js';
import type { EdgeUrl } from '../../shared/transport/url.js';

/** What a tunnel needs from the control session of the edge it goes through. */
export interface TunnelContext {
  /** The edge of the session, dialed for every tunnel through it with the session's dialer. */
  edge: EdgeUrl;
  dialer: EdgeDialer;
  clientId: number;
  /** The session's id and tunnel key, when its edge issued one: tunnel opens are bound to them. */
  session?: { id: string; tunnelKey: string };
  clockOffsetMs: number;
  timeoutMs: number;
  /** Sends TunnelEnd to this edge: this agent's half of a tunnel through it ended cleanly. */
  attestEnd: (tunnelId: string, role: AgentMapping['role']) => void;
  /**
   * Set when the session negotiated AgentFeature.EdgeEnd: the edge vouches for its FINs there, and
   * tunnels dialed in this session pass an edge FIN on only when it did.
   */
  ends?: EdgeEnds;
}

interface Running {
  readonly mapping: AgentMapping;
  /** Source role: the local listener. */
  server?: Server;
  boundPort?: number;
  /** Every socket of this mapping's tunnels (both halves, pending or piping), for teardown. */
  readonly sockets: Set<Conn>;
}

export interface CommandAnswer {
  ok: boolean;
  error?: { code: string; message: string };
}

const keyOf = (m: AgentMapping): string => `${m.role}:${m.mapping_id}`;

/** Canonical form: two mappings that compare equal need no restart. */
function fingerprint(m: AgentMapping): string {
  return JSON.stringify([m.protocol, m.local_host ?? null, m.local_port ?? null, m.target_host ?? null, m.target_port ?? null, m.secret_key]);
}

/**
 * The agent's running mappings, diffed against each pushed config (rathole style): new ones
 * start, vanished ones stop, changed ones restart. Stopping a mapping closes its listener and
 * its tunnels (a deleted mapping revokes access). Survives control reconnects: listeners keep
 * running while the agent resyncs.
 */
export class MappingRuntime {
  private readonly running = new Map<string, Running>();
  private stopped = false;

  constructor(
    private readonly log: Logger,
    /** The live session's tunnel context (new local visitors go there), or undefined while there is none. */
    private readonly context: () => TunnelContext | undefined,
  ) {}

  listeningPorts(): Map<number, number> {
    const ports = new Map<number, number>();
    for (const r of this.running.values()) if (r.boundPort !== undefined) ports.set(r.mapping.mapping_id, r.boundPort);
    return ports;
  }

  /**
   * Applies a full config. Resolves once listeners are bound, with one outcome per mapping of the
   * config (in its order): ok for every mapping that runs now, the reason for every one that does
   * not. A mapping that failed is not kept, so the next apply (the edge pushes again) retries it.
   * Never rejects because of one mapping: a throw while starting it becomes that mapping's error.
   */
  async apply(mappings: readonly AgentMapping[]): Promise<MappingOutcome[]> {
    const wanted = new Map(mappings.map((m) => [keyOf(m), m]));
    for (const [key, r] of this.running) {
      const next = wanted.get(key);
      if (!next) this.remove(key, 'mapping removed');
      else if (fingerprint(next) !== fingerprint(r.mapping)) this.remove(key, 'mapping changed');
    }
    const outcomes: MappingOutcome[] = [];
    for (const [key, m] of wanted) {
      let error: string | undefined;
      if (!this.running.has(key) && !this.stopped) {
        error = await this.add(key, m).catch((err: unknown) => {
          this.log.error({ mappingId: m.mapping_id, role: m.role, err }, 'could not start this mapping');
          return `could not start: ${errorMessage(err)}`;
        });
      }
      outcomes.push({ mapping_id: m.mapping_id, role: m.role, ok: error === undefined, ...(error === undefined ? {} : { error: bounded(error) }) });
    }
    return outcomes;
  }

  /** Target role: the edge of `tunnel` (the session the request came on) asks for the other half of a tunnel. */
  async handleTunnelRequest(req: TunnelRequest, tunnel: TunnelContext): Promise<CommandAnswer> {
    const ctx = { mappingId: req.mapping_id, tunnelId: req.tunnel_id };
    const r = this.running.get(`target:${req.mapping_id}`);
    if (!r) {
      this.log.warn(ctx, 'tunnel request for a mapping this agent is not the target of');
      return { ok: false, error: { code: WireErrorCode.AgentUnknownMapping, message: `mapping ${req.mapping_id} is not a target here` } };
    }
    const { target_host: host, target_port: port } = r.mapping;
    // Never an open proxy: only the exact host:port of our own config is ever dialed.
    if (host === undefined || port === undefined || req.target_host !== host || req.target_port !== port) {
      this.log.warn({ ...ctx, requested: `${req.target_host}:${req.target_port}` }, 'tunnel request for a target other than the configured one');
      return { ok: false, error: { code: WireErrorCode.AgentTargetMismatch, message: 'requested target does not match this agent\'s config' } };
    }
    let local: Socket;
    try {
      local = await dialTarget(host, port, tunnel.timeoutMs);
    } catch (err) {
      this.log.info({ ...ctx, target: `${host}:${port}`, err: errorMessage(err) }, 'target service unreachable');
      return { ok: false, error: { code: WireErrorCode.AgentDialFailed, message: `${host}:${port}: ${errorMessage(err)}` } };
    }
    if (this.running.get(`target:${req.mapping_id}`) !== r) {
      local.destroy();
      return { ok: false, error: { code: WireErrorCode.AgentUnknownMapping, message: 'mapping removed' } };
    }
    // The target service may speak first (SSH/MySQL banners): hold it until the tunnel is acked.
    local.pause();
    const dial = dialTunnel({ ...this.tunnelParams(tunnel, r.mapping), tunnelId: req.tunnel_id, role: 'target', ticket: req.ticket });
    this.bridge(r, local, dial, tunnel, 'target', ctx);
    return { ok: true };
  }

  stop(): void {
    this.stopped = true;
    for (const key of [...this.running.keys()]) this.remove(key, 'agent stopping');
  }

  private async add(key: string, m: AgentMapping): Promise<string | undefined> {
    const r: Running = { mapping: m, sockets: new Set() };
    if (m.role === 'target') {
      this.running.set(key, r);
      this.log.info({ mappingId: m.mapping_id, target: `${m.target_host}:${m.target_port}` }, 'target mapping ready');
      return undefined;
    }
    if (m.local_port === undefined) return 'source mapping without local_port';
    const host = m.local_host ?? '127.0.0.1';
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true });
    server.on('connection', (visitor: Socket) => this.onVisitor(r, visitor));
    try {
      await listen(server, { host, port: m.local_port });
    } catch (err) {
      this.log.error({ mappingId: m.mapping_id, listen: `${host}:${m.local_port}`, err: errorMessage(err) }, 'cannot listen for this mapping');
      return listenError(host, m.local_port, err);
    }
    server.on('error', (err) => this.log.error({ mappingId: m.mapping_id, err }, 'listener error'));
    if (this.stopped) {
      server.close();
      return undefined;
    }
    r.server = server;
    r.boundPort = (server.address() as AddressInfo).port;
    this.running.set(key, r);
    this.log.info({ mappingId: m.mapping_id, listen: `${host}:${r.boundPort}` }, 'source mapping listening');
    return undefined;
  }

  private remove(key: string, reason: string): void {
    const r = this.running.get(key);
    if (!r) return;
    this.running.delete(key);
    r.server?.close();
    // A reset, not a FIN: a visitor cut off by a deleted mapping must not take it for a complete stream.
    for (const s of r.sockets) resetStream(s);
    this.log.info({ mappingId: r.mapping.mapping_id, role: r.mapping.role, reason }, 'mapping stopped');
  }

  /** Source role: a local visitor connected. It stays paused until the edge acks the tunnel. */
  private onVisitor(r: Running, visitor: Socket): void {
    visitor.setNoDelay(true);
    keepAlive(visitor);
    visitor.on('error', () => undefined);
    const tunnel = this.context();
    const tunnelId = randomBytes(16).toString('hex');
    const ctx = { mappingId: r.mapping.mapping_id, tunnelId };
    if (!tunnel) {
      this.log.info(ctx, 'visitor refused: not connected to the edge');
      visitor.destroy();
      return;
    }
    const dial = dialTunnel({ ...this.tunnelParams(tunnel, r.mapping), tunnelId, role: 'source' });
    this.bridge(r, visitor, dial, tunnel, 'source', ctx);
  }

  /**
   * Pipes `local` with the tunnel connection once the edge acks it. The tunnel belongs to
   * `tunnel`'s edge for its whole life, whatever sessions come and go meanwhile (it survives
   * control reconnects). With `tunnel.ends` (an EdgeEnd session), the edge's FIN reaches `local`
   * only if that edge vouched for it, a reset otherwise.
   */
  private bridge(r: Running, local: Socket, dial: TunnelDial, tunnel: TunnelContext, role: AgentMapping['role'], ctx: { mappingId: number; tunnelId: string }): void {
    r.sockets.add(local);
    // The tunnel connection joins once dialed; a reset before that resets `local`, which aborts the dial.
    const held: Conn[] = [local];
    const tracked = tunnel.ends?.track(ctx.tunnelId, role, held);
    let socket: Conn | undefined;
    const forget = (): void => {
      r.sockets.delete(local);
      if (socket) r.sockets.delete(socket);
      tracked?.release();
    };
    // If the local side gives up while we wait for the ack, drop the tunnel connection too.
    const onLocalClose = (): void => dial.abort();
    local.once('close', onLocalClose);
    dial.ready.then(
      ({ socket: s, early }) => {
        socket = s;
        local.off('close', onLocalClose);
        if (local.destroyed) {
          s.destroy();
          forget();
          return;
        }
        r.sockets.add(s);
        held.push(s);
        if (early.length > 0) local.write(early);
        this.vouchForEnd(local, s, tunnel, role, ctx.tunnelId);
        void pipeSockets(local, s, tracked ? { confirmEndOfB: tracked.confirmEnd } : {}).then((res) => {
          forget();
          this.log.debug({ ...ctx, bytesOut: res.bytesAtoB, bytesIn: res.bytesBtoA, err: res.error?.message }, 'tunnel closed');
        });
      },
      (err: unknown) => {
        local.off('close', onLocalClose);
        this.log.info({ ...ctx, err: errorMessage(err), code: (err as { code?: string }).code }, 'tunnel not opened');
        local.destroy();
        forget();
      },
    );
  }

  /**
   * When the local side ends cleanly, tells the edge so (TunnelEnd), but only once our FIN on the
   * tunnel connection is in the kernel ('finish'): from then on even a kill -9 of this process
   * delivers every byte and the FIN, so the edge may pass the FIN on. Told to the tunnel's own
   * edge, which may no longer be the one of the live session (see TunnelContext.attestEnd).
   */
  private vouchForEnd(local: Socket, socket: Conn, tunnel: TunnelContext, role: AgentMapping['role'], tunnelId: string): void {
    const vouch = (): void => tunnel.attestEnd(tunnelId, role);
    const onLocalEnd = (): void => {
      if (socket.writableFinished) vouch();
      else socket.once('finish', vouch);
    };
    if (local.readableEnded) onLocalEnd();
    else local.once('end', onLocalEnd);
  }

  private tunnelParams(t: TunnelContext, m: AgentMapping) {
    return {
      edge: t.edge,
      dialer: t.dialer,
      mappingId: m.mapping_id,
      secretKey: m.secret_key,
      session: t.session,
      clientId: t.clientId,
      clockOffsetMs: t.clockOffsetMs,
      timeoutMs: t.timeoutMs,
    };
  }
}

/** Agent-side errors travel to the API: short enough to read, long enough to keep the OS detail. */
const MAX_ERROR_CHARS = 300;

function bounded(text: string): string {
  return text.length <= MAX_ERROR_CHARS ? text : `${text.slice(0, MAX_ERROR_CHARS - 1)}…`;
}

/** The listen failures users meet most, said plainly (they end up in the mapping's `error` field). */
function listenError(host: string, port: number, err: unknown): string {
  const code = (err as { code?: unknown }).code;
  if (code === 'EADDRINUSE') return `local port ${port} in use (${host}:${port}: EADDRINUSE)`;
  if (code === 'EACCES') return `local port ${port} not permitted (${host}:${port}: EACCES)`;
  if (code === 'EADDRNOTAVAIL') return `local address ${host} not available on this machine (EADDRNOTAVAIL)`;
  return `listen ${host}:${port}: ${errorMessage(err)}`;
}

function dialTarget(host: string, port: number, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, allowHalfOpen: true, noDelay: true, ...KEEPALIVE_OPTIONS });
    const timer = setTimeout(() => socket.destroy(new Error(`connect timed out after ${timeoutMs} ms`)), timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.off('error', reject);
      socket.on('error', () => undefined);
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

import type { Socket } from 'node:net';
import type { Db } from '../../shared/db/connect.js';
import type { MappingRow } from '../../shared/db/schema.js';
import { closeAfterFlush } from '../../shared/net/frames.js';
import { pipeSockets } from '../../shared/net/pipe.js';
import type { Logger } from '../../shared/platform/logger.js';
import { WireErrorCode } from '../../shared/wire/codes.js';
import { encodeMessage, type TunnelOpen } from '../../shared/wire/messages.js';
import { PROTOCOL_VERSION, PacketType } from '../../shared/wire/packets.js';
import { ReplayGuard, verifyProof } from '../../shared/wire/proof.js';
import { loadMapping } from './readmodel.js';
import type { ControlSession } from './session.js';

/** Where the visitor's bytes come from: a source agent's tunnel connection, or a public port. */
type Origin =
  | { readonly kind: 'client'; readonly socket: Socket; readonly early: Buffer; readonly clientId: number }
  | { readonly kind: 'public'; readonly socket: Socket };

interface PendingTunnel {
  readonly tunnelId: string;
  readonly mappingId: number;
  readonly targetClientId: number;
  readonly origin: Origin;
  readonly session: ControlSession;
  readonly timer: NodeJS.Timeout;
  readonly onOriginClose: () => void;
}

interface ActiveTunnel {
  readonly mappingId: number;
  readonly kind: Origin['kind'];
  readonly a: Socket;
  readonly b: Socket;
}

export interface TunnelBrokerOptions {
  db: Db;
  logger: Logger;
  /** The control session of a client connected to this edge, if any. */
  findSession: (clientId: number) => ControlSession | undefined;
  openTimeoutMs: number;
  replayWindowMs: number;
}

export interface TunnelStats {
  pending: number;
  active: number;
}

/**
 * Pairs the two halves of a tunnel and hands them to the byte pump. A tunnel starts when a source
 * agent opens a tunnel connection (or a visitor reaches a public port); the edge then asks the
 * target agent, over its control session, to open the other half with the same tunnel id. Until
 * paired, the origin socket is paused (nothing is buffered beyond what already arrived) and a
 * timer bounds the wait. Ownership: a socket belongs to the broker from handleOpen/openForVisitor
 * until it is either closed here or handed to pipeSockets, which then owns it.
 */
export class TunnelBroker {
  private readonly pending = new Map<string, PendingTunnel>();
  private readonly active = new Map<string, ActiveTunnel>();
  private readonly guard: ReplayGuard;
  private readonly log: Logger;
  private stopping = false;

  constructor(private readonly o: TunnelBrokerOptions) {
    this.guard = new ReplayGuard(o.replayWindowMs);
    this.log = o.logger;
  }

  stats(): TunnelStats {
    return { pending: this.pending.size, active: this.active.size };
  }

  /** A connection whose first frame was TunnelOpen. `early` = bytes that followed the frame. */
  async handleOpen(socket: Socket, early: Buffer, open: TunnelOpen): Promise<void> {
    const ctx = { mappingId: open.mapping_id, tunnelId: open.tunnel_id, clientId: open.client_id, role: open.role };
    let mapping: MappingRow | undefined;
    try {
      mapping = await loadMapping(this.o.db, open.mapping_id);
    } catch (err) {
      this.log.error({ ...ctx, err }, 'tunnel refused: could not load the mapping');
      this.refuse(socket, open.tunnel_id, WireErrorCode.EdgeInternal, 'edge could not load the mapping');
      return;
    }
    const refusal = this.authorize(open, mapping);
    if (refusal || !mapping) {
      // One answer for every authorization failure; the reason goes to the log only.
      this.log.warn({ ...ctx, remoteAddr: socket.remoteAddress }, `tunnel refused: ${refusal ?? 'unknown mapping'}`);
      this.refuse(socket, open.tunnel_id, WireErrorCode.TunnelRefused, 'tunnel refused');
      return;
    }
    if (socket.destroyed || this.stopping) {
      socket.destroy();
      return;
    }
    if (open.role === 'source') this.start(open.tunnel_id, mapping, { kind: 'client', socket, early, clientId: open.client_id });
    else this.pairTarget(socket, early, open);
  }

  /** A visitor accepted on a public port (socket created paused). */
  openForVisitor(visitor: Socket, mapping: MappingRow, tunnelId: string): void {
    visitor.on('error', (err) => this.log.debug({ mappingId: mapping.mapping_id, tunnelId, err: err.message }, 'visitor socket error'));
    if (this.stopping) {
      visitor.destroy();
      return;
    }
    this.start(tunnelId, mapping, { kind: 'public', socket: visitor });
  }

  /** The target agent's session ended: its pending tunnels can never be completed. */
  failSession(session: ControlSession): void {
    for (const p of this.pending.values()) {
      if (p.session === session) this.fail(p, WireErrorCode.TunnelTargetOffline, 'target agent disconnected');
    }
  }

  /** Tears down every tunnel of a mapping that stopped existing here (public listener closed). */
  closeMapping(mappingId: number): void {
    for (const p of this.pending.values()) {
      if (p.mappingId === mappingId) this.fail(p, WireErrorCode.TunnelRefused, 'mapping removed');
    }
    for (const t of this.active.values()) {
      if (t.mappingId === mappingId) {
        t.a.destroy();
        t.b.destroy();
      }
    }
  }

  stop(): void {
    this.stopping = true;
    for (const p of this.pending.values()) this.fail(p, WireErrorCode.TunnelTargetOffline, 'edge shutting down');
    for (const t of this.active.values()) {
      t.a.destroy();
      t.b.destroy();
    }
  }

  /** Returns why the open is not allowed, or null. Proof before replay check: junk never fills the guard. */
  private authorize(open: TunnelOpen, mapping: MappingRow | undefined): string | null {
    if (open.protocol_version !== PROTOCOL_VERSION) return `protocol version ${open.protocol_version} not supported`;
    if (!mapping) return 'unknown mapping';
    if (!mapping.enabled) return 'mapping disabled';
    const party = open.role === 'source' ? mapping.source_client_id : mapping.target_client_id;
    if (party !== open.client_id) return `client is not the mapping's ${open.role}`;
    if (!verifyProof(mapping.secret_key, open, open.proof)) return 'bad proof';
    const replay = this.guard.check(open.ts, open.nonce);
    if (replay === 'stale') return 'timestamp outside the replay window (agent clock?)';
    if (replay === 'replayed') return 'replayed nonce';
    return null;
  }

  private start(tunnelId: string, mapping: MappingRow, origin: Origin): void {
    const ctx = { mappingId: mapping.mapping_id, tunnelId };
    if (this.pending.has(tunnelId) || this.active.has(tunnelId)) {
      this.log.warn(ctx, 'tunnel refused: duplicate tunnel id');
      this.failOrigin(origin, tunnelId, WireErrorCode.TunnelRefused, 'duplicate tunnel id');
      return;
    }
    const session = this.o.findSession(mapping.target_client_id);
    if (!session || session.closed) {
      // Cluster forwarding (target on another edge) is a later issue: for now the target must be here.
      this.log.info({ ...ctx, targetClientId: mapping.target_client_id }, 'tunnel failed: target agent not connected to this edge');
      this.failOrigin(origin, tunnelId, WireErrorCode.TunnelTargetOffline, 'target agent is offline');
      return;
    }
    const p: PendingTunnel = {
      tunnelId,
      mappingId: mapping.mapping_id,
      targetClientId: mapping.target_client_id,
      origin,
      session,
      timer: setTimeout(() => this.fail(p, WireErrorCode.TunnelTimeout, `target did not open within ${this.o.openTimeoutMs} ms`), this.o.openTimeoutMs),
      onOriginClose: () => {
        if (this.pending.get(tunnelId) !== p) return;
        this.pending.delete(tunnelId);
        clearTimeout(p.timer);
        this.log.debug(ctx, 'origin went away before the target answered');
      },
    };
    p.timer.unref();
    this.pending.set(tunnelId, p);
    origin.socket.once('close', p.onOriginClose);
    void session
      .configSettled()
      .then(() => {
        if (this.pending.get(tunnelId) !== p) return undefined; // failed or abandoned meanwhile
        const request = { tunnel_id: tunnelId, mapping_id: mapping.mapping_id, target_host: mapping.target_host, target_port: mapping.target_port };
        return session.command('tunnel.open', request, this.o.openTimeoutMs);
      })
      .then((resp) => {
        if (!resp) return;
        if (!resp.ok && this.pending.get(tunnelId) === p) {
          const code = resp.error?.code === WireErrorCode.TunnelTimeout ? WireErrorCode.TunnelTimeout : WireErrorCode.TunnelTargetFailed;
          this.fail(p, code, resp.error?.message ?? 'target agent refused');
        }
      });
  }

  private pairTarget(target: Socket, targetEarly: Buffer, open: TunnelOpen): void {
    const ctx = { mappingId: open.mapping_id, tunnelId: open.tunnel_id, clientId: open.client_id };
    const p = this.pending.get(open.tunnel_id);
    if (!p || p.mappingId !== open.mapping_id || p.targetClientId !== open.client_id) {
      this.log.warn(ctx, 'tunnel refused: no pending tunnel with this id (expired or never requested)');
      this.refuse(target, open.tunnel_id, WireErrorCode.TunnelRefused, 'tunnel refused');
      return;
    }
    this.pending.delete(p.tunnelId);
    clearTimeout(p.timer);
    const { origin } = p;
    origin.socket.off('close', p.onOriginClose);
    if (origin.socket.destroyed) {
      this.log.debug(ctx, 'origin went away before pairing');
      this.refuse(target, open.tunnel_id, WireErrorCode.TunnelRefused, 'visitor went away');
      return;
    }
    const ack = encodeMessage(PacketType.TunnelOpenAck, { ok: true, tunnel_id: p.tunnelId });
    target.write(ack);
    if (origin.kind === 'client') {
      origin.socket.write(ack);
      if (origin.early.length > 0) target.write(origin.early);
    }
    if (targetEarly.length > 0) origin.socket.write(targetEarly);
    // From here on: nothing but the pump.
    const tunnel: ActiveTunnel = { mappingId: p.mappingId, kind: origin.kind, a: origin.socket, b: target };
    this.active.set(p.tunnelId, tunnel);
    this.log.debug(ctx, 'tunnel open');
    void pipeSockets(origin.socket, target).then((r) => {
      this.active.delete(p.tunnelId);
      this.log.debug({ ...ctx, bytesIn: r.bytesAtoB, bytesOut: r.bytesBtoA, err: r.error?.message }, 'tunnel closed');
    });
  }

  private fail(p: PendingTunnel, code: WireErrorCode, message: string): void {
    if (this.pending.get(p.tunnelId) !== p) return;
    this.pending.delete(p.tunnelId);
    clearTimeout(p.timer);
    p.origin.socket.off('close', p.onOriginClose);
    this.log.info({ mappingId: p.mappingId, tunnelId: p.tunnelId, code }, `tunnel failed: ${message}`);
    this.failOrigin(p.origin, p.tunnelId, code, message);
  }

  private failOrigin(origin: Origin, tunnelId: string, code: WireErrorCode, message: string): void {
    if (origin.kind === 'client') this.refuse(origin.socket, tunnelId, code, message);
    else origin.socket.destroy();
  }

  private refuse(socket: Socket, tunnelId: string, code: WireErrorCode, message: string): void {
    if (socket.destroyed) return;
    socket.write(encodeMessage(PacketType.TunnelOpenAck, { ok: false, tunnel_id: tunnelId, error: { code, message } }));
    closeAfterFlush(socket);
  }
}

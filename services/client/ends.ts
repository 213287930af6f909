import type { Conn } from '../../shared/transport/conn.js';
import { resetStream } from '../../shared/net/pipe.js';
import type { Logger } from '../../shared/platform/logger.js';
import type { TunnelEnd } from '../../shared/wire/messages.js';

type Role = TunnelEnd['role'];

/** How long an edge's FIN on a tunnel connection waits for the edge's TunnelEnd; like the edge's wait. */
export const DEFAULT_EDGE_END_GRACE_MS = 5_000;

interface Tracked {
  readonly tunnelId: string;
  readonly role: Role;
  /** The local socket and the tunnel connection: reset together when the end cannot be vouched for. */
  readonly sockets: readonly Conn[];
  attested: boolean;
  /** Set while the edge's FIN waits for the TunnelEnd. */
  wait: ((clean: boolean) => void) | undefined;
}

export interface TrackedTunnel {
  /**
   * For the pump's confirmEndOfB (the edge's FIN): resolves true once the edge vouched for it,
   * false when it did not within the grace period or its control session was lost.
   */
  confirmEnd(): Promise<boolean>;
  /** The tunnel is over (or never opened): forget it. */
  release(): void;
}

/**
 * The edge's vouchers (TunnelEnd, edge → agent) for the tunnels opened in one control session,
 * when that session negotiated AgentFeature.EdgeEnd.
 *
 * A killed edge's kernel sends FIN on every tunnel connection, so the edge's FIN is passed to the
 * local socket only when the edge vouched for it on this session, before the FIN or within the
 * grace period after it: the two travel on different connections and either may arrive first.
 * Otherwise the local socket is reset, so a truncated stream never looks complete. When the
 * session is lost, the edge that could vouch is gone: every tunnel it has not vouched for is
 * reset at once. Tunnels are tracked from the dial on, because a TunnelEnd may overtake the
 * TunnelOpenAck on the tunnel connection.
 */
export class EdgeEnds {
  private readonly tunnels = new Map<string, Tracked>();
  private lost = false;

  constructor(
    private readonly log: Logger,
    private readonly graceMs = DEFAULT_EDGE_END_GRACE_MS,
  ) {}

  get size(): number {
    return this.tunnels.size;
  }

  /** Tracks a tunnel dialed over this session's edge. On a lost session its sockets are reset at once. */
  track(tunnelId: string, role: Role, sockets: readonly Conn[]): TrackedTunnel {
    const t: Tracked = { tunnelId, role, sockets, attested: false, wait: undefined };
    if (this.lost) for (const s of sockets) resetStream(s);
    else this.tunnels.set(tunnelId, t);
    return {
      confirmEnd: () => this.confirm(t),
      release: () => {
        if (this.tunnels.get(tunnelId) === t) this.tunnels.delete(tunnelId);
      },
    };
  }

  /** TunnelEnd from the edge. One for no tunnel half of ours (late, or hostile) changes nothing. */
  attest(end: TunnelEnd): void {
    const t = this.tunnels.get(end.tunnel_id);
    if (!t || t.role !== end.role) {
      this.log.debug({ tunnelId: end.tunnel_id, role: end.role }, 'edge TunnelEnd for no tunnel half of this agent (already closed?)');
      return;
    }
    t.attested = true;
    t.wait?.(true);
  }

  /** TunnelEnd {reset: true} from the edge: it reset our half; so do we, whatever the socket reported. */
  abort(end: TunnelEnd): void {
    const t = this.tunnels.get(end.tunnel_id);
    if (!t || t.role !== end.role) return;
    this.tunnels.delete(end.tunnel_id);
    t.wait?.(false);
    for (const s of t.sockets) resetStream(s);
    this.log.debug({ tunnelId: end.tunnel_id, role: end.role }, 'the edge reset this tunnel');
  }

  /** The control session ended: nothing not yet vouched for can be anymore. */
  lose(): void {
    if (this.lost) return;
    this.lost = true;
    let reset = 0;
    for (const t of this.tunnels.values()) {
      if (t.attested) continue; // its FIN is clean whenever it arrives; the other direction may still flow
      reset++;
      t.wait?.(false);
      for (const s of t.sockets) resetStream(s);
    }
    this.tunnels.clear();
    if (reset > 0) this.log.info({ tunnels: reset }, 'control connection lost: resetting the tunnels over that edge whose end it had not vouched for');
  }

  private confirm(t: Tracked): Promise<boolean> {
    if (t.attested) return Promise.resolve(true);
    if (this.lost) return Promise.resolve(false);
    return new Promise((resolve) => {
      const finish = (clean: boolean): void => {
        if (t.wait !== finish) return;
        t.wait = undefined;
        clearTimeout(timer);
        if (!clean) this.log.info({ tunnelId: t.tunnelId, role: t.role }, 'edge FIN not vouched for by TunnelEnd: resetting the local socket');
        resolve(clean);
      };
      const timer = setTimeout(() => finish(false), this.graceMs);
      timer.unref();
      t.wait = finish;
    });
  }
}

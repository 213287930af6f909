import { readFirstFrame } from '../../shared/net/frames.js';
import { TunnoxError } from '../../shared/platform/errors.js';
import type { Conn } from '../../shared/transport/conn.js';
import type { EdgeDialer } from '../../shared/transport/dial.js';
import type { EdgeUrl } from '../../shared/transport/url.js';
import { FrameDecoder } from '../../shared/wire/codec.js';
import { decodeMessage, encodeMessage } from '../../shared/wire/messages.js';
import { PROTOCOL_VERSION, PacketType, packetTypeName } from '../../shared/wire/packets.js';
import { computeProof, computeSessionProof, newNonce } from '../../shared/wire/proof.js';

export interface TunnelDialParams {
  /** The edge of the control session, and the dialer (transport, trust, proxy, TLS sessions) it was reached with. */
  edge: EdgeUrl;
  dialer: EdgeDialer;
  mappingId: number;
  secretKey: string;
  /**
   * The control session the tunnel belongs to and its tunnel key (HandshakeResp): the proof is
   * bound to them. Without a key (an edge that issued none, a release before session-bound
   * tunnels) the legacy proof of the mapping secret alone is sent.
   */
  session?: { id: string; tunnelKey: string } | undefined;
  /** Target half: the one-time ticket of the tunnel.open it answers. */
  ticket?: string | undefined;
  tunnelId: string;
  role: 'source' | 'target';
  clientId: number;
  /** Edge clock minus local clock, learned at handshake, so the edge's replay window sees its own time. */
  clockOffsetMs: number;
  timeoutMs: number;
}

export interface TunnelDial {
  /** Resolves after a positive TunnelOpenAck with the connection and the raw bytes that followed the ack. */
  readonly ready: Promise<{ socket: Conn; early: Buffer }>;
  /** Gives up: destroys the connection, whatever stage it is at (that rejects `ready`). */
  abort(): void;
}

/**
 * Opens a tunnel connection over the session's transport: TunnelOpen with a proof of the
 * session's tunnel key and the mapping secret (neither travels), then waits for the ack. After
 * that the connection carries raw bytes only.
 */
export function dialTunnel(p: TunnelDialParams): TunnelDial {
  const started = Date.now();
  const pending = p.dialer.dial(p.edge, p.timeoutMs);
  let socket: Conn | undefined;
  let aborted = false;
  const ready = pending.conn.then(async (conn) => {
    socket = conn;
    if (aborted) {
      conn.destroy();
      throw new TunnoxError('TNX_WIRE_CLOSED', 'tunnel dial aborted');
    }
    let socketError: Error | undefined;
    conn.on('error', (err) => {
      socketError ??= err;
    });
    const fields = {
      mapping_id: p.mappingId,
      tunnel_id: p.tunnelId,
      role: p.role,
      client_id: p.clientId,
      ts: Math.round(Date.now() + p.clockOffsetMs),
      nonce: newNonce(),
    };
    const open = p.session
      ? (() => {
          const bound = { ...fields, session_id: p.session.id, ...(p.ticket !== undefined ? { ticket: p.ticket } : {}) };
          return { protocol_version: PROTOCOL_VERSION, ...bound, proof: computeSessionProof(p.session.tunnelKey, p.secretKey, bound) };
        })()
      : { protocol_version: PROTOCOL_VERSION, ...fields, proof: computeProof(p.secretKey, fields) };
    conn.write(encodeMessage(PacketType.TunnelOpen, open));
    const decoder = new FrameDecoder();
    try {
      const frame = await readFirstFrame(conn, decoder, Math.max(1, p.timeoutMs - (Date.now() - started))).catch((err: unknown) => {
        throw socketError ?? err;
      });
      if (frame.type !== PacketType.TunnelOpenAck) {
        throw new TunnoxError('TNX_AGENT_PROTOCOL', `edge answered TunnelOpen with ${packetTypeName(frame.type)}`);
      }
      const msg = decodeMessage(frame);
      if (msg.type !== PacketType.TunnelOpenAck) throw new TunnoxError('TNX_AGENT_PROTOCOL', 'unexpected answer');
      if (!msg.body.ok) throw new TunnoxError(msg.body.error.code, msg.body.error.message);
    } catch (err) {
      conn.destroy();
      throw err;
    }
    return { socket: conn, early: decoder.takeRemainder() };
  });
  return {
    ready,
    abort: () => {
      aborted = true;
      pending.abort();
      socket?.destroy();
    },
  };
}

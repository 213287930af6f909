import { connect, type Socket } from 'node:net';
import { readFirstFrame } from '../../shared/net/frames.js';
import { TunnoxError } from '../../shared/platform/errors.js';
import { FrameDecoder } from '../../shared/wire/codec.js';
import { decodeMessage, encodeMessage } from '../../shared/wire/messages.js';
import { PROTOCOL_VERSION, PacketType, packetTypeName } from '../../shared/wire/packets.js';
import { computeProof, computeSessionProof, newNonce } from '../../shared/wire/proof.js';
import { KEEPALIVE_OPTIONS } from '../../shared/net/keepalive.js';

export interface TunnelDialParams {
  edgeHost: string;
  edgePort: number;
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
  /** Created at once so the caller can destroy it at any time (that rejects `ready`). */
  readonly socket: Socket;
  /** Resolves after a positive TunnelOpenAck with the raw bytes that followed it. */
  readonly ready: Promise<Buffer>;
}

/**
 * Opens a tunnel connection: TunnelOpen with a proof of the session's tunnel key and the mapping
 * secret (neither travels), then waits for the ack. After that the socket carries raw bytes only.
 */
export function dialTunnel(p: TunnelDialParams): TunnelDial {
  const socket = connect({ host: p.edgeHost, port: p.edgePort, allowHalfOpen: true, noDelay: true, ...KEEPALIVE_OPTIONS });
  let socketError: Error | undefined;
  socket.on('error', (err) => {
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
  socket.write(encodeMessage(PacketType.TunnelOpen, open));
  const decoder = new FrameDecoder();
  const ready = readFirstFrame(socket, decoder, p.timeoutMs).then(
    (frame) => {
      if (frame.type !== PacketType.TunnelOpenAck) {
        throw new TunnoxError('TNX_AGENT_PROTOCOL', `edge answered TunnelOpen with ${packetTypeName(frame.type)}`);
      }
      const msg = decodeMessage(frame);
      if (msg.type !== PacketType.TunnelOpenAck) throw new TunnoxError('TNX_AGENT_PROTOCOL', 'unexpected answer');
      if (!msg.body.ok) throw new TunnoxError(msg.body.error.code, msg.body.error.message);
      return decoder.takeRemainder();
    },
    (err: unknown) => {
      throw socketError ?? err;
    },
  );
  return { socket, ready };
}

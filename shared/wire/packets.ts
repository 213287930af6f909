/**
 * Packet type ids, pinned to the seed design (frp-style: a test pins these so they can never
 * silently change). Control connection: 0x01-0x12. Tunnel connection: 0x20-0x21, after which the
 * connection carries raw bytes only. 0x22/0x23 are reserved from the seed (per-packet tunnel
 * data/close) and are never valid on the wire: Tunnox tunnels are raw after TunnelOpenAck.
 */
export const PacketType = {
  Handshake: 0x01,
  HandshakeResp: 0x02,
  Heartbeat: 0x03,
  Command: 0x10,
  CommandResp: 0x11,
  /**
   * Agent → edge: this agent's half of a tunnel ended cleanly. Edge → agent (AgentFeature.EdgeEnd):
   * the far end of the agent's half ended cleanly. See TunnelEnd in messages.ts.
   */
  TunnelEnd: 0x12,
  TunnelOpen: 0x20,
  TunnelOpenAck: 0x21,
  TunnelData: 0x22,
  TunnelClose: 0x23,
} as const;
export type PacketType = (typeof PacketType)[keyof typeof PacketType];

/** Types a peer may legitimately send; anything else closes the connection. */
export const WIRE_PACKET_TYPES: ReadonlySet<number> = new Set([
  PacketType.Handshake,
  PacketType.HandshakeResp,
  PacketType.Heartbeat,
  PacketType.Command,
  PacketType.CommandResp,
  PacketType.TunnelEnd,
  PacketType.TunnelOpen,
  PacketType.TunnelOpenAck,
]);

export function packetTypeName(type: number): string {
  for (const [name, id] of Object.entries(PacketType)) if (id === type) return name;
  return `0x${type.toString(16).padStart(2, '0')}`;
}

/** Current wire protocol version; negotiated in Handshake / TunnelOpen. */
export const PROTOCOL_VERSION = 1;
/** The edge's control port when an address names none (`--server edge.example.com`). */
export const DEFAULT_CONTROL_PORT = 8080;

/** Header: 1 byte type + 4 byte big-endian payload length. */
export const FRAME_HEADER_SIZE = 5;

/** Default hard cap on a frame's payload. Config pushes are the largest frames. */
export const DEFAULT_MAX_FRAME_SIZE = 1024 * 1024;

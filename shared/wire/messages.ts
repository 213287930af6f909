import { z } from 'zod';
import { FrameError, encodeJsonFrame, type Frame } from './codec.js';
import { PacketType, packetTypeName } from './packets.js';

const Id = z.number().int().positive();
const Port = z.number().int().min(1).max(65535);
const ErrorBody = z.object({ code: z.string(), message: z.string() });
/** Longest session token on the wire; it must fit the edge's pre-authentication frame cap. */
export const MAX_SESSION_TOKEN_CHARS = 2048;
const SessionToken = z.string().min(1).max(MAX_SESSION_TOKEN_CHARS);
/** A session's tunnel key (32 random bytes), and a tunnel.open's one-time ticket (16), in hex. */
const TunnelKey = z.string().regex(/^[0-9a-f]{64}$/);
const Ticket = z.string().regex(/^[0-9a-f]{32}$/);
/** Session ids are the edge's UUIDs; bounded and `|`-free, since they are MACed in the proof. */
const SessionId = z.string().regex(/^[A-Za-z0-9-]{1,64}$/);

/** Agent → edge, first frame of a control connection. No credentials = register anonymously. */
export const Handshake = z.strictObject({
  protocol_version: z.number().int().positive(),
  client_id: Id.optional(),
  auth_code: z.string().min(1).max(256).optional(),
  client_version: z.string().max(64),
  /**
   * What this agent understands beyond protocol version 1 (AgentFeature in codes.ts). The edge
   * sends a newer frame, command or HandshakeResp field only to agents that list it, so older
   * agents (whose schemas are strict) keep working; unknown names are ignored.
   */
  features: z.array(z.string().max(32)).max(16).optional(),
  /**
   * A session token an edge of this cluster issued (HandshakeResp.session_token), presented with
   * client_id instead of auth_code: verified without scrypt. Refused as TNX_AUTH_TOKEN_REJECTED
   * when invalid, expired or revoked; the agent then logs in with its auth code.
   */
  session_token: SessionToken.optional(),
});

export const HandshakeResp = z.discriminatedUnion('ok', [
  z.strictObject({
    ok: z.literal(true),
    protocol_version: z.number().int().positive(),
    client_id: Id,
    client_type: z.enum(['managed', 'anonymous']),
    /** Present only when the edge just registered an anonymous client: save it, it is shown once. */
    auth_code: z.string().optional(),
    node_id: z.string(),
    session_id: z.string(),
    server_time_ms: z.number(),
    /** How often each side sends a Heartbeat when it has nothing else to say. */
    heartbeat_interval_ms: z.number().int().positive(),
    /**
     * Only to agents that declared AgentFeature.HeartbeatTimeout: the heartbeat deadline. The edge
     * closes a session it heard no byte from for this long (and reclaims its tunnels); the agent
     * treats the edge the same way and reconnects. Absent: 3 heartbeat intervals.
     */
    heartbeat_timeout_ms: z.number().int().positive().optional(),
    /**
     * Only to agents that declared AgentFeature.SessionToken: a fresh short-lived token for the
     * next login at any edge of the cluster. Keep it in memory only; it is a credential.
     */
    session_token: SessionToken.optional(),
    /**
     * Which of the agent's declared features that need confirming this edge will use (today only
     * AgentFeature.EdgeEnd, which came with this field). Sent only when that list is not empty, so
     * an agent that declared none of them (older ones, whose schemas are strict) never sees it.
     * Absent = none (an older edge). session_token is confirmed by the token itself, not here.
     */
    features: z.array(z.string().max(32)).max(16).optional(),
    /**
     * Only to agents that declared AgentFeature.TunnelKey: this session's tunnel key. Every
     * TunnelOpen of the session is MACed with it (shared/wire/proof.ts), so a tunnel opens only
     * while the session lives. A credential: memory only, never logged.
     */
    tunnel_key: TunnelKey.optional(),
  }),
  z.strictObject({ ok: z.literal(false), error: ErrorBody }),
]);

export const Heartbeat = z.strictObject({ ts: z.number() });

/** A mapping as an agent sees it: only its own side. */
export const AgentMapping = z.strictObject({
  mapping_id: Id,
  protocol: z.literal('tcp'),
  /** source: listen on local_host:local_port; target: dial target_host:target_port on request. */
  role: z.enum(['source', 'target']),
  local_host: z.string().optional(),
  local_port: Port.optional(),
  target_host: z.string().optional(),
  target_port: Port.optional(),
  secret_key: z.string(),
});

export const ConfigSync = z.strictObject({ version: z.number().int().nonnegative(), mappings: z.array(AgentMapping) });
/**
 * A config change as a delta against the version the agent last acknowledged (`base_version`):
 * mappings to add or replace, and sides to drop. Sent only to agents that declared
 * AgentFeature.ConfigDelta, and only on top of an acknowledged config; the answer is the same as to
 * config.sync (the agent's outcomes for its whole resulting config). An agent whose config is not
 * `base_version` refuses it (TNX_AGENT_CONFIG_BASE) and the edge pushes the full config instead.
 */
export const ConfigDelta = z.strictObject({
  base_version: z.number().int().nonnegative(),
  version: z.number().int().nonnegative(),
  upsert: z.array(AgentMapping),
  remove: z.array(z.strictObject({ mapping_id: Id, role: z.enum(['source', 'target']) })),
});
export const TunnelRequest = z.strictObject({
  tunnel_id: z.string().min(1).max(64),
  mapping_id: Id,
  target_host: z.string(),
  target_port: Port,
  /**
   * Only to agents that declared AgentFeature.TunnelKey: the one-time ticket the target half's
   * TunnelOpen must carry. It pairs exactly this request, once.
   */
  ticket: Ticket.optional(),
});

/** Edge → agent commands; the agent answers each with a CommandResp carrying the same id. */
export const Command = z.discriminatedUnion('name', [
  z.strictObject({ id: z.string(), name: z.literal('config.sync'), payload: ConfigSync }),
  z.strictObject({ id: z.string(), name: z.literal('config.delta'), payload: ConfigDelta }),
  z.strictObject({ id: z.string(), name: z.literal('tunnel.open'), payload: TunnelRequest }),
  z.strictObject({ id: z.string(), name: z.literal('session.close'), payload: z.strictObject({ reason: z.string() }) }),
  /** Only to agents that declared AgentFeature.SessionToken: replaces the token before it expires. */
  z.strictObject({ id: z.string(), name: z.literal('session.token'), payload: z.strictObject({ token: SessionToken }) }),
]);

// ---- config.sync answer (per-mapping outcomes) ----
/**
 * What became of one side of one mapping when the agent applied a config. `error` is free text
 * from the agent's OS (e.g. `listen 127.0.0.1:13306: EADDRINUSE`); the edge bounds and cleans it
 * before it is recorded anywhere.
 */
export const MappingOutcome = z.strictObject({
  mapping_id: Id,
  role: z.enum(['source', 'target']),
  ok: z.boolean(),
  error: z.string().optional(),
});
/**
 * Carried by the CommandResp to a config.sync: the version the agent applied and one outcome per
 * mapping of that config. Its presence is the acknowledgement: the config was delivered and
 * applied, whatever `ok` says (`ok` is false when some mapping failed, as before, so older edges
 * still log it). An answer without it (older agents, or an apply that failed as a whole) is not an
 * acknowledgement and the edge pushes again.
 */
export const ConfigApplied = z.strictObject({
  version: z.number().int().nonnegative(),
  mappings: z.array(MappingOutcome),
});
// ---- end config.sync answer ----

export const CommandResp = z.strictObject({
  id: z.string(),
  ok: z.boolean(),
  error: ErrorBody.optional(),
  /** Only in answers to config.sync (see ConfigApplied). */
  applied: ConfigApplied.optional(),
});

/**
 * On the control connection, for tunnel `tunnel_id`, in both directions. A killed process's
 * kernel sends FIN on every tunnel connection it held, so a FIN alone never proves a complete
 * stream; TunnelEnd is the vouching that does.
 *
 * - Agent → edge: the agent's side of the tunnel (its half in `role`) ended cleanly, and the
 *   agent's FIN on the tunnel connection is already in its kernel. The edge passes an agent's FIN
 *   on only once this arrives, and turns it into a reset otherwise.
 * - Edge → agent (only to agents that negotiated AgentFeature.EdgeEnd): the far end of the
 *   agent's half in `role` ended cleanly, and the edge's FIN on that tunnel connection follows.
 *   The agent ends its local socket on that FIN only if this arrives before it or within a grace
 *   period after it (the two travel on different connections), and resets it otherwise.
 */
export const TunnelEnd = z.strictObject({
  tunnel_id: z.string().min(1).max(64),
  role: z.enum(['source', 'target']),
  /**
   * Edge → agent only, to agents that declared AgentFeature.EdgeReset: the edge reset the agent's
   * half; the agent resets its local socket now, whatever its tunnel connection reports. Never a
   * vouch: an edge ignores an agent's TunnelEnd that carries it.
   */
  reset: z.literal(true).optional(),
});

/**
 * First frame of a tunnel connection. With `session_id` (agents that declared
 * AgentFeature.TunnelKey) the proof is keyed by that session's tunnel key and the mapping secret
 * (proof.ts, computeSessionProof): the only kind an edge of this release accepts. Without it, the
 * proof of older agents (the mapping secret alone), which such an edge refuses.
 */
export const TunnelOpen = z.strictObject({
  protocol_version: z.number().int().positive(),
  mapping_id: Id,
  tunnel_id: z.string().min(1).max(64),
  role: z.enum(['source', 'target']),
  client_id: Id,
  ts: z.number().int(),
  nonce: z.string().regex(/^[0-9a-f]{32}$/),
  proof: z.string().regex(/^[0-9a-f]{64}$/),
  /** The control session (HandshakeResp.session_id) this tunnel belongs to. */
  session_id: SessionId.optional(),
  /** Target half: the ticket of the `tunnel.open` it answers. */
  ticket: Ticket.optional(),
});

export const TunnelOpenAck = z.discriminatedUnion('ok', [
  z.strictObject({ ok: z.literal(true), tunnel_id: z.string() }),
  z.strictObject({ ok: z.literal(false), tunnel_id: z.string(), error: ErrorBody }),
]);

export type Handshake = z.infer<typeof Handshake>;
export type HandshakeResp = z.infer<typeof HandshakeResp>;
export type Heartbeat = z.infer<typeof Heartbeat>;
export type AgentMapping = z.infer<typeof AgentMapping>;
export type ConfigSync = z.infer<typeof ConfigSync>;
export type ConfigDelta = z.infer<typeof ConfigDelta>;
export type TunnelRequest = z.infer<typeof TunnelRequest>;
export type Command = z.infer<typeof Command>;
export type CommandResp = z.infer<typeof CommandResp>;
export type MappingOutcome = z.infer<typeof MappingOutcome>;
export type ConfigApplied = z.infer<typeof ConfigApplied>;
export type TunnelEnd = z.infer<typeof TunnelEnd>;
export type TunnelOpen = z.infer<typeof TunnelOpen>;
export type TunnelOpenAck = z.infer<typeof TunnelOpenAck>;

const SCHEMAS = {
  [PacketType.Handshake]: Handshake,
  [PacketType.HandshakeResp]: HandshakeResp,
  [PacketType.Heartbeat]: Heartbeat,
  [PacketType.Command]: Command,
  [PacketType.CommandResp]: CommandResp,
  [PacketType.TunnelEnd]: TunnelEnd,
  [PacketType.TunnelOpen]: TunnelOpen,
  [PacketType.TunnelOpenAck]: TunnelOpenAck,
} as const;

export type ControlMessage =
  | { type: typeof PacketType.Handshake; body: Handshake }
  | { type: typeof PacketType.HandshakeResp; body: HandshakeResp }
  | { type: typeof PacketType.Heartbeat; body: Heartbeat }
  | { type: typeof PacketType.Command; body: Command }
  | { type: typeof PacketType.CommandResp; body: CommandResp }
  | { type: typeof PacketType.TunnelEnd; body: TunnelEnd }
  | { type: typeof PacketType.TunnelOpen; body: TunnelOpen }
  | { type: typeof PacketType.TunnelOpenAck; body: TunnelOpenAck };

/** Parses and validates a frame's JSON payload. Throws FrameError (close the connection) on any violation. */
export function decodeMessage(frame: Frame): ControlMessage {
  const schema = SCHEMAS[frame.type as keyof typeof SCHEMAS];
  if (!schema) throw new FrameError('TNX_WIRE_UNKNOWN_TYPE', `unexpected packet type ${packetTypeName(frame.type)}`);
  let json: unknown;
  try {
    json = JSON.parse(frame.payload.toString('utf8'));
  } catch (cause) {
    throw new FrameError('TNX_WIRE_BAD_JSON', `${packetTypeName(frame.type)} payload is not JSON`, { cause });
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new FrameError(
      'TNX_WIRE_BAD_MESSAGE',
      `${packetTypeName(frame.type)}: ${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'invalid'}`,
    );
  }
  return { type: frame.type, body: parsed.data } as ControlMessage;
}

/** The body type carried by packet type T. */
export type MessageBody<T extends ControlMessage['type']> = Extract<ControlMessage, { type: T }>['body'];

export function encodeMessage<T extends ControlMessage['type']>(type: T, body: MessageBody<T>): Buffer {
  return encodeJsonFrame(type, body);
}

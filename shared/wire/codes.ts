/**
 * Stable error codes and reasons carried on the wire (HandshakeResp / TunnelOpenAck / CommandResp
 * errors, session.close reasons). Part of the protocol: never rename one.
 */
export const WireErrorCode = {
  /** Unknown client id or wrong auth code: deliberately the same answer for both. */
  AuthFailed: 'TNX_AUTH_FAILED',
  ProtocolVersion: 'TNX_WIRE_PROTOCOL_VERSION',
  /** This edge does not register anonymous clients (operator setting): fatal for the agent. */
  AnonymousDisabled: 'TNX_AUTH_ANONYMOUS_DISABLED',
  /** Too many anonymous registrations from this address: the agent backs off and retries. */
  RateLimited: 'TNX_AUTH_RATE_LIMITED',
  /**
   * The session token is not valid here (forged, expired, revoked by a newer client epoch, or this
   * edge takes no tokens): not fatal, the agent drops it and logs in with its auth code at once.
   * Only agents that present tokens (AgentFeature.SessionToken) ever get it.
   */
  SessionTokenRejected: 'TNX_AUTH_TOKEN_REJECTED',
  /** The tunnel open was not authorized (unknown mapping, wrong role, bad proof, replay, stale). */
  TunnelRefused: 'TNX_TUNNEL_REFUSED',
  TunnelTargetOffline: 'TNX_TUNNEL_TARGET_OFFLINE',
  TunnelTimeout: 'TNX_TUNNEL_TIMEOUT',
  /** The target agent could not reach the target service. */
  TunnelTargetFailed: 'TNX_TUNNEL_TARGET_FAILED',
  AgentUnknownMapping: 'TNX_AGENT_UNKNOWN_MAPPING',
  AgentTargetMismatch: 'TNX_AGENT_TARGET_MISMATCH',
  AgentDialFailed: 'TNX_AGENT_DIAL_FAILED',
  AgentListenFailed: 'TNX_AGENT_LISTEN_FAILED',
  /** The agent could not apply a pushed config at all (not acknowledged: the edge pushes again). */
  AgentConfigFailed: 'TNX_AGENT_CONFIG_FAILED',
  /** A config.delta did not apply to the agent's config (another base version): push the full config. */
  AgentConfigBase: 'TNX_AGENT_CONFIG_BASE',
  /** The mapping has max_connections tunnels on this edge already: refused at once. */
  TunnelLimit: 'TNX_TUNNEL_LIMIT',
  /**
   * Too many visitors wait for the target agent's half: the mapping's max_pending_opens on this
   * edge, or the target agent's queue of tunnel requests (flow control), is full. Refused at once.
   */
  TunnelBusy: 'TNX_TUNNEL_BUSY',
  /** The visitor's source IP opened new connections to public ports faster than the edge allows. */
  TunnelRateLimited: 'TNX_TUNNEL_RATE_LIMITED',
  EdgeInternal: 'TNX_EDGE_INTERNAL',
  /** The edge is draining (shutting down gracefully): it takes no new sessions or tunnels; try another edge. */
  EdgeDraining: 'TNX_EDGE_DRAINING',
  /**
   * A plaintext connection (tcp://, ws://) to an edge that takes TLS only (no --allow-plaintext):
   * fatal for the agent, which must be told to use TLS.
   */
  PlaintextRefused: 'TNX_WIRE_PLAINTEXT_REFUSED',
} as const;
export type WireErrorCode = (typeof WireErrorCode)[keyof typeof WireErrorCode];

/**
 * `session.close` reasons. An agent told `replaced` stops: another agent holds its identity. An
 * agent told `drain` moves to another edge at once, without backoff (an agent that does not know
 * the reason takes it for a normal close and reconnects with backoff).
 */
export const SessionCloseReason = {
  Replaced: 'replaced',
  Shutdown: 'shutdown',
  Drain: 'drain',
} as const;
export type SessionCloseReason = (typeof SessionCloseReason)[keyof typeof SessionCloseReason];

/**
 * Capabilities an agent declares in Handshake.features. The edge uses a feature only with agents
 * that declared it; an edge that does not know a name ignores it.
 */
export const AgentFeature = {
  /** The agent accepts a session token in HandshakeResp and may present it instead of its auth code. */
  SessionToken: 'session_token',
  /** The agent honours edge → agent TunnelEnd: an edge FIN without one is a reset. */
  EdgeEnd: 'edge_end',
  /** The agent applies config.delta on top of its acknowledged config. */
  ConfigDelta: 'config_delta',
  /**
   * On session.close `drain` the agent logs in elsewhere at once but keeps this control connection
   * open, only to vouch (TunnelEnd) for its tunnels still running through this edge; the edge
   * closes it once none is left. An agent without the feature keeps its session on the draining
   * edge until its tunnels there have ended, and is told then.
   */
  Drain: 'drain',
  /**
   * The agent takes HandshakeResp.tunnel_key and binds every TunnelOpen to its live session with
   * it (session_id plus a proof keyed by the session's tunnel key and the mapping secret), and
   * presents the one-time ticket of a `tunnel.open` in its target half. Required: an edge refuses
   * a handshake without it (a mapping secret alone opens no tunnel).
   */
  TunnelKey: 'tunnel_key',
  /**
   * With edge_end: the edge also tells the agent (TunnelEnd {reset: true}) when the agent's half of
   * a tunnel was reset at the edge (revocation, a reset from the far end). A reset that the agent's
   * kernel reports as a FIN (it does when the RST meets unread bytes) is then reset at once instead
   * of waiting out the TunnelEnd grace period.
   */
  EdgeReset: 'edge_reset',
  /**
   * The agent takes HandshakeResp.heartbeat_timeout_ms: the edge's heartbeat deadline, which the
   * agent applies to the edge too (no byte from the edge for that long = a dead edge: reconnect).
   * An agent without the feature (or an edge that sends no deadline) uses 3 heartbeat intervals.
   */
  HeartbeatTimeout: 'heartbeat_timeout',
} as const;
export type AgentFeature = (typeof AgentFeature)[keyof typeof AgentFeature];

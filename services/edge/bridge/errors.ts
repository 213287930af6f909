import { TunnoxError } from '../../../shared/platform/errors.js';

/** Stable codes of the node-to-node bridge (OpenAck.error_code and BridgeError.code). Never rename one. */
export const BridgeErrorCode = {
  /** The Open's mac did not verify (wrong cluster secret, or a field was changed in transit). */
  AuthFailed: 'TNX_BRIDGE_AUTH_FAILED',
  /** The Open's timestamp is outside ±60 s of the callee's clock. */
  Stale: 'TNX_BRIDGE_STALE',
  /** The Open's nonce was already used within the window. */
  Replayed: 'TNX_BRIDGE_REPLAYED',
  /** The Open names another node as its target. */
  WrongNode: 'TNX_BRIDGE_WRONG_NODE',
  /** The first frame was not a well-formed Open, or a frame arrived out of order. */
  Protocol: 'TNX_BRIDGE_PROTOCOL',
  /** The callee's handler failed without a code of its own. */
  TargetFailed: 'TNX_BRIDGE_TARGET_FAILED',
  /** The peer could not be reached, or the connection died before OpenAck. */
  Unavailable: 'TNX_BRIDGE_UNAVAILABLE',
  /** No OpenAck within the open timeout. */
  Timeout: 'TNX_BRIDGE_TIMEOUT',
  /** Every connection to the peer carries its maximum of streams and the pool is at max connections. */
  PoolExhausted: 'TNX_BRIDGE_POOL_EXHAUSTED',
  /** The stream was reset (cancelled, RST_STREAM, connection lost, ended without fin). */
  Reset: 'TNX_BRIDGE_RESET',
  /** The pool or server was closed. */
  Closed: 'TNX_BRIDGE_CLOSED',
} as const;
export type BridgeErrorCode = (typeof BridgeErrorCode)[keyof typeof BridgeErrorCode];

/**
 * A bridge failure. `code` is a BridgeErrorCode or, for a refused Open, whatever TNX_ code the
 * peer's handler answered with (e.g. TNX_TUNNEL_TARGET_OFFLINE), so callers can pass it on.
 */
export class BridgeError extends TunnoxError {
  /** Open refused by the peer (OpenAck ok=false), as opposed to a local or transport failure. */
  readonly refusedByPeer: boolean;
  constructor(code: string, message: string, options?: { cause?: unknown; refusedByPeer?: boolean; details?: Record<string, unknown> }) {
    super(code, message, options);
    this.refusedByPeer = options?.refusedByPeer ?? false;
  }
}

import { createHmac, timingSafeEqual } from 'node:crypto';
import { newNonce, ReplayGuard } from '../../../shared/wire/proof.js';
import { BridgeErrorCode } from './errors.js';
import type { OpenFrame } from './proto.js';

/** What an Open is about; the pool fills in the source node, timestamp, nonce and mac. */
export interface BridgeOpenRequest {
  readonly targetNodeId: string;
  readonly tunnelId: string;
  readonly mappingId: number;
  readonly targetClientId: number;
}

/** A verified Open as the callee's handler sees it. */
export interface BridgeOpen extends BridgeOpenRequest {
  readonly sourceNodeId: string;
}

interface MacFields {
  source_node_id: string;
  target_node_id: string;
  tunnel_id: string;
  mapping_id: string | number;
  target_client_id: string | number;
  ts_ms: string | number;
  nonce: string;
}

/** mac = HMAC-SHA256(secret, "tunnox-bridge-v1|source|target|tunnel|mapping|client|ts|nonce"), hex. */
export function computeBridgeMac(secret: string, f: MacFields): string {
  // Node ids and tunnel ids are validated not to contain '|' (see parseOpen), so the message is unambiguous.
  const msg = `tunnox-bridge-v1|${f.source_node_id}|${f.target_node_id}|${f.tunnel_id}|${f.mapping_id}|${f.target_client_id}|${f.ts_ms}|${f.nonce}`;
  return createHmac('sha256', secret).update(msg).digest('hex');
}

/** Builds a signed Open frame for `req`, from `sourceNodeId`. */
export function signOpen(secret: string, sourceNodeId: string, req: BridgeOpenRequest, now: number = Date.now()): OpenFrame {
  const f = {
    source_node_id: sourceNodeId,
    target_node_id: req.targetNodeId,
    tunnel_id: req.tunnelId,
    mapping_id: String(req.mappingId),
    target_client_id: String(req.targetClientId),
    ts_ms: String(now),
    nonce: newNonce(),
  };
  return { ...f, mac: computeBridgeMac(secret, f) };
}

export type OpenVerdict = { ok: true; open: BridgeOpen } | { ok: false; code: BridgeErrorCode; message: string };

const ID = /^[A-Za-z0-9._:-]{1,128}$/;
const UINT = /^[0-9]{1,19}$/;
const NONCE = /^[0-9a-f]{16,64}$/;
const MAC = /^[0-9a-f]{64}$/;

/**
 * Checks an incoming Open: shape, mac (constant time), target node, then freshness and replay.
 * The nonce is remembered only after the mac verified, so unauthenticated traffic cannot fill the
 * replay window or burn a legitimate caller's nonce.
 */
export class OpenVerifier {
  private readonly guard: ReplayGuard;

  constructor(
    private readonly secret: string,
    private readonly nodeId: string,
    windowMs = 60_000,
    now: () => number = Date.now,
  ) {
    if (secret.length < 16) throw new Error('bridge cluster secret must be at least 16 characters');
    this.guard = new ReplayGuard(windowMs, now);
  }

  verify(o: OpenFrame): OpenVerdict {
    const bad = (code: BridgeErrorCode, message: string): OpenVerdict => ({ ok: false, code, message });
    if (!ID.test(o.source_node_id) || !ID.test(o.target_node_id) || !ID.test(o.tunnel_id)) return bad(BridgeErrorCode.Protocol, 'malformed node or tunnel id');
    if (!UINT.test(o.mapping_id) || !UINT.test(o.target_client_id) || !/^-?[0-9]{1,19}$/.test(o.ts_ms)) return bad(BridgeErrorCode.Protocol, 'malformed id or timestamp');
    if (!NONCE.test(o.nonce) || !MAC.test(o.mac)) return bad(BridgeErrorCode.Protocol, 'malformed nonce or mac');
    const expected = Buffer.from(computeBridgeMac(this.secret, o), 'hex');
    const got = Buffer.from(o.mac, 'hex');
    if (got.length !== expected.length || !timingSafeEqual(got, expected)) return bad(BridgeErrorCode.AuthFailed, 'bridge open not authenticated');
    // After the mac: only a cluster member learns which node it reached.
    if (o.target_node_id !== this.nodeId) return bad(BridgeErrorCode.WrongNode, `this is node ${this.nodeId}, not ${o.target_node_id}`);
    const refused = this.guard.check(Number(o.ts_ms), o.nonce);
    if (refused === 'stale') return bad(BridgeErrorCode.Stale, 'bridge open timestamp outside the allowed window');
    if (refused === 'replayed') return bad(BridgeErrorCode.Replayed, 'bridge open nonce already used');
    return {
      ok: true,
      open: {
        sourceNodeId: o.source_node_id,
        targetNodeId: o.target_node_id,
        tunnelId: o.tunnel_id,
        mappingId: Number(o.mapping_id),
        targetClientId: Number(o.target_client_id),
      },
    };
  }
}

import { clientStream, registerAnonymousClient } from '../../shared/domain/index.js';
import type { EventStore } from '../../shared/eventstore/types.js';
import { hashSecret, randomToken } from '../../shared/platform/secrets.js';
import { AgentFeature, WireErrorCode } from '../../shared/wire/codes.js';
import type { Handshake } from '../../shared/wire/messages.js';
import { PROTOCOL_VERSION } from '../../shared/wire/packets.js';
import type { LoginTicket } from './rate-limit.js';
import type { SessionTokens } from './session-token.js';
import type { EdgeView } from './view/view.js';

export type HandshakeOutcome =
  | {
      ok: true;
      clientId: number;
      clientType: 'managed' | 'anonymous';
      /** The client's auth epoch the credentials were checked against (0 for a new registration). */
      epoch: number;
      via: 'auth-code' | 'session-token' | 'registration';
      issuedAuthCode?: string;
    }
  | { ok: false; code: WireErrorCode; message: string; logReason: string };

/**
 * A valid scrypt hash of a random secret nobody knows. Unknown client ids are verified against it,
 * so they cost the same time as a wrong code: the answer and its timing do not reveal which ids exist.
 */
let decoyHash: Promise<string> | undefined;
/** Computed once per process; call at startup so not even the first probe is slower. */
export function decoy(): Promise<string> {
  decoyHash ??= hashSecret(randomToken('decoy_'));
  return decoyHash;
}

const AUTH_FAILED = 'authentication failed';

/**
 * The agent features this edge confirms in HandshakeResp.features when declared. Only features
 * born with that field belong here: an agent that declares an older one (session_token) may not
 * know the field, and its strict schema would refuse the whole answer.
 */
export const CONFIRMED_FEATURES: ReadonlySet<string> = new Set<AgentFeature>([AgentFeature.EdgeEnd]);

/** HandshakeResp.features for an agent that declared `declared`; no field at all when empty. */
export function usedFeatures(declared: ReadonlySet<string>): { features?: string[] } {
  const used = [...declared].filter((f) => CONFIRMED_FEATURES.has(f));
  return used.length > 0 ? { features: used } : {};
}

/** Decides who the agent is: a known client proving its auth code, or a new anonymous client. */
export interface AuthDeps {
  view: EdgeView;
  store: EventStore;
  nodeId: string;
  /** Whether a new anonymous client may be registered for this peer now (policy + rate limit). */
  admitAnonymous: () => 'ok' | 'disabled' | 'rate-limited';
  /**
   * Whether a credential check for this client id may start for this peer now (failed-login
   * budgets, see LoginRationer). The ticket is settled with the verdict, exactly once.
   */
  admitLogin: (clientId: number) => LoginTicket | 'busy' | 'rate-limited';
  /** scrypt verification, bounded by the caller's concurrency cap. */
  verify: (secret: string, hash: string) => Promise<boolean>;
  /** Session token verification; undefined when this edge takes no tokens. */
  tokens?: SessionTokens;
}

export async function authenticate(hs: Handshake, deps: AuthDeps): Promise<HandshakeOutcome> {
  if (hs.protocol_version !== PROTOCOL_VERSION) {
    return {
      ok: false,
      code: WireErrorCode.ProtocolVersion,
      message: `protocol version ${hs.protocol_version} is not supported; this edge speaks ${PROTOCOL_VERSION}`,
      logReason: `unsupported protocol version ${hs.protocol_version}`,
    };
  }
  if (!hs.features?.includes(AgentFeature.TunnelKey)) {
    // Before any credential check or registration: such an agent could hold a session but never
    // open a tunnel (a mapping secret alone opens none), so it is told to upgrade, and stops.
    return {
      ok: false,
      code: WireErrorCode.ProtocolVersion,
      message: `this edge binds tunnels to the agent's session (feature ${AgentFeature.TunnelKey}); upgrade the agent`,
      logReason: `agent without the ${AgentFeature.TunnelKey} feature (an older release)`,
    };
  }
  if (hs.session_token !== undefined) return tokenLogin(hs, hs.session_token, deps);
  if (hs.client_id === undefined && hs.auth_code === undefined) {
    const admission = deps.admitAnonymous();
    if (admission === 'disabled') {
      return {
        ok: false,
        code: WireErrorCode.AnonymousDisabled,
        message: 'this edge does not register anonymous clients; use a managed client id and auth code',
        logReason: 'anonymous registration disabled',
      };
    }
    if (admission === 'rate-limited') {
      return {
        ok: false,
        code: WireErrorCode.RateLimited,
        message: 'too many anonymous registrations from this address; retry later',
        logReason: 'anonymous registration rate limit',
      };
    }
    const authCode = randomToken('tnxc_');
    const { clientId } = await registerAnonymousClient(
      deps.store,
      { authCodeHash: await hashSecret(authCode) },
      { actor: { kind: 'node', id: deps.nodeId } },
    );
    return { ok: true, clientId, clientType: 'anonymous', epoch: 0, via: 'registration', issuedAuthCode: authCode };
  }
  if (hs.client_id === undefined || hs.auth_code === undefined) {
    return { ok: false, code: WireErrorCode.AuthFailed, message: AUTH_FAILED, logReason: 'client_id and auth_code must come together' };
  }
  const ticket = deps.admitLogin(hs.client_id);
  if (typeof ticket === 'string') return rationed(ticket);
  let row: Awaited<ReturnType<typeof loadClientRow>>;
  let valid: boolean;
  try {
    row = await loadClientRow(deps, hs.client_id);
    if (row === 'pending') {
      ticket.abandoned();
      return CATCHING_UP;
    }
    valid = await deps.verify(hs.auth_code, row?.auth_code_hash ?? (await decoy()));
  } catch (err) {
    ticket.abandoned();
    throw err;
  }
  if (row && valid) ticket.succeeded();
  else ticket.failed();
  if (!row) return { ok: false, code: WireErrorCode.AuthFailed, message: AUTH_FAILED, logReason: 'unknown client id' };
  if (!valid) return { ok: false, code: WireErrorCode.AuthFailed, message: AUTH_FAILED, logReason: 'wrong auth code' };
  if (!row.enabled) return { ok: false, code: WireErrorCode.AuthFailed, message: AUTH_FAILED, logReason: 'client disabled' };
  return { ok: true, clientId: row.client_id, clientType: row.client_type, epoch: row.epoch, via: 'auth-code' };
}

function rationed(why: 'busy' | 'rate-limited'): HandshakeOutcome {
  return {
    ok: false,
    code: WireErrorCode.RateLimited,
    message: 'too many logins in progress or failed for this client or address; retry later',
    logReason: why === 'busy' ? 'too many concurrent credential checks' : 'too many failed logins for this client id or address',
  };
}

// Registered in the event log (or the view still loading) but not in the view yet: say "later",
// not "wrong", so the agent retries instead of giving up for good.
const CATCHING_UP: HandshakeOutcome = {
  ok: false,
  code: WireErrorCode.EdgeInternal,
  message: 'edge is catching up, retry later',
  logReason: 'client not in the edge view yet',
};

function tokenRejected(logReason: string): HandshakeOutcome {
  return { ok: false, code: WireErrorCode.SessionTokenRejected, message: 'session token not accepted; log in with the auth code', logReason };
}

/**
 * A login with a session token: an HMAC and a look at the view, no scrypt and no database. It is
 * rationed like an auth-code login (a flood of forged tokens spends the same failure budgets),
 * but only a token that fails its MAC (or names another client) counts as a failure: an
 * authentic token that expired or was revoked is no guess, so the agent's fallback to its auth
 * code is not charged twice. A token is never a way around the client's state: a deleted, unknown
 * or disabled client gets TNX_AUTH_FAILED as with its auth code, and a token whose epoch is not
 * the client's current one is refused. It never registers anyone, so `--no-anonymous` holds.
 */
async function tokenLogin(hs: Handshake, token: string, deps: AuthDeps): Promise<HandshakeOutcome> {
  if (hs.client_id === undefined || hs.auth_code !== undefined) {
    return { ok: false, code: WireErrorCode.AuthFailed, message: AUTH_FAILED, logReason: 'a session token needs client_id and no auth_code' };
  }
  if (!deps.tokens) return tokenRejected('this edge takes no session tokens');
  const ticket = deps.admitLogin(hs.client_id);
  if (typeof ticket === 'string') return rationed(ticket);
  const verdict = deps.tokens.verify(token);
  if (!verdict.ok) {
    if (verdict.reason === 'expired' || verdict.reason === 'not-yet-valid') ticket.abandoned();
    else ticket.failed();
    return tokenRejected(`session token ${verdict.reason}`);
  }
  if (verdict.clientId !== hs.client_id) {
    ticket.failed();
    return tokenRejected('session token of another client');
  }
  let row: Awaited<ReturnType<typeof loadClientRow>>;
  try {
    row = await loadClientRow(deps, hs.client_id);
    // A token from an edge whose view is ahead of ours (it saw a revocation first, then a fresh
    // auth-code login): wait briefly for ours rather than refuse a token that is current.
    if (row && row !== 'pending' && verdict.epoch > row.epoch) {
      row = (await deps.view.waitForClient(hs.client_id, PROJECTION_GRACE_MS, (c) => c.epoch >= verdict.epoch)) ?? 'pending';
    }
  } catch (err) {
    ticket.abandoned();
    throw err;
  }
  if (row === 'pending') {
    ticket.abandoned();
    return CATCHING_UP;
  }
  if (!row || !row.enabled || verdict.epoch !== row.epoch) {
    // Authentic: whatever the refusal, it was not a guess.
    ticket.abandoned();
    if (!row) return { ok: false, code: WireErrorCode.AuthFailed, message: AUTH_FAILED, logReason: 'session token of an unknown or deleted client' };
    if (!row.enabled) return { ok: false, code: WireErrorCode.AuthFailed, message: AUTH_FAILED, logReason: 'client disabled' };
    return tokenRejected('session token revoked (client epoch changed)');
  }
  ticket.succeeded();
  return { ok: true, clientId: row.client_id, clientType: row.client_type, epoch: row.epoch, via: 'session-token' };
}

/** How long a login waits for a just-registered client to reach the edge view. */
const PROJECTION_GRACE_MS = 3_000;

/**
 * The edge view is the authority for auth, but it trails the event log by a few milliseconds (the
 * projector, then the state stream). An agent that registered anonymously and restarted at once
 * would be refused and stop for good, so when the client is unknown but either the view is still
 * loading or the client's stream exists in the event log, wait briefly for the view.
 */
async function loadClientRow(deps: { view: EdgeView; store: EventStore }, clientId: number) {
  const known = deps.view.client(clientId);
  if (known) return known;
  // Deleted: its stream is still in the log, but there is nothing to wait for.
  if (deps.view.clientDeleted(clientId)) return undefined;
  if (deps.view.ready) {
    const { revision } = await deps.store.readLastEvent(clientStream(clientId));
    if (revision === null) return undefined;
  }
  const arrived = await deps.view.waitForClient(clientId, PROJECTION_GRACE_MS);
  if (arrived) return arrived;
  if (!deps.view.ready) {
    // Still loading after the grace: only say "later" for a client the log knows.
    const { revision } = await deps.store.readLastEvent(clientStream(clientId));
    if (revision === null) return undefined;
  }
  return 'pending' as const;
}

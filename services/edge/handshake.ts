import { clientStream, registerAnonymousClient } from '../../shared/domain/index.js';
import type { EventStore } from '../../shared/eventstore/types.js';
import { hashSecret, randomToken } from '../../shared/platform/secrets.js';
import { WireErrorCode } from '../../shared/wire/codes.js';
import type { Handshake } from '../../shared/wire/messages.js';
import { PROTOCOL_VERSION } from '../../shared/wire/packets.js';
import type { LoginTicket } from './rate-limit.js';
import type { EdgeView } from './view/view.js';

export type HandshakeOutcome =
  | { ok: true; clientId: number; clientType: 'managed' | 'anonymous'; issuedAuthCode?: string }
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
    return { ok: true, clientId, clientType: 'anonymous', issuedAuthCode: authCode };
  }
  if (hs.client_id === undefined || hs.auth_code === undefined) {
    return { ok: false, code: WireErrorCode.AuthFailed, message: AUTH_FAILED, logReason: 'client_id and auth_code must come together' };
  }
  const ticket = deps.admitLogin(hs.client_id);
  if (typeof ticket === 'string') {
    return {
      ok: false,
      code: WireErrorCode.RateLimited,
      message: 'too many logins in progress or failed for this client or address; retry later',
      logReason: ticket === 'busy' ? 'too many concurrent credential checks' : 'too many failed logins for this client id or address',
    };
  }
  let row: Awaited<ReturnType<typeof loadClientRow>>;
  let valid: boolean;
  try {
    row = await loadClientRow(deps, hs.client_id);
    if (row === 'pending') {
      ticket.abandoned();
      // Registered in the event log (or the view still loading) but not in the view yet: say
      // "later", not "wrong", so the agent retries instead of giving up for good.
      return { ok: false, code: WireErrorCode.EdgeInternal, message: 'edge is catching up, retry later', logReason: 'client not in the edge view yet' };
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
  return { ok: true, clientId: row.client_id, clientType: row.client_type };
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

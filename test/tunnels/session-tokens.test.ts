import { Writable } from 'node:stream';
import t, { type Test } from 'tap';
import { deriveSessionTokenKey, startEdge, type EdgeOptions, type RunningEdge } from '../../services/edge/index.js';
import type { AgentFatalError } from '../../services/client/index.js';
import { deleteClient, disableClient, enableClient, kickClient, rotateClientAuthCode } from '../../shared/domain/index.js';
import { createLogger, type Logger } from '../../shared/platform/logger.js';
import { AgentFeature, WireErrorCode } from '../../shared/wire/codes.js';
import type { Handshake, HandshakeResp } from '../../shared/wire/messages.js';
import { PROTOCOL_VERSION, PacketType } from '../../shared/wire/packets.js';
import { TEST_EDGE_TRANSPORT, META, TEST_MAPPING_KEY, WirePeer, createWorld, eventually, type World } from './world.js';

/**
 * Session tokens end to end on real sockets: issued after an auth-code login (and a registration)
 * to agents that declare the feature, accepted instead of the auth code by any edge holding the
 * cluster's key without running scrypt (the edge's credentialChecks counter, which counts every
 * scrypt verification, proves it), refused with a retryable code when forged, from another
 * cluster, or revoked by a client epoch change, after which the agent falls back to its auth code.
 */

const SECRET = 'cluster-secret-for-tests-0123456789';
const KEY = deriveSessionTokenKey(SECRET);
const OTHER_KEY = deriveSessionTokenKey('another-cluster-secret-0123456789');
const HELLO = { protocol_version: PROTOCOL_VERSION, client_version: 'test', features: [AgentFeature.TunnelKey] };
const TAKES_TOKENS = { ...HELLO, features: [AgentFeature.TunnelKey, AgentFeature.SessionToken] };
const JWT = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
/** base64url of {"alg":"HS256","typ":"JWT"}: the first characters of every token an edge issues. */
const TOKEN_PREFIX = 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9';

async function handshake(port: number, body: Handshake, localAddress?: string): Promise<{ peer: WirePeer; resp: HandshakeResp }> {
  const peer = await WirePeer.connect(port, localAddress);
  peer.send(PacketType.Handshake, body);
  const msg = await peer.next();
  if (msg?.type !== PacketType.HandshakeResp) throw new Error(`expected HandshakeResp, got ${JSON.stringify(msg)}`);
  return { peer, resp: msg.body };
}

/** Logs in and hangs up; returns the answer. */
async function once(port: number, body: Handshake, localAddress?: string): Promise<HandshakeResp> {
  const { peer, resp } = await handshake(port, body, localAddress);
  peer.close();
  await peer.closed;
  return resp;
}

function tokenOf(resp: HandshakeResp): string {
  if (!resp.ok || resp.session_token === undefined) throw new Error(`no token in ${JSON.stringify(resp)}`);
  return resp.session_token;
}

function errorCode(resp: HandshakeResp): string | undefined {
  return resp.ok ? undefined : resp.error.code;
}

async function extraEdge(t: Test, w: World, nodeId: string, opts: Partial<EdgeOptions>): Promise<RunningEdge> {
  const edge = await startEdge({ store: w.store, view: w.view, logger: w.logger, nodeId, controlHost: '127.0.0.1', controlPort: 0, ...TEST_EDGE_TRANSPORT, publicHost: '127.0.0.1', mappingKey: TEST_MAPPING_KEY, ...opts });
  t.teardown(() => edge.stop());
  return edge;
}

t.test('an auth-code login returns a token; presenting it logs in again without scrypt, and every login rotates it', async (t) => {
  const w = await createWorld(t, { sessionTokens: { key: KEY } });
  const a = await w.client(await w.user());
  const first = await once(w.edge.controlPort, { ...TAKES_TOKENS, client_id: a.clientId, auth_code: a.authCode });
  t.match(first, { ok: true, client_id: a.clientId, session_token: JWT });
  t.match(w.edge.stats(), { credentialChecks: 1, tokenLogins: 0 });

  const second = await once(w.edge.controlPort, { ...TAKES_TOKENS, client_id: a.clientId, session_token: tokenOf(first) });
  t.match(second, { ok: true, client_id: a.clientId, client_type: 'managed', session_token: JWT });
  t.not(tokenOf(second), tokenOf(first), 'a fresh token per login');
  const third = await once(w.edge.controlPort, { ...TAKES_TOKENS, client_id: a.clientId, session_token: tokenOf(second) });
  t.equal(third.ok, true, 'the rotated token works too');
  t.match(w.edge.stats(), { credentialChecks: 1, tokenLogins: 2 }, 'no scrypt for the token logins');

  // A new anonymous client gets one with its credentials, usable at once (the edge waits for its view).
  const anon = await once(w.edge.controlPort, TAKES_TOKENS);
  t.match(anon, { ok: true, client_type: 'anonymous', auth_code: /^tnxc_/, session_token: JWT });
  const back = await once(w.edge.controlPort, { ...TAKES_TOKENS, client_id: anon.ok ? anon.client_id : 0, session_token: tokenOf(anon) });
  t.match(back, { ok: true, client_type: 'anonymous' });
  t.match(w.edge.stats(), { credentialChecks: 1, tokenLogins: 3 });
});

t.test('an agent without the feature gets no token field and no session.token command, and still logs in', async (t) => {
  // ttl 10 s: sessions that take tokens get a fresh one every 5 s.
  const w = await createWorld(t, { sessionTokens: { key: KEY, ttlMs: 10_000 } });
  const user = await w.user();
  const a = await w.client(user);
  const b = await w.client(user);
  const old = await handshake(w.edge.controlPort, { ...HELLO, client_id: a.clientId, auth_code: a.authCode });
  t.equal(old.resp.ok, true);
  t.notOk('session_token' in old.resp, 'no session_token field for an agent that did not declare the feature');
  // Started after the old agent's session: its refresh would have fired first.
  const newer = await handshake(w.edge.controlPort, { ...TAKES_TOKENS, client_id: b.clientId, auth_code: b.authCode });
  let refreshed: string | undefined;
  for (let i = 0; i < 10 && !refreshed; i++) {
    const m = await newer.peer.next(8_000);
    if (m?.type === PacketType.Command && m.body.name === 'session.token') refreshed = m.body.payload.token;
  }
  t.match(refreshed, JWT, 'the agent that takes tokens got a refresh');
  const seenByOld: string[] = [];
  for (;;) {
    const m = await old.peer.next(200).catch(() => undefined);
    if (!m) break;
    if (m.type === PacketType.Command) seenByOld.push(m.body.name);
  }
  t.notOk(seenByOld.includes('session.token'), `the old agent got only ${seenByOld.join(', ')}`);
  old.peer.close();
  newer.peer.close();
  const again = await once(w.edge.controlPort, { ...TAKES_TOKENS, client_id: b.clientId, session_token: refreshed! });
  t.equal(again.ok, true, 'the refreshed token logs in');
});

t.test('a token is accepted by another edge with the same cluster secret, refused by one with another secret or none', async (t) => {
  const w = await createWorld(t, { sessionTokens: { key: KEY } });
  const a = await w.client(await w.user());
  const sameCluster = await extraEdge(t, w, 'node-002', { sessionTokens: { key: deriveSessionTokenKey(SECRET) } });
  const otherCluster = await extraEdge(t, w, 'node-003', { sessionTokens: { key: OTHER_KEY } });
  const noTokens = await extraEdge(t, w, 'node-004', {});
  const token = tokenOf(await once(w.edge.controlPort, { ...TAKES_TOKENS, client_id: a.clientId, auth_code: a.authCode }));

  const there = await once(sameCluster.controlPort, { ...TAKES_TOKENS, client_id: a.clientId, session_token: token });
  t.match(there, { ok: true, node_id: 'node-002', session_token: JWT });
  t.match(sameCluster.stats(), { credentialChecks: 0, tokenLogins: 1 });
  t.equal(errorCode(await once(otherCluster.controlPort, { ...TAKES_TOKENS, client_id: a.clientId, session_token: token })), WireErrorCode.SessionTokenRejected);
  t.match(otherCluster.stats(), { credentialChecks: 0, tokenLogins: 0, tokensRejected: 1 });
  t.equal(errorCode(await once(noTokens.controlPort, { ...TAKES_TOKENS, client_id: a.clientId, session_token: token })), WireErrorCode.SessionTokenRejected);
  const plain = await once(noTokens.controlPort, { ...TAKES_TOKENS, client_id: a.clientId, auth_code: a.authCode });
  t.equal(plain.ok, true);
  t.notOk('session_token' in plain, 'an edge without a key issues none');
});

t.test('agents reconnect to a restarted edge with their tokens (no scrypt), and fall back to the auth code at once when the key changed', async (t) => {
  const opts: Partial<EdgeOptions> = { sessionTokens: { key: KEY } };
  const w = await createWorld(t, opts);
  const user = await w.user();
  const fatal: AgentFatalError[] = [];
  const ready: string[] = [];
  const clients = await Promise.all([0, 1, 2, 3, 4].map(() => w.client(user)));
  for (const c of clients) w.agent({ ...c, onFatal: (err) => fatal.push(err), onReady: (i) => ready.push(i.nodeId) });
  await eventually(() => w.edge.stats().sessions === 5, 'five agents logged in');
  t.match(w.edge.stats(), { credentialChecks: 5, tokenLogins: 0 });

  await w.restartEdge('node-002');
  await eventually(() => w.edge.stats().sessions === 5, 'five agents back');
  t.match(w.edge.stats(), { credentialChecks: 0, tokenLogins: 5, tokensRejected: 0 }, 'every reconnect used its token');

  // A new cluster key (e.g. a rotated cluster secret): every token is refused, every agent falls
  // back to its auth code in the same reconnect, none gives up.
  opts.sessionTokens = { key: OTHER_KEY };
  await w.restartEdge('node-003');
  await eventually(() => w.edge.stats().sessions === 5, 'five agents back on the new key');
  t.match(w.edge.stats(), { credentialChecks: 5, tokenLogins: 0, tokensRejected: 5 });
  t.same(fatal, []);
  // The edge counts a session before its HandshakeResp reaches the agent: wait for the agents' side.
  await eventually(() => ready.filter((n) => n === 'node-003').length >= 5, 'five agents ready on node-003');
  t.equal(ready.filter((n) => n === 'node-003').length, 5, 'each logged in once: the fallback needs no backoff round');

  await w.restartEdge('node-004');
  await eventually(() => w.edge.stats().sessions === 5, 'and back again');
  t.match(w.edge.stats(), { credentialChecks: 0, tokenLogins: 5 }, 'with the tokens the new key issued');
});

for (const feed of ['read-models', 'jetstream'] as const) {
  t.test(`${feed} feed: kick, rotation, disable and delete revoke tokens at once; a still valid auth code is never locked out`, async (t) => {
    const w = await createWorld(t, { sessionTokens: { key: KEY } }, { feed });
    const user = await w.user();
    const fatal = new Map<number, string>();
    const readyCount = new Map<number, number>();
    const start = (c: { clientId: number; authCode: string }) =>
      w.agent({
        ...c,
        onFatal: (err) => fatal.set(c.clientId, err.code),
        onReady: () => readyCount.set(c.clientId, (readyCount.get(c.clientId) ?? 0) + 1),
      });
    const [kicked, rotated, disabled, deleted] = await Promise.all([0, 1, 2, 3].map(() => w.client(user)));
    for (const c of [kicked, rotated, disabled, deleted]) start(c!);
    await eventually(() => w.edge.stats().sessions === 4, 'four agents connected');
    const before = () => ({ ...w.edge.stats() });

    // Kick: the session ends, the token is revoked, the agent logs in with its auth code.
    let s = before();
    await w.settle((await kickClient(w.store, { clientId: kicked!.clientId }, META)).position);
    await eventually(() => readyCount.get(kicked!.clientId) === 2 && w.edge.stats().sessions === 4, 'kicked agent back');
    t.match(w.edge.stats(), { tokensRejected: s.tokensRejected + 1, credentialChecks: s.credentialChecks + 1, tokenLogins: s.tokenLogins });
    t.notOk(fatal.has(kicked!.clientId), 'the kicked agent did not give up');

    // Auth code rotated: the token is refused, then the old auth code: the agent stops.
    s = before();
    const fresh = await rotateClientAuthCode(w.store, { clientId: rotated!.clientId }, META);
    await w.settle(fresh.position);
    await eventually(() => fatal.get(rotated!.clientId), 'rotated agent refused');
    t.equal(fatal.get(rotated!.clientId), WireErrorCode.AuthFailed);
    t.match(w.edge.stats(), { tokensRejected: s.tokensRejected + 1, credentialChecks: s.credentialChecks + 1 });
    start({ clientId: rotated!.clientId, authCode: fresh.authCode });
    await eventually(() => readyCount.get(rotated!.clientId) === 2, 'the new auth code logs in');

    // Disabled and deleted: refused from the token alone, TNX_AUTH_FAILED, no scrypt.
    for (const [c, revoke] of [[disabled!, disableClient], [deleted!, deleteClient]] as const) {
      s = before();
      await w.settle((await revoke(w.store, { clientId: c.clientId }, META)).position);
      await eventually(() => fatal.get(c.clientId), 'agent refused');
      t.equal(fatal.get(c.clientId), WireErrorCode.AuthFailed);
      t.match(w.edge.stats(), { credentialChecks: s.credentialChecks, tokensRejected: s.tokensRejected, tokenLogins: s.tokenLogins });
    }
    t.equal(w.edge.stats().sessions, 2, 'the kicked and the re-keyed agent');

    // A token from before a disable stays revoked after the enable; the auth code works.
    const e = await w.client(user);
    const old = tokenOf(await once(w.edge.controlPort, { ...TAKES_TOKENS, client_id: e.clientId, auth_code: e.authCode }));
    await w.settle((await disableClient(w.store, { clientId: e.clientId }, META)).position);
    t.equal(errorCode(await once(w.edge.controlPort, { ...TAKES_TOKENS, client_id: e.clientId, session_token: old })), WireErrorCode.AuthFailed, 'disabled');
    await w.settle((await enableClient(w.store, { clientId: e.clientId }, META)).position);
    t.equal(errorCode(await once(w.edge.controlPort, { ...TAKES_TOKENS, client_id: e.clientId, session_token: old })), WireErrorCode.SessionTokenRejected, 'enabled again: the old token is still revoked');
    t.equal((await once(w.edge.controlPort, { ...TAKES_TOKENS, client_id: e.clientId, auth_code: e.authCode })).ok, true, 'the auth code logs in');
  });
}

t.test('forged tokens are rationed like failed logins, cost no scrypt, and open no way around --no-anonymous', async (t) => {
  const w = await createWorld(t, { sessionTokens: { key: KEY }, allowAnonymous: false, failedLoginsPerMinutePerClient: 3, failedLoginsPerMinutePerIp: 3 });
  const user = await w.user();
  const a = await w.client(user);
  const b = await w.client(user);
  const forged = `${TOKEN_PREFIX}.${Buffer.from(JSON.stringify({ sub: String(a.clientId), epoch: 0, iat: 1, exp: 4e9, node: 'x', jti: 'A'.repeat(22) })).toString('base64url')}.${'A'.repeat(43)}`;
  const codes: (string | undefined)[] = [];
  for (let i = 0; i < 5; i++) codes.push(errorCode(await once(w.edge.controlPort, { ...TAKES_TOKENS, client_id: a.clientId, session_token: forged })));
  t.same(codes, [...Array(3).fill(WireErrorCode.SessionTokenRejected), ...Array(2).fill(WireErrorCode.RateLimited)], 'three failures, then rationed');
  t.match(w.edge.stats(), { credentialChecks: 0, tokensRejected: 3 });

  // Another client's genuine token, presented as client a (from another address): a failure too.
  const tokenB = tokenOf(await once(w.edge.controlPort, { ...TAKES_TOKENS, client_id: b.clientId, auth_code: b.authCode }, '127.0.0.2'));
  t.equal(errorCode(await once(w.edge.controlPort, { ...TAKES_TOKENS, client_id: b.clientId + 1_000_000, session_token: tokenB }, '127.0.0.3')), WireErrorCode.SessionTokenRejected);

  // No client id: never a registration, whatever the token.
  const before = await w.tdb.db.selectFrom('clients').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow();
  t.equal(errorCode(await once(w.edge.controlPort, { ...TAKES_TOKENS, session_token: tokenB }, '127.0.0.4')), WireErrorCode.AuthFailed);
  t.equal(errorCode(await once(w.edge.controlPort, { ...TAKES_TOKENS, client_id: b.clientId, auth_code: b.authCode, session_token: tokenB }, '127.0.0.4')), WireErrorCode.AuthFailed, 'token and auth code together');
  t.equal(errorCode(await once(w.edge.controlPort, TAKES_TOKENS, '127.0.0.4')), WireErrorCode.AnonymousDisabled);
  const after = await w.tdb.db.selectFrom('clients').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow();
  t.equal(after.n, before.n, 'nobody registered');

  // An oversized token is a bad first frame: that connection closes, nothing else notices.
  const huge = await WirePeer.connect(w.edge.controlPort, '127.0.0.5');
  huge.send(PacketType.Handshake, { ...TAKES_TOKENS, client_id: b.clientId, session_token: 'x'.repeat(3000) });
  t.equal(await huge.next(), undefined, 'closed without an answer');
  t.equal((await once(w.edge.controlPort, { ...TAKES_TOKENS, client_id: b.clientId, session_token: tokenB }, '127.0.0.5')).ok, true, 'b still logs in with its token');
  t.equal(w.edge.stats().credentialChecks, 1, 'only b\'s one auth-code login ran scrypt');
});

/** A real pino logger at debug level writing into memory. */
function capture(): { logger: Logger; text: () => string } {
  const chunks: string[] = [];
  const sink = new Writable({ write: (chunk, _enc, cb) => (chunks.push(String(chunk)), cb()) });
  return { logger: createLogger({ level: 'debug', name: 'tokens-test' }, sink), text: () => chunks.join('') };
}

t.test('tokens never appear in the edge\'s or the agent\'s logs', async (t) => {
  const edgeLog = capture();
  const agentLog = capture();
  const opts: Partial<EdgeOptions> = { sessionTokens: { key: KEY }, logger: edgeLog.logger };
  const w = await createWorld(t, opts);
  const a = await w.client(await w.user());
  const b = await w.client(await w.user());
  w.agent({ ...a, logger: agentLog.logger });
  await eventually(() => w.edge.stats().sessions === 1, 'agent logged in');
  const seen = [tokenOf(await once(w.edge.controlPort, { ...TAKES_TOKENS, client_id: b.clientId, auth_code: b.authCode }))];
  await w.restartEdge('node-002'); // token login
  await eventually(() => w.edge.stats().tokenLogins === 1, 'token login');
  opts.sessionTokens = { key: OTHER_KEY };
  await w.restartEdge('node-003'); // token refused, fallback
  await eventually(() => w.edge.stats().sessions === 1 && w.edge.stats().tokensRejected === 1, 'fallback login');
  const forged = 'forged-token-0123456789';
  t.equal(errorCode(await once(w.edge.controlPort, { ...TAKES_TOKENS, client_id: b.clientId, session_token: seen[0]! })), WireErrorCode.SessionTokenRejected);
  t.equal(errorCode(await once(w.edge.controlPort, { ...TAKES_TOKENS, client_id: b.clientId, session_token: forged })), WireErrorCode.SessionTokenRejected);
  seen.push(tokenOf(await once(w.edge.controlPort, { ...TAKES_TOKENS, client_id: b.clientId, auth_code: b.authCode })));
  await new Promise((r) => setImmediate(r));

  const all = edgeLog.text() + agentLog.text();
  t.match(edgeLog.text(), /"via":"session-token"/, 'the edge logged the token login (the capture works)');
  t.match(edgeLog.text(), /session token bad-signature/, 'and the refusals, by reason');
  t.match(agentLog.text(), /refused the session token/, 'the agent logged its fallback');
  t.notMatch(all, new RegExp(TOKEN_PREFIX), 'no issued token in any log line');
  for (const token of [...seen, forged]) t.notOk(all.includes(token), 'no presented token in any log line');
});

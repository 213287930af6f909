import t from 'tap';
import { EXPIRED_HASH } from '../../services/projector/clients.projection.js';
import { startAnonymousExpiry } from '../../services/projector/expiry.js';
import { clientSessionStream, clientStream } from '../../shared/domain/index.js';
import { PacketType } from '../../shared/wire/packets.js';
import { createWorld, eventually, handshake, HELLO, WirePeer } from './world.js';

/**
 * `--anonymous-ttl` (issue 7): anonymous clients unused for the TTL expire through ClientExpired,
 * issued by the expiry process manager with the event that began the inactivity as its causation;
 * afterwards their credentials are refused and nothing more is recorded for them. Short TTL, real
 * edge, PostgreSQL event store and projector.
 */

t.test('an anonymous client unused for the TTL expires; online, recent and managed clients do not', async (t) => {
  const w = await createWorld(t);
  const user = await w.user();
  const managed = await w.client(user);

  // Three anonymous agents register (no credentials): one goes away, one stays, one comes back.
  const register = async () => {
    const { peer, resp } = await handshake(w, {});
    if (resp.auth_code === undefined) throw new Error('no auth code issued');
    return { peer, clientId: resp.client_id, authCode: resp.auth_code };
  };
  const gone = await register();
  const online = await register();
  const back = await register();
  gone.peer.close();
  back.peer.close();
  await eventually(() => w.edge.stats().sessions === 1, 'two agents gone');
  await eventually(async () => (await w.store.readLastEvent(clientSessionStream(gone.clientId))).event?.type === 'ClientDisconnected', 'disconnect recorded');
  await eventually(async () => (await w.store.readLastEvent(clientSessionStream(back.clientId))).event?.type === 'ClientDisconnected', 'disconnect recorded');
  const managedPeer = await handshake(w, { client_id: managed.clientId, auth_code: managed.authCode });
  managedPeer.peer.close();

  const ttlMs = 1_500;
  const expiry = startAnonymousExpiry({ db: w.tdb.db, store: w.store, logger: w.logger, ttlMs, intervalMs: 3_600_000, actorId: 'expiry-test' });
  t.teardown(() => expiry.stop());
  t.equal(await expiry.sweep(), 0, 'nobody expires before the TTL');
  await new Promise((r) => setTimeout(r, ttlMs + 200));
  // `back` logs in again just before the sweep: active, not expired.
  const backAgain = await handshake(w, { client_id: back.clientId, auth_code: back.authCode });
  backAgain.peer.close();
  await eventually(async () => (await w.store.readLastEvent(clientSessionStream(back.clientId))).event?.type === 'ClientDisconnected', 'second disconnect recorded');
  await eventually(async () => {
    const r = await w.tdb.db.selectFrom('clients').select('last_seen_at').where('client_id', '=', back.clientId).executeTakeFirstOrThrow();
    return r.last_seen_at !== null && Date.now() - new Date(r.last_seen_at).getTime() < ttlMs;
  }, 'the read model saw the second session');

  t.equal(await expiry.sweep(), 1, 'exactly one client expired');
  const { event: expired } = await w.store.readLastEvent(clientStream(gone.clientId));
  const { event: cause } = await w.store.readLastEvent(clientSessionStream(gone.clientId));
  t.equal(expired?.type, 'ClientExpired');
  t.match(expired?.data, { client_id: gone.clientId, ttl_seconds: 1, inactive_since: cause?.occurred_at });
  t.equal(expired?.causation_id, cause?.id, 'caused by the ClientDisconnected that began the inactivity');
  t.match(expired?.actor, { kind: 'system', id: 'expiry-test' });
  for (const c of [online, back]) t.equal((await w.store.readLastEvent(clientStream(c.clientId))).event?.type, 'ClientRegistered', `client ${c.clientId} kept`);
  t.equal((await w.store.readLastEvent(clientStream(managed.clientId))).event?.type, 'ClientRegistered', 'managed clients never expire');

  // The row is a tombstone without the credential; the edge refuses the credentials.
  const row = await eventually(async () => {
    const r = await w.tdb.db.selectFrom('clients').selectAll().where('client_id', '=', gone.clientId).executeTakeFirstOrThrow();
    return r.deleted_at !== null ? r : undefined;
  }, 'tombstone projected');
  t.equal(row.auth_code_hash, EXPIRED_HASH);
  await eventually(() => w.view.clientDeleted(gone.clientId), 'the edge view saw the client go');
  const peer = await WirePeer.connect(w.edge.controlPort);
  peer.send(PacketType.Handshake, { ...HELLO, client_id: gone.clientId, auth_code: gone.authCode });
  t.match(await peer.next(), { type: PacketType.HandshakeResp, body: { ok: false, error: { code: 'TNX_AUTH_FAILED' } } }, 'its auth code no longer logs in');
  await peer.closed;

  // Nothing more grows for it: later sweeps append nothing, the log's head stays where it is.
  const head = await w.store.headPosition();
  t.equal(await expiry.sweep(), 0);
  t.equal(await w.store.headPosition(), head, 'no event appended by a later sweep');
  t.equal((await w.store.readStream(clientSessionStream(gone.clientId))).events.length, 2, 'its session stream stays as it was');
  online.peer.close();
});

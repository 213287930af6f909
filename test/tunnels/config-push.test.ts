import t from 'tap';
import { createServer } from 'node:net';
import { mappingView } from '../../services/api/modules/mappings/schemas.js';
import { findMapping } from '../../services/api/modules/mappings/queries.js';
import { MAX_AGENT_ERROR_CHARS } from '../../shared/contracts/events.js';
import { AgentFeature } from '../../shared/wire/codes.js';
import { PROTOCOL_VERSION, PacketType } from '../../shared/wire/packets.js';
import type { ControlMessage } from '../../shared/wire/messages.js';
import { canConnect, createWorld, eventually, freePort, WirePeer, type World } from './world.js';

/**
 * Config push delivery (issue 5): a version counts as delivered only when the agent acknowledges
 * it, unacknowledged pushes are retried with backoff, and each mapping side's outcome reaches the
 * read model (and so the API) as pending → active | error.
 */

const HELLO = { protocol_version: PROTOCOL_VERSION, client_version: 'test', features: [AgentFeature.TunnelKey] };
const FAST_RETRY = { minMs: 40, maxMs: 200 };

async function login(w: World, clientId: number, authCode: string): Promise<WirePeer> {
  const peer = await WirePeer.connect(w.edge.controlPort);
  peer.send(PacketType.Handshake, { ...HELLO, client_id: clientId, auth_code: authCode });
  const resp = await peer.next();
  if (resp?.type !== PacketType.HandshakeResp || !resp.body.ok) throw new Error(`login failed: ${JSON.stringify(resp)}`);
  return peer;
}

type ConfigSyncCommand = Extract<Extract<ControlMessage, { type: typeof PacketType.Command }>['body'], { name: 'config.sync' }>;

async function nextSync(peer: WirePeer, timeoutMs?: number): Promise<ConfigSyncCommand> {
  const m = await peer.next(timeoutMs);
  if (m?.type !== PacketType.Command || m.body.name !== 'config.sync') throw new Error(`expected config.sync, got ${JSON.stringify(m)}`);
  return m.body;
}

/** The acknowledgement a current agent sends: every mapping of the config started. */
function ack(peer: WirePeer, sync: ConfigSyncCommand, failures: Record<number, string> = {}): void {
  const mappings = sync.payload.mappings.map((m) =>
    failures[m.mapping_id] === undefined
      ? { mapping_id: m.mapping_id, role: m.role, ok: true }
      : { mapping_id: m.mapping_id, role: m.role, ok: false, error: failures[m.mapping_id] },
  );
  peer.send(PacketType.CommandResp, { id: sync.id, ok: Object.keys(failures).length === 0, applied: { version: sync.payload.version, mappings } });
}

async function statusFacts(w: World, mappingId: number) {
  const { events } = await w.store.readStream(`mapping-status.${mappingId}`);
  return events.map((e) => e.data as { role: string; status: string; error?: string; session_id: string });
}

async function apiView(w: World, mappingId: number) {
  const row = await findMapping(w.tdb.db, mappingId);
  return row ? mappingView(row) : undefined;
}

t.test('an unanswered or refused push is retried; only an acknowledgement counts as delivered', async (t) => {
  // Short command timeout (no answer = failed push) and a fast reconcile that would re-push any
  // version it thinks undelivered.
  const w = await createWorld(t, { tunnelOpenTimeoutMs: 300, configRetry: FAST_RETRY, reconcileIntervalMs: 100 });
  const user = await w.user();
  const a = await w.client(user);
  const b = await w.client(user);
  const m = await w.mapping({ userId: user, sourceClientId: a.clientId, targetClientId: b.clientId, targetPort: 22, localPort: 2222 });
  const peer = await login(w, b.clientId, b.authCode);

  const first = await nextSync(peer);
  // No answer: the command times out, and the same config comes again.
  const second = await nextSync(peer);
  t.not(second.id, first.id, 'a new command');
  t.equal(second.payload.version, first.payload.version, 'the same version, pushed again');
  // An error answer without outcomes (an agent that could not apply it) is not an acknowledgement either.
  peer.send(PacketType.CommandResp, { id: second.id, ok: false, error: { code: 'TNX_AGENT_CONFIG_FAILED', message: 'boom' } });
  const third = await nextSync(peer);
  t.equal(third.payload.version, first.payload.version);
  t.same(await statusFacts(w, m.mappingId), [], 'nothing reported before an acknowledgement');
  t.match(await apiView(w, m.mappingId), { status: 'pending' });

  ack(peer, third);
  await eventually(async () => (await statusFacts(w, m.mappingId)).length === 1, 'status fact');
  const quiet = await peer.next(600).then((msg) => msg, () => 'nothing');
  t.equal(quiet, 'nothing', 'acknowledged: neither the retry nor the periodic reconcile pushes it again');
  t.match(await statusFacts(w, m.mappingId), [{ role: 'target', status: 'active' }], 'one fact, for the acknowledged outcome');
  peer.close();
});

t.test('a newer config supersedes a scheduled retry and goes out at once', async (t) => {
  // A retry far in the future: anything that arrives soon is the newer config, not the retry.
  const w = await createWorld(t, { configRetry: { minMs: 600_000, maxMs: 600_000 } });
  const user = await w.user();
  const b = await w.client(user);
  const peer = await login(w, b.clientId, b.authCode);
  const first = await nextSync(peer);
  peer.send(PacketType.CommandResp, { id: first.id, ok: false, error: { code: 'TNX_AGENT_CONFIG_FAILED', message: 'boom' } });
  const port = await freePort();
  const m = await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: 9, publicPort: port });
  const next = await nextSync(peer);
  t.ok(next.payload.version > first.payload.version, 'the newer version');
  t.same(next.payload.mappings.map((x) => x.mapping_id), [m.mappingId]);
  ack(peer, next);
  await eventually(async () => (await apiView(w, m.mappingId))?.status === 'active', 'public mapping active once its target acknowledged');
  peer.close();
});

t.test('mapping status through the read model: pending until both agents run it, active, pending again when one leaves', async (t) => {
  const w = await createWorld(t);
  const user = await w.user();
  const a = await w.client(user);
  const b = await w.client(user);
  const localPort = await freePort();
  const m = await w.mapping({ userId: user, sourceClientId: a.clientId, targetClientId: b.clientId, targetPort: 9, localPort });
  t.match(await apiView(w, m.mappingId), { status: 'pending' }, 'no agent connected: pending');
  t.notOk('error' in (await apiView(w, m.mappingId))!, 'no error field unless in error');

  const agentB = w.agent({ clientId: b.clientId, authCode: b.authCode });
  await eventually(async () => (await statusFacts(w, m.mappingId)).some((f) => f.role === 'target'), 'target reported');
  await w.settle((await w.store.readStream(`mapping-status.${m.mappingId}`)).events.at(-1)!.position);
  t.match(await apiView(w, m.mappingId), { status: 'pending' }, 'target running, source agent not connected: still pending');

  const agentA = w.agent({ clientId: a.clientId, authCode: a.authCode });
  await eventually(async () => (await apiView(w, m.mappingId))?.status === 'active', 'active once the source listens too');
  t.equal(agentA.listeningPorts().get(m.mappingId), localPort);

  await agentB.stop();
  await eventually(async () => (await apiView(w, m.mappingId))?.status === 'pending', 'target agent gone: pending');
  const facts = await statusFacts(w, m.mappingId);
  t.same(facts.map((f) => [f.role, f.status]).sort(), [['source', 'active'], ['target', 'active']], 'one fact per side, not one per push');
});

t.test('a local port in use on the agent machine: status error with the reason, active once the port is free', async (t) => {
  const w = await createWorld(t, { configRetry: FAST_RETRY });
  const user = await w.user();
  const a = await w.client(user);
  const b = await w.client(user);
  const localPort = await freePort();
  const squatter = createServer();
  await new Promise<void>((r) => squatter.listen(localPort, '127.0.0.1', r));
  const m = await w.mapping({ userId: user, sourceClientId: a.clientId, targetClientId: b.clientId, targetPort: 9, localPort });
  w.agent({ clientId: b.clientId, authCode: b.authCode });
  const agentA = w.agent({ clientId: a.clientId, authCode: a.authCode });

  const failed = await eventually(async () => {
    const v = await apiView(w, m.mappingId);
    return v?.status === 'error' ? v : undefined;
  }, 'status error');
  t.equal(failed.error, `source: local port ${localPort} in use (127.0.0.1:${localPort}: EADDRINUSE)`, 'says which side and why');
  // The edge keeps retrying the failed mapping (slowly): the same failure is not recorded again.
  await new Promise((r) => setTimeout(r, 500));
  t.equal((await statusFacts(w, m.mappingId)).filter((f) => f.role === 'source').length, 1, 'one fact for a failure that persists across retries');

  await new Promise<void>((r) => squatter.close(() => r()));
  await eventually(async () => (await apiView(w, m.mappingId))?.status === 'active', 'active after the port came free');
  t.notOk('error' in (await apiView(w, m.mappingId))!, 'the error is gone');
  t.equal(agentA.listeningPorts().get(m.mappingId), localPort);
  t.same((await statusFacts(w, m.mappingId)).filter((f) => f.role === 'source').map((f) => f.status), ['error', 'active']);
});

t.test('the agent config queue survives a throwing apply: that push is answered with an error, retried, and later configs apply', async (t) => {
  const w = await createWorld(t, { configRetry: FAST_RETRY });
  const user = await w.user();
  const a = await w.client(user);
  const b = await w.client(user);
  const m1 = await w.mapping({ userId: user, sourceClientId: a.clientId, targetClientId: b.clientId, targetPort: 9, localPort: await freePort() });
  let throws = 1;
  const seen: number[] = [];
  const unhandled: unknown[] = [];
  const onUnhandled = (err: unknown): void => void unhandled.push(err);
  process.on('unhandledRejection', onUnhandled);
  t.teardown(() => void process.off('unhandledRejection', onUnhandled));
  const agentB = w.agent({
    clientId: b.clientId,
    authCode: b.authCode,
    onConfig: (_mappings, version) => {
      seen.push(version);
      if (throws-- > 0) throw new Error('hook exploded');
    },
  });
  await eventually(async () => (await statusFacts(w, m1.mappingId)).length === 1, 'the retried push was acknowledged');
  t.ok(seen.length >= 2 && seen[0] === seen[1], 'the failed config was pushed again and applied');

  const m2 = await w.mapping({ userId: user, sourceClientId: a.clientId, targetClientId: b.clientId, targetPort: 9, localPort: await freePort() });
  await eventually(async () => (await statusFacts(w, m2.mappingId)).length === 1, 'a later config applies too');
  t.equal(agentB.status().connected, true, 'the agent kept its session');
  t.same(unhandled, [], 'no unhandled rejection');
});

t.test('agent error text with NUL, lone surrogates and megabytes of detail is cleaned and bounded before it is recorded', async (t) => {
  const w = await createWorld(t);
  const user = await w.user();
  const b = await w.client(user);
  const port = await freePort();
  const m = await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: 9, publicPort: port });
  const peer = await login(w, b.clientId, b.authCode);
  const sync = await nextSync(peer);
  ack(peer, sync, { [m.mappingId]: `bad\u0000host \ud800 ${'x'.repeat(100_000)}` });
  const v = await eventually(async () => {
    const view = await apiView(w, m.mappingId);
    return view?.status === 'error' ? view : undefined;
  }, 'error recorded');
  t.ok(v.error!.startsWith('target: badhost \ufffd xxx'), 'NUL dropped, lone surrogate replaced');
  t.ok(v.error!.length <= MAX_AGENT_ERROR_CHARS + 'target: '.length, 'bounded');
  peer.close();
});

type DeltaCommand = Extract<Extract<ControlMessage, { type: typeof PacketType.Command }>['body'], { name: 'config.delta' }>;

async function nextCommand(peer: WirePeer): Promise<ConfigSyncCommand | DeltaCommand> {
  const m = await peer.next();
  if (m?.type !== PacketType.Command || (m.body.name !== 'config.sync' && m.body.name !== 'config.delta')) throw new Error(`expected a config push, got ${JSON.stringify(m)}`);
  return m.body;
}

function ackAll(peer: WirePeer, id: string, version: number, mappingIds: number[]): void {
  peer.send(PacketType.CommandResp, { id, ok: true, applied: { version, mappings: mappingIds.map((mapping_id) => ({ mapping_id, role: 'target' as const, ok: true })) } });
}

t.test('after the first full config, changes go out as deltas on the acknowledged version; a refused delta brings the full config', async (t) => {
  const w = await createWorld(t, { configRetry: FAST_RETRY });
  const user = await w.user();
  const b = await w.client(user);
  const m1 = await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: 22, publicPort: await freePort() });
  const m2 = await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: 23, publicPort: await freePort() });
  const peer = await WirePeer.connect(w.edge.controlPort);
  peer.send(PacketType.Handshake, { ...HELLO, client_id: b.clientId, auth_code: b.authCode, features: [AgentFeature.TunnelKey, 'config_delta'] });
  t.match(await peer.next(), { type: PacketType.HandshakeResp, body: { ok: true } });

  const first = await nextCommand(peer);
  t.equal(first.name, 'config.sync', 'a new session starts with the full config');
  t.same(first.name === 'config.sync' && first.payload.mappings.map((m) => m.mapping_id).sort(), [m1.mappingId, m2.mappingId].sort());
  ackAll(peer, first.id, first.payload.version, [m1.mappingId, m2.mappingId]);

  const m3 = await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: 24, publicPort: await freePort() });
  const added = await nextCommand(peer);
  t.equal(added.name, 'config.delta', 'an added mapping goes out as a delta');
  if (added.name !== 'config.delta') return;
  t.equal(added.payload.base_version, first.payload.version, 'on the acknowledged version');
  t.same(added.payload.upsert.map((m) => m.mapping_id), [m3.mappingId], 'carrying only the new mapping');
  t.same(added.payload.remove, []);
  ackAll(peer, added.id, added.payload.version, [m1.mappingId, m2.mappingId, m3.mappingId]);

  await w.deleteMapping(m1.mappingId);
  const removed = await nextCommand(peer);
  t.equal(removed.name, 'config.delta', 'a deleted mapping goes out as a delta');
  if (removed.name !== 'config.delta') return;
  t.equal(removed.payload.base_version, added.payload.version, 'on the newest acknowledged version');
  t.same(removed.payload.remove, [{ mapping_id: m1.mappingId, role: 'target' }], 'dropping only that side');
  t.same(removed.payload.upsert, []);
  // This agent holds something else (say it lost its state): it refuses, and gets the whole config.
  peer.send(PacketType.CommandResp, { id: removed.id, ok: false, error: { code: 'TNX_AGENT_CONFIG_BASE', message: 'other base' } });
  const full = await nextCommand(peer);
  t.equal(full.name, 'config.sync', 'a refused delta is followed by the full config');
  t.same(full.name === 'config.sync' && full.payload.mappings.map((m) => m.mapping_id).sort(), [m2.mappingId, m3.mappingId].sort());
  t.equal(full.payload.version, removed.payload.version, 'of the same version');
  peer.close();
});

t.test('an agent that did not declare config_delta only ever gets full configs', async (t) => {
  const w = await createWorld(t);
  const user = await w.user();
  const b = await w.client(user);
  const m1 = await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: 22, publicPort: await freePort() });
  await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: 23, publicPort: await freePort() });
  const peer = await login(w, b.clientId, b.authCode);
  const first = await nextSync(peer);
  ack(peer, first);
  await w.deleteMapping(m1.mappingId);
  const next = await nextSync(peer);
  t.equal(next.payload.mappings.length, 1, 'the full config, without the deleted mapping');
  peer.close();
});

t.test('the agent applies deltas: its listeners follow additions and deletions exactly', async (t) => {
  const w = await createWorld(t);
  const user = await w.user();
  const a = await w.client(user);
  const b = await w.client(user);
  const agent = w.agent({ clientId: a.clientId, authCode: a.authCode });
  const ports = [await freePort(), await freePort(), await freePort(), await freePort()];
  const ids: number[] = [];
  const listening = () => [...agent.listeningPorts().values()].sort((x, y) => x - y);
  for (const p of ports) {
    ids.push((await w.mapping({ userId: user, sourceClientId: a.clientId, targetClientId: b.clientId, targetPort: 22, localPort: p })).mappingId);
    const want = ports.slice(0, ids.length).sort((x, y) => x - y);
    await eventually(() => JSON.stringify(listening()) === JSON.stringify(want), `listening on ${want.join(',')}`);
  }
  t.same(listening(), [...ports].sort((x, y) => x - y), 'four mappings added one by one: four listeners');
  await w.deleteMapping(ids[1]!);
  const rest = [ports[0]!, ports[2]!, ports[3]!].sort((x, y) => x - y);
  await eventually(() => JSON.stringify(listening()) === JSON.stringify(rest), 'one listener fewer');
  t.same(listening(), rest, 'a deletion closes exactly that listener');
  t.notOk(await canConnect(ports[1]!), 'its port is closed');
});

import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import t from 'tap';
import { stripStoredSecrets } from '../../migrations/0006_derived_mapping_secrets.js';
import { rebuildAndCompare } from '../../services/projector/shadow.js';
import { buildEnvelope } from '../../shared/eventstore/command.js';
import type { Db } from '../../shared/db/connect.js';
import { silentLogger } from '../../shared/platform/logger.js';
import { rawAppend } from '../../shared/testkit/raw-append.js';
import { PacketType } from '../../shared/wire/packets.js';
import { newNonce } from '../../shared/wire/proof.js';
import type { AgentMapping } from '../../services/client/index.js';
import { createWorld, eventually, freePort, login, META, sha, startTargetService, tunnelOpenFrame, visit, WirePeer, type World } from './world.js';

/**
 * A log written by a release that stored mapping secrets (MappingCreated schema version 1, with
 * `secret_key`) still replays; the stored secret opens nothing any more (agents are pushed the
 * derived one and tunnels work with it); the one-off rewrite (migration 0006's stripStoredSecrets)
 * leaves no trace of the secret in the log, and tunnels keep working.
 */

const MAPPING = 5001;

/** Every read-model row as text. */
async function readModelText(db: Db): Promise<string> {
  const rows: string[] = [];
  for (const table of ['mappings', 'clients', 'users', 'state_outbox', 'projection_checkpoints']) {
    const r = await sql<{ t: string }>`select row_to_json(x)::text as t from ${sql.table(table)} x`.execute(db);
    rows.push(...r.rows.map((x) => x.t));
  }
  return rows.join('\n');
}

/** Every stored envelope and read-model row as text. */
async function everything(db: Db): Promise<string> {
  const events = await sql<{ t: string }>`select envelope::text as t from tnx_events order by position`.execute(db);
  return events.rows.map((r) => r.t).join('\n') + '\n' + (await readModelText(db));
}

function traces(text: string, secretHex: string): string[] {
  const bytes = Buffer.from(secretHex, 'hex');
  const forms = { hex: secretHex, HEX: secretHex.toUpperCase(), base64: bytes.toString('base64'), base64url: bytes.toString('base64url') };
  return Object.entries(forms).filter(([, v]) => text.includes(v)).map(([k]) => k);
}

async function openWith(w: World, mappingId: number, clientId: number, authCode: string, secret: string) {
  const peer = await login(w, clientId, authCode);
  const session = peer.session!;
  const tunnel = await WirePeer.connect(w.edge.controlPort);
  tunnel.send(PacketType.TunnelOpen, tunnelOpenFrame({ mapping_id: mappingId, tunnel_id: newNonce(), role: 'source', client_id: clientId }, { secret, session }));
  const ack = await tunnel.next();
  tunnel.close();
  peer.close();
  await eventually(() => w.edge.stats().sessions === 0, 'raw session closed');
  return ack;
}

t.test('a legacy MappingCreated v1 replays, its stored secret opens nothing, and after the rewrite no trace of it remains', async (t) => {
  const w = await createWorld(t);
  const service = await startTargetService(t, 'reverse');
  const user = await w.user();
  const a = await w.client(user);
  const b = await w.client(user);
  const localPort = await freePort();
  const stored = randomBytes(32).toString('hex');

  // Written the way earlier releases did: schema version 1, the random secret in the payload.
  const envelope = buildEnvelope(
    `mapping.${MAPPING}`,
    {
      type: 'MappingCreated',
      data: {
        mapping_id: MAPPING, user_id: user, protocol: 'tcp', source_client_id: a.clientId, target_client_id: b.clientId,
        target_host: '127.0.0.1', target_port: service.port, local_host: '127.0.0.1', local_port: localPort, public_port: null,
        enabled: true, secret_generation: 1,
      },
    },
    META,
  );
  const { secret_generation: _generation, ...v1 } = envelope.data as Record<string, unknown>;
  const legacy = { ...envelope, schema_version: 1, data: { ...v1, secret_key: stored } };
  const position = await rawAppend({ kind: 'postgres', db: w.tdb.db }, `mapping.${MAPPING}`, legacy);
  await w.settle(position);

  const row = await w.tdb.db.selectFrom('mappings').selectAll().where('mapping_id', '=', MAPPING).executeTakeFirstOrThrow();
  t.equal(row.secret_generation, 1, 'projected at generation 1');
  t.same(traces(await everything(w.tdb.db), stored), ['hex'], 'before the rewrite the secret is in the log (the scan finds it)');
  t.same(traces(await readModelText(w.tdb.db), stored), [], 'but in no read-model row');

  const derived = await w.secretOf(MAPPING);
  t.not(derived, stored);
  t.match(await openWith(w, MAPPING, a.clientId, a.authCode, stored), { type: PacketType.TunnelOpenAck, body: { ok: false, error: { code: 'TNX_TUNNEL_REFUSED' } } }, 'the stored secret opens nothing');
  t.match(
    await openWith(w, MAPPING, a.clientId, a.authCode, derived),
    { type: PacketType.TunnelOpenAck, body: { ok: false, error: { code: 'TNX_TUNNEL_TARGET_OFFLINE' } } },
    'the derived one is accepted (refused only because the target is offline)',
  );

  const pushed: AgentMapping[][] = [];
  const agentA = w.agent({ clientId: a.clientId, authCode: a.authCode, onConfig: (m) => pushed.push(m) });
  const targetConfigs: AgentMapping[][] = [];
  w.agent({ clientId: b.clientId, authCode: b.authCode, onConfig: (m) => targetConfigs.push(m) });
  await eventually(() => agentA.listeningPorts().get(MAPPING) === localPort, 'source listener');
  await eventually(() => targetConfigs.some((c) => c.some((m) => m.mapping_id === MAPPING)), 'target config');
  t.equal(pushed.at(-1)?.find((m) => m.mapping_id === MAPPING)?.secret_key, derived, 'the agent is pushed the derived secret');
  const payload = randomBytes(256 * 1024 + 3);
  const got = await visit(localPort, payload);
  t.equal(sha(service.received[0]!), sha(payload), 'a tunnel works with the derived secret (visitor to service)');
  t.equal(sha(got), sha(Buffer.from(payload).reverse()), 'and back');

  // The one-off rewrite (what migration 0006 runs at upgrade).
  t.equal(await stripStoredSecrets(w.tdb.db), 1, 'one event rewritten');
  t.equal(await stripStoredSecrets(w.tdb.db), 0, 'idempotent');
  t.same(traces(await everything(w.tdb.db), stored), [], 'no trace of the secret in the log or the read models');
  t.notOk((await everything(w.tdb.db)).includes('secret_key'), 'no secret_key anywhere');
  const [rewritten] = (await w.store.readStream(`mapping.${MAPPING}`)).events;
  t.match(rewritten, { id: envelope.id, position, version: 1, schema_version: 2, data: { mapping_id: MAPPING, secret_generation: 1, local_port: localPort } }, 'same id, position and version; version 2 payload');
  const verify = await rebuildAndCompare({ store: w.store, db: w.tdb.db, logger: silentLogger(), swap: false });
  t.ok(verify.identical, 'a rebuild from the rewritten log matches the read models');

  // A restarted edge (a fresh view) still derives the same secret: tunnels keep working.
  await w.restartEdge('node-002');
  await eventually(async () => (await visit(localPort, Buffer.from('ping')).catch(() => Buffer.alloc(0))).length === 4, 'tunnel after the edge restart');
  const again = randomBytes(64 * 1024);
  t.equal(sha(await visit(localPort, again)), sha(Buffer.from(again).reverse()), 'byte-exact after the rewrite and a restart');
});

import { jetstreamManager } from '@nats-io/jetstream';
import type { Test } from 'tap';
import { createMemoryBus } from '../../shared/bus/memory.js';
import { createStatePublisher, stateStreamName, stateSubject, type StatePublisher } from '../../shared/bus/state.js';
import type { Db } from '../../shared/db/connect.js';
import {
  createManagedClient,
  deleteClient,
  disableClient,
  enableClient,
  kickClient,
  recordClientConnected,
  recordClientDisconnected,
  registerAnonymousClient,
  renameClient,
  rotateClientAuthCode,
} from '../../shared/domain/client/client.commands.js';
import { createApiKey, revokeApiKey } from '../../shared/domain/apikey/apikey.commands.js';
import { TIERS } from '../../shared/domain/account/account.decider.js';
import { setQuota } from '../../shared/domain/account/account.commands.js';
import { deleteUserAndEverything } from '../../shared/domain/cascades.js';
import { createMapping, deleteMapping, recordMappingAgentStatus, rotateMappingSecret, updateMapping } from '../../shared/domain/mapping/mapping.commands.js';
import { createUser, updateUser } from '../../shared/domain/user/user.commands.js';
import { openJetStreamEventStore } from '../../shared/eventstore/jetstream.js';
import { PostgresEventStore } from '../../shared/eventstore/postgres.js';
import type { EventStore } from '../../shared/eventstore/types.js';
import { TunnoxError } from '../../shared/platform/errors.js';
import { silentLogger } from '../../shared/platform/logger.js';
import { hashSecret } from '../../shared/platform/secrets.js';
import { createTestNats, type TestNats } from '../../shared/testkit/nats.js';
import { createTestDatabase } from '../../shared/testkit/pg.js';
import { ctlRebuild } from '../../services/cli/ctl-rebuild.js';
import { READ_MODEL_PROJECTION, startProjector, type RunningProjector } from '../../services/projector/index.js';
import { checkpointOf, eventually } from '../../services/projector/test/fixtures.js';

/**
 * `tunnox ctl projections rebuild --verify / --swap` after 2000 randomized commands (four seeded
 * sequences run concurrently), on the PostgreSQL log and on JetStream, with the live projector
 * having folded them one by one as they came.
 */

const SEED = Number(process.env.TUNNOX_REBUILD_SEED ?? 20261203);
const COMMANDS = 2000;
const RANGE = { min: 35000, max: 35999 };

/** mulberry32: a small deterministic PRNG, so a failing sequence can be replayed from its seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

interface Harness {
  store: EventStore;
  db: Db;
  nats: TestNats | null;
  projector: RunningProjector;
}

async function harness(t: Test, kind: 'postgres' | 'jetstream'): Promise<Harness> {
  const tdb = await createTestDatabase('tnx_rebuild');
  const bus = createMemoryBus();
  let store: EventStore;
  let nats: TestNats | null = null;
  let statePublisher: StatePublisher | undefined;
  if (kind === 'postgres') {
    store = new PostgresEventStore({ db: tdb.db, pool: tdb.pool, pollIntervalMs: 50 });
  } else {
    nats = await createTestNats();
    store = await openJetStreamEventStore({ nc: nats.nc, streamName: nats.streamName, subjectPrefix: nats.subjectPrefix });
    statePublisher = await createStatePublisher({ nc: nats.nc, stream: stateStreamName(nats.streamName), prefix: nats.subjectPrefix });
  }
  const projector = await startProjector({ store, db: tdb.db, bus, logger: silentLogger(), ...(statePublisher ? { statePublisher } : {}) });
  t.teardown(async () => {
    await projector.stop();
    await store.close();
    await bus.close();
    await nats?.cleanup();
    await tdb.drop();
  });
  return { store, db: tdb.db, nats, projector };
}

/** Runs `count` random commands (refusals by domain rules included); returns how many succeeded. */
async function randomCommands(store: EventStore, count: number, seed: number): Promise<{ ok: number; refused: number }> {
  const rnd = prng(seed);
  const pick = <T>(xs: readonly T[]): T | undefined => (xs.length === 0 ? undefined : xs[Math.floor(rnd() * xs.length)]);
  const meta = { actor: { kind: 'api_key' as const, id: 'random' } };
  const edge = { actor: { kind: 'node' as const, id: 'node-001' } };
  const anonHash = await hashSecret('tnxc_anonymous-for-the-test');
  const users: number[] = [];
  const clientsOf = new Map<number, number[]>();
  const clients: number[] = [];
  const mappings: Array<{ id: number; source: number | null; target: number }> = [];
  const sessions = new Map<number, string>();
  const apiKeys: string[] = [];
  let ok = 0;
  let refused = 0;
  let n = 0;
  const ops: Array<[number, () => Promise<unknown> | undefined]> = [
    [3, () => createUser(store, { username: `u${seed}-${n}`, email: `u${n}@example.test` }, meta).then((r) => users.push(r.userId))],
    [7, () => {
      const userId = pick(users);
      if (userId === undefined) return undefined;
      return createManagedClient(store, { userId, clientName: `c${n}` }, meta).then((r) => {
        clients.push(r.clientId);
        clientsOf.set(userId, [...(clientsOf.get(userId) ?? []), r.clientId]);
      });
    }],
    [3, () => registerAnonymousClient(store, { authCodeHash: anonHash }, meta).then((r) => clients.push(r.clientId))],
    [14, () => {
      const userId = pick([...clientsOf.keys()]);
      const own = userId === undefined ? [] : (clientsOf.get(userId) ?? []);
      const target = pick(own);
      if (userId === undefined || target === undefined) return undefined;
      const source = rnd() < 0.6 ? pick(own.filter((c) => c !== target)) : undefined;
      return createMapping(
        store,
        {
          userId, protocol: 'tcp', targetClientId: target, targetHost: '127.0.0.1', targetPort: 1 + Math.floor(rnd() * 65535),
          ...(source === undefined ? {} : { sourceClientId: source, localPort: 10000 + Math.floor(rnd() * 50) }),
          publicPortRange: RANGE,
        },
        meta,
      ).then((r) => mappings.push({ id: r.mappingId, source: source ?? null, target }));
    }],
    [6, () => {
      const m = pick(mappings);
      return m && deleteMapping(store, { mappingId: m.id }, meta);
    }],
    [2, () => {
      const m = pick(mappings);
      return m && rotateMappingSecret(store, { mappingId: m.id }, meta);
    }],
    [6, () => { const c = pick(clients); return c === undefined ? undefined : disableClient(store, { clientId: c }, meta); }],
    [5, () => { const c = pick(clients); return c === undefined ? undefined : enableClient(store, { clientId: c }, meta); }],
    [3, () => { const c = pick(clients); return c === undefined ? undefined : kickClient(store, { clientId: c }, meta); }],
    [2, () => { const c = pick(clients); return c === undefined ? undefined : deleteClient(store, { clientId: c }, meta); }],
    [1, () => { const c = pick(clients); return c === undefined ? undefined : rotateClientAuthCode(store, { clientId: c }, meta); }],
    [2, () => { const c = pick(clients); return c === undefined ? undefined : renameClient(store, { clientId: c, clientName: `r${n}` }, meta); }],
    [2, () => {
      const userId = pick(users);
      if (userId === undefined) return undefined;
      return updateUser(store, { userId, ...(rnd() < 0.5 ? { username: `n${seed}-${n}` } : { email: `e${n}@example.test` }) }, meta);
    }],
    [1, () => {
      const userId = pick(users);
      if (userId === undefined) return undefined;
      const tier = pick(['free', 'pro', 'unlimited'] as const)!;
      return setQuota(store, { userId, quota: TIERS[tier] }, meta);
    }],
    [1, () => {
      // Rare: a whole user with its clients and mappings, as cascades.
      if (rnd() < 0.5) return undefined;
      const userId = pick(users);
      return userId === undefined ? undefined : deleteUserAndEverything(store, { userId }, meta);
    }],
    [18, () => {
      const c = pick(clients);
      if (c === undefined) return undefined;
      const current = sessions.get(c);
      if (current && rnd() < 0.6) {
        sessions.delete(c);
        return recordClientDisconnected(store, { clientId: c, nodeId: 'node-001', sessionId: current, reason: 'closed' }, edge);
      }
      const sessionId = `s${n}`;
      sessions.set(c, sessionId);
      return recordClientConnected(store, { clientId: c, nodeId: `node-00${1 + Math.floor(rnd() * 3)}`, sessionId, remoteAddr: '127.0.0.1:1' }, edge);
    }],
    [14, () => {
      const m = pick(mappings);
      if (!m) return undefined;
      const role = m.source !== null && rnd() < 0.5 ? 'source' : 'target';
      const clientId = role === 'source' ? m.source! : m.target;
      const status = rnd() < 0.7 ? 'active' : 'error';
      return recordMappingAgentStatus(
        store,
        {
          mapping_id: m.id, client_id: clientId, role, status, ...(status === 'error' ? { error: `failure ${n}` } : {}),
          config_version: n, node_id: 'node-001', session_id: sessions.get(clientId) ?? `s-none-${clientId}`,
        },
        edge,
      );
    }],
    [3, () => {
      const m = pick(mappings);
      return m && updateMapping(store, { mappingId: m.id, enabled: rnd() < 0.6, ...(rnd() < 0.5 ? { targetPort: 1 + Math.floor(rnd() * 65535) } : {}) }, meta);
    }],
    [1, () => createApiKey(store, { name: `key ${n}` }, meta).then((k) => apiKeys.push(k.keyId))],
    [1, () => { const k = pick(apiKeys); return k === undefined ? undefined : revokeApiKey(store, { keyId: k, reason: `r${n}` }, meta); }],
  ];
  const total = ops.reduce((s, [w]) => s + w, 0);
  for (n = 0; n < count; n++) {
    let r = rnd() * total;
    const op = ops.find(([w]) => (r -= w) < 0)![1];
    try {
      const p = op() ?? createUser(store, { username: `u${seed}-${n}`, email: `u${n}@example.test` }, meta).then((u) => users.push(u.userId));
      await p;
      ok++;
    } catch (err) {
      // Refusals by the domain's rules (a taken local port, a deleted client...) are commands too.
      if (!(err instanceof TunnoxError)) throw err;
      refused++;
    }
  }
  return { ok, refused };
}

async function caughtUp(h: Harness): Promise<number> {
  const head = await h.store.headPosition();
  const reached = await eventually(async () => ((await checkpointOf(h.db, READ_MODEL_PROJECTION)) ?? 0) >= head, 180_000, 50);
  if (!reached) throw new Error(`the projector did not reach ${head}`);
  return head;
}

/** The two tests, for one kind of event store (one file per kind, so tap runs them side by side). */
export function rebuildVerifySuite(t: Test, kind: 'postgres' | 'jetstream'): void {
  t.test(`${kind}: ${COMMANDS} random commands (4 × ${COMMANDS / 4} concurrently), then verify, corrupt one row, verify, swap (seed ${SEED})`, async (t) => {
    const h = await harness(t, kind);
    const started = Date.now();
    // Four concurrent clients of the domain, each with its own seed and its own users (and all of
    // them competing for the public port range): interleavings a single sequence never has.
    const runs = await Promise.all([0, 1, 2, 3].map((i) => randomCommands(h.store, COMMANDS / 4, SEED * 10 + i)));
    const ok = runs.reduce((n, r) => n + r.ok, 0);
    const refused = runs.reduce((n, r) => n + r.refused, 0);
    t.comment(`commands: ${Date.now() - started} ms`);
    t.equal(ok + refused, COMMANDS);
    t.ok(ok > COMMANDS / 2, `${ok} succeeded, ${refused} refused by domain rules`);
    const head = await caughtUp(h);
    const events = (await h.store.readAll(0, 1_000_000)).length;
    const cluster = h.nats ? { nc: h.nats.nc, streamName: h.nats.streamName, subjectPrefix: h.nats.subjectPrefix } : undefined;
    const rebuild = (swap: boolean) => ctlRebuild({ store: h.store, db: h.db, logger: silentLogger(), swap, ...(cluster ? { cluster } : {}) });

    t.comment(`caught up: ${Date.now() - started} ms`);
    const clean = await rebuild(false);
    t.comment(`verified: ${Date.now() - started} ms`);
    t.equal(clean.identical, true, 'the rebuild equals what the live projector built');
    t.same(clean.differences, []);
    t.equal(clean.position, head);
    t.equal(clean.events, events, 'every event replayed');
    const rows = Object.fromEntries(clean.tables.map((r) => [r.table, r.live_rows]));
    t.ok(rows['users']! > 50 && rows['clients']! > 50 && rows['mappings']! > 20, `rows: ${JSON.stringify(rows)}`);
    t.same(
      (await h.db.selectFrom('information_schema.schemata' as never).select('schema_name' as never).where('schema_name' as never, '=', 'tnx_rebuild' as never).execute()),
      [],
      'the shadow schema is dropped afterwards',
    );

    // Corrupt one live row: a mapping whose last change is not the log's last event.
    const victim = await h.db.selectFrom('mappings').select(['mapping_id', 'target_port']).orderBy('mapping_id').executeTakeFirstOrThrow();
    const corrupt = victim.target_port === 65535 ? 1 : victim.target_port + 1;
    await h.db.updateTable('mappings').set({ target_port: corrupt }).where('mapping_id', '=', victim.mapping_id).execute();
    const dirty = await rebuild(false);
    t.equal(dirty.identical, false);
    t.same(dirty.differences, [{ table: 'mappings', key: { mapping_id: victim.mapping_id }, kind: 'changed', columns: [{ column: 'target_port', live: corrupt, rebuilt: victim.target_port }] }], 'exactly that row and column');
    t.same(dirty.tables.map((r) => [r.table, r.differing_rows]), [['mappings', 1], ['clients', 0], ['users', 0], ['api_keys', 0]]);
    t.equal(dirty.swapped, null, 'verify changes nothing');
    t.equal((await h.db.selectFrom('mappings').select('target_port').where('mapping_id', '=', victim.mapping_id).executeTakeFirstOrThrow()).target_port, corrupt);

    const swapped = await rebuild(true);
    t.same(swapped.swapped, { deleted: 1, inserted: 1, tables: ['mappings'] }, 'only the differing row replaced');
    t.same(swapped.changed_entities, { clients: [], mappings: [victim.mapping_id] });
    t.equal((await h.db.selectFrom('mappings').select('target_port').where('mapping_id', '=', victim.mapping_id).executeTakeFirstOrThrow()).target_port, victim.target_port);
    t.equal(await checkpointOf(h.db, READ_MODEL_PROJECTION), head, 'the checkpoint is where the swapped tables are');
    t.equal((await rebuild(false)).identical, true, 'identical again');
    if (h.nats) {
      t.equal(swapped.published, 1, "the fixed mapping's state went to the edges' state stream");
      const jsm = await jetstreamManager(h.nats.nc);
      const msg = await jsm.streams.getMessage(stateStreamName(h.nats.streamName), { last_by_subj: stateSubject(h.nats.subjectPrefix, 'mapping', victim.mapping_id) });
      t.match(msg?.json(), { kind: 'mapping', id: victim.mapping_id, state: { target_port: victim.target_port } });
      t.equal(await h.db.selectFrom('state_outbox').select('id').execute().then((r) => r.length), 0, 'the outbox is empty again');
    }
  });

  t.test(`${kind}: verify and swap next to a running projector and a stream of commands`, async (t) => {
    const h = await harness(t, kind);
    await randomCommands(h.store, 150, SEED + 1);
    await caughtUp(h);
    // An extra live row no event explains, and a changed one.
    await h.db.insertInto('users').values({ user_id: 999_999_999, username: 'ghost', email: 'ghost@example.test', status: 'active', version: 1, created_at: new Date(), updated_at: new Date() }).execute();
    const c = await h.db.selectFrom('clients').select(['client_id']).where('deleted_at', 'is', null).orderBy('client_id').executeTakeFirstOrThrow();
    await h.db.updateTable('clients').set({ client_name: 'tampered', auth_code_hash: 'scrypt$tampered' }).where('client_id', '=', c.client_id).execute();

    // Commands keep coming while the rebuild runs; the live projector keeps folding them.
    let stop = false;
    const background = (async () => {
      let seed = SEED + 2;
      while (!stop) await randomCommands(h.store, 20, seed++);
    })();
    const report = await ctlRebuild({ store: h.store, db: h.db, logger: silentLogger(), swap: true });
    stop = true;
    await background;
    t.same(
      report.differences.map((d) => [d.table, d.key, d.kind, d.columns?.map((x) => [x.column, x.live, x.rebuilt])]),
      [
        ['clients', { client_id: c.client_id }, 'changed', [['client_name', 'tampered', report.differences[0]!.columns![0]!.rebuilt], ['auth_code_hash', '[redacted]', '[redacted]']]],
        ['users', { user_id: 999_999_999 }, 'only_live', undefined],
      ],
      'both found, at the checkpoint the swap held; a hash is reported as differing, never shown',
    );
    t.ok(report.swapped && report.swapped.deleted === 2 && report.swapped.inserted === 1, JSON.stringify(report.swapped));
    await caughtUp(h);
    t.equal(h.projector.position, await h.store.headPosition(), 'the running projector went on after the swap');
    const after = await ctlRebuild({ store: h.store, db: h.db, logger: silentLogger(), swap: false });
    t.equal(after.identical, true, 'what the projector added after the swap fits the swapped tables');
  });
}

import type { TAP } from 'tap';
import type { ChangeBus, ChangeNotice } from '../../../shared/contracts/notices.js';
import type { DomainEvent } from '../../../shared/contracts/events.js';
import type { Db } from '../../../shared/db/connect.js';
import type { EventStore } from '../../../shared/eventstore/types.js';
import { silentLogger } from '../../../shared/platform/logger.js';
import type { RawLog } from '../../../shared/testkit/raw-append.js';
import { BadEventError, ProjectionHaltedError } from '../errors.js';
import { READ_MODEL_PROJECTION, rebuildReadModels, startProjector, type RunningProjector } from '../index.js';
import {
  ANON,
  CLIENT_A,
  CLIENT_B,
  PRIVATE_MAPPING,
  PUBLIC_MAPPING,
  PUBLIC_PORT,
  SECRET,
  USER,
  append,
  appendRaw,
  appendScenario,
  at,
  captureLogs,
  checkpointOf,
  clientRegistered,
  connected,
  disconnected,
  dumpReadModels,
  eventually,
  mappingCreated,
  untilCheckpoint,
  type Scenario,
} from './fixtures.js';

/** A real event store + read-model database + bus, torn down by the test that made it. */
export interface Harness {
  store: EventStore;
  /** The store's own log, for writing poison past its append guard (shared/testkit/raw-append.ts). */
  raw: RawLog;
  db: Db;
  bus: ChangeBus;
}

export type HarnessFactory = (teardown: (fn: () => Promise<void>) => void) => Promise<Harness>;

export interface SuiteOptions {
  /**
   * Include the test running two projectors of the same name side by side. It needs a store whose
   * subscriptions each deliver every event (PostgreSQL); a JetStream durable consumer is shared by
   * same-name subscribers instead, which is not a supported deployment (one projector per name).
   */
  concurrentSameName?: boolean;
}

function collect(bus: ChangeBus): ChangeNotice[] {
  const seen: ChangeNotice[] = [];
  bus.subscribe((n) => seen.push(n));
  return seen;
}

async function start(h: Harness, teardown: (fn: () => Promise<void>) => void, extra: { name?: string; onHalt?: (e: ProjectionHaltedError) => void; logger?: ReturnType<typeof silentLogger> } = {}): Promise<RunningProjector> {
  const p = await startProjector({ store: h.store, db: h.db, bus: h.bus, logger: extra.logger ?? silentLogger(), ...extra });
  teardown(() => p.stop());
  return p;
}

function expectedNotices(s: Scenario, positions: readonly number[]): ChangeNotice[] {
  const byPosition = new Map<number, ChangeNotice[]>([
    [s.privateMapping, [
      { kind: 'client-config', clientId: CLIENT_A, version: s.privateMapping },
      { kind: 'client-config', clientId: CLIENT_B, version: s.privateMapping },
    ]],
    [s.publicMapping, [
      { kind: 'client-config', clientId: CLIENT_B, version: s.publicMapping },
      { kind: 'public-mappings', version: s.publicMapping },
    ]],
    [s.privateDeleted, [
      { kind: 'client-config', clientId: CLIENT_A, version: s.privateDeleted },
      { kind: 'client-config', clientId: CLIENT_B, version: s.privateDeleted },
    ]],
  ]);
  return positions.flatMap((p) => [...(byPosition.get(p) ?? []), { kind: 'projection', name: READ_MODEL_PROJECTION, position: p }]);
}

function scenarioPositions(s: Scenario): number[] {
  return [s.idAllocated, s.userCreated, s.clientA, s.clientB, s.anon, s.connectA, s.privateMapping, s.portReserved, s.publicMapping, s.privateDeleted, s.disconnectA, s.connectB];
}

const NO_REPORTS = { source_status: null, source_error: null, source_session_id: null, target_status: null, target_error: null, target_session_id: null };

function reported(mappingId: number, clientId: number, role: 'source' | 'target', sessionId: string, error?: string): DomainEvent {
  return {
    type: 'MappingAgentStatusReported',
    data: {
      mapping_id: mappingId, client_id: clientId, role, status: error === undefined ? 'active' : 'error',
      ...(error === undefined ? {} : { error }), config_version: 7, node_id: 'node-001', session_id: sessionId,
    },
  };
}

/** The one assertion assertScenarioRows needs, so it can take any tap test object. */
interface Same {
  same(found: unknown, wanted: unknown, message: string): boolean;
}

async function assertScenarioRows(t: Same, db: Db, s: Scenario): Promise<void> {
  const users = await db.selectFrom('users').selectAll().orderBy('user_id').execute();
  t.same(users, [{
    user_id: USER, username: 'alice', email: 'alice@example.test', status: 'active', version: 1,
    created_at: at(1), updated_at: at(1),
  }], 'users');

  const clients = await db.selectFrom('clients').selectAll().orderBy('client_id').execute();
  const client = (id: number, created: number) => ({
    client_id: id, client_type: 'managed', user_id: USER, client_name: `client-${id}`,
    auth_code_hash: `scrypt$16384$8$1$salt$${id}`, version: 1, created_at: at(created), updated_at: at(created),
    enabled: true, auth_epoch: 0, deleted_at: null,
  });
  t.same(clients, [
    { ...client(ANON, 4), client_type: 'anonymous', user_id: null, status: 'offline', node_id: null, session_id: null, last_seen_at: null, config_version: s.anon },
    { ...client(CLIENT_A, 2), status: 'offline', node_id: null, session_id: null, last_seen_at: at(10), config_version: s.privateDeleted },
    { ...client(CLIENT_B, 3), status: 'online', node_id: 'node-002', session_id: 'sess-b1', last_seen_at: at(11), config_version: s.privateDeleted },
  ], 'clients: online state follows sessions, config_version follows mapping changes');

  const mappings = await db.selectFrom('mappings').selectAll().orderBy('mapping_id').execute();
  t.same(mappings, [{
    mapping_id: PUBLIC_MAPPING, user_id: USER, protocol: 'tcp', source_client_id: null, target_client_id: CLIENT_B,
    target_host: '127.0.0.1', target_port: 8080, local_host: null, local_port: null, public_port: PUBLIC_PORT,
    secret_generation: 1, idle_timeout: null, max_connections: null, max_pending_opens: null,
    enabled: false, status: 'disabled', error: null, ...NO_REPORTS, version: 1, created_at: at(8), updated_at: at(8),
  }], 'mappings: the deleted one is gone, the disabled public one remains');
}

export function projectorSuite(tap: TAP, makeHarness: HarnessFactory, opts: SuiteOptions = {}): void {
  tap.test('projects every event type into the read models and publishes notices after each commit', async (t) => {
    const h = await makeHarness((fn) => t.teardown(fn));
    const notices = collect(h.bus);
    const s = await appendScenario(h.store);
    const p = await start(h, (fn) => t.teardown(fn));
    t.ok(await untilCheckpoint(h.db, READ_MODEL_PROJECTION, s.last), 'checkpoint reaches the last event');
    t.equal(p.position, s.last, 'running projector reports the checkpoint');
    t.equal(p.name, READ_MODEL_PROJECTION);
    await assertScenarioRows(t, h.db, s);
    t.ok(await eventually(() => notices.some((n) => n.kind === 'projection' && n.position === s.last)), 'last notice arrives');
    t.same(notices, expectedNotices(s, scenarioPositions(s)), 'client-config, public-mappings and projection notices, in commit order');
  });

  tap.test('a replaced session stays online when the old session disconnects late', async (t) => {
    const h = await makeHarness((fn) => t.teardown(fn));
    await append(h.store, `client.${CLIENT_A}`, clientRegistered(CLIENT_A), at(0));
    await append(h.store, `client-session.${CLIENT_A}`, connected(CLIENT_A, 's1', 'node-001'), at(1));
    await append(h.store, `client-session.${CLIENT_A}`, connected(CLIENT_A, 's2', 'node-002'), at(2));
    const late = await append(h.store, `client-session.${CLIENT_A}`, disconnected(CLIENT_A, 's1', 'node-001'), at(3));
    await start(h, (fn) => t.teardown(fn));
    t.ok(await untilCheckpoint(h.db, READ_MODEL_PROJECTION, late));
    const row = await h.db.selectFrom('clients').select(['status', 'node_id', 'session_id', 'last_seen_at']).where('client_id', '=', CLIENT_A).executeTakeFirstOrThrow();
    t.same(row, { status: 'online', node_id: 'node-002', session_id: 's2', last_seen_at: at(2) }, 'still online with s2');

    const end = await append(h.store, `client-session.${CLIENT_A}`, disconnected(CLIENT_A, 's2', 'node-002'), at(4));
    t.ok(await untilCheckpoint(h.db, READ_MODEL_PROJECTION, end));
    const after = await h.db.selectFrom('clients').select(['status', 'node_id', 'session_id', 'last_seen_at']).where('client_id', '=', CLIENT_A).executeTakeFirstOrThrow();
    t.same(after, { status: 'offline', node_id: null, session_id: null, last_seen_at: at(4) }, 'the current session disconnecting takes it offline');
  });

  tap.test('agent reports fold into status: pending until both sides report, error names the side, a session end makes its side pending', async (t) => {
    const h = await makeHarness((fn) => t.teardown(fn));
    const logs = captureLogs();
    let halted: ProjectionHaltedError | null = null;
    await start(h, (fn) => t.teardown(fn), { logger: logs.logger, onHalt: (e) => (halted = e) });
    const statusOf = async (position: number, mappingId = PRIVATE_MAPPING) => {
      t.ok(await untilCheckpoint(h.db, READ_MODEL_PROJECTION, position));
      return h.db.selectFrom('mappings').select(['status', 'error', 'source_status', 'target_status']).where('mapping_id', '=', mappingId).executeTakeFirst();
    };
    const stream = `mapping-status.${PRIVATE_MAPPING}`;
    let p = await append(h.store, `mapping.${PRIVATE_MAPPING}`, mappingCreated(PRIVATE_MAPPING), at(0));
    t.same(await statusOf(p), { status: 'pending', error: null, source_status: null, target_status: null }, 'new: pending');
    p = await append(h.store, stream, reported(PRIVATE_MAPPING, CLIENT_B, 'target', 'sb1'), at(1));
    t.match(await statusOf(p), { status: 'pending', target_status: 'active' }, 'target alone is not enough');
    p = await append(h.store, stream, reported(PRIVATE_MAPPING, CLIENT_A, 'source', 'sa1', 'local port 2222 in use'), at(2));
    t.same(await statusOf(p), { status: 'error', error: 'source: local port 2222 in use', source_status: 'error', target_status: 'active' });
    p = await append(h.store, stream, reported(PRIVATE_MAPPING, CLIENT_A, 'source', 'sa1'), at(3));
    t.same(await statusOf(p), { status: 'active', error: null, source_status: 'active', target_status: 'active' }, 'both sides running: active');
    p = await append(h.store, stream, reported(PRIVATE_MAPPING, CLIENT_B, 'source', 'sb1', 'not its side'), at(4));
    t.match(await statusOf(p), { status: 'active' }, 'a report from the wrong side\'s client changes nothing');
    p = await append(h.store, `client-session.${CLIENT_B}`, disconnected(CLIENT_B, 'sb0'), at(5));
    t.match(await statusOf(p), { status: 'active' }, 'the end of another session changes nothing');
    p = await append(h.store, `client-session.${CLIENT_B}`, disconnected(CLIENT_B, 'sb1'), at(6));
    t.same(await statusOf(p), { status: 'pending', error: null, source_status: 'active', target_status: null }, 'target session gone: pending');

    // A public mapping needs only its target agent.
    p = await append(h.store, `mapping.${PUBLIC_MAPPING}`, mappingCreated(PUBLIC_MAPPING, { source_client_id: null, local_host: null, local_port: null, public_port: PUBLIC_PORT }), at(7));
    p = await append(h.store, `mapping-status.${PUBLIC_MAPPING}`, reported(PUBLIC_MAPPING, CLIENT_B, 'target', 'sb2'), at(8));
    t.match(await statusOf(p, PUBLIC_MAPPING), { status: 'active' });

    // Late reports about a deleted mapping are facts like any other: ignored, never a halt.
    await append(h.store, `mapping.${PRIVATE_MAPPING}`, { type: 'MappingDeleted', data: { mapping_id: PRIVATE_MAPPING } }, at(9));
    p = await append(h.store, stream, reported(PRIVATE_MAPPING, CLIENT_A, 'source', 'sa1', 'late'), at(10));
    t.equal(await statusOf(p), undefined, 'no row invented for a deleted mapping');
    t.equal(halted, null, 'not halted');
  });

  tap.test('credential events: enabled, auth code hash, auth_epoch (the revoking event\'s stream version) and config_version; delete keeps a marked row', async (t) => {
    const h = await makeHarness((fn) => t.teardown(fn));
    await start(h, (fn) => t.teardown(fn));
    const stream = `client.${CLIENT_A}`;
    const id = { client_id: CLIENT_A };
    const row = async (position: number) => {
      t.ok(await untilCheckpoint(h.db, READ_MODEL_PROJECTION, position));
      return h.db
        .selectFrom('clients')
        .select(['enabled', 'auth_epoch', 'auth_code_hash', 'config_version', 'version', 'deleted_at'])
        .where('client_id', '=', CLIENT_A)
        .executeTakeFirstOrThrow();
    };
    const hash = `scrypt$16384$8$1$salt$${CLIENT_A}`;
    let p = await append(h.store, stream, clientRegistered(CLIENT_A), at(0));
    t.same(await row(p), { enabled: true, auth_epoch: 0, auth_code_hash: hash, config_version: p, version: 1, deleted_at: null }, 'registered: epoch 0');
    p = await append(h.store, stream, { type: 'ClientDisabled', data: id }, at(1));
    t.same(await row(p), { enabled: false, auth_epoch: 2, auth_code_hash: hash, config_version: p, version: 2, deleted_at: null }, 'disabled: epoch = version 2');
    p = await append(h.store, stream, { type: 'ClientEnabled', data: id }, at(2));
    t.same(await row(p), { enabled: true, auth_epoch: 2, auth_code_hash: hash, config_version: p, version: 3, deleted_at: null }, 'enabled: epoch unchanged');
    p = await append(h.store, stream, { type: 'ClientAuthCodeRotated', data: { ...id, auth_code_hash: 'scrypt$new' } }, at(3));
    t.same(await row(p), { enabled: true, auth_epoch: 4, auth_code_hash: 'scrypt$new', config_version: p, version: 4, deleted_at: null }, 'rotated');
    p = await append(h.store, stream, { type: 'ClientKicked', data: id }, at(4));
    t.same(await row(p), { enabled: true, auth_epoch: 5, auth_code_hash: 'scrypt$new', config_version: p, version: 5, deleted_at: null }, 'kicked');
    p = await append(h.store, stream, { type: 'ClientDeleted', data: id }, at(5));
    t.same(await row(p), { enabled: true, auth_epoch: 6, auth_code_hash: 'scrypt$new', config_version: p, version: 6, deleted_at: at(5) }, 'deleted: marked, not removed');
    const late = await append(h.store, stream, { type: 'ClientKicked', data: id }, at(6));
    t.match(await row(late), { auth_epoch: 6, version: 6 }, 'a change after deletion is ignored, not a halt');
  });

  tap.test('facts about unknown clients or mappings are logged and ignored, not rejected', async (t) => {
    const h = await makeHarness((fn) => t.teardown(fn));
    const logs = captureLogs();
    let halted: ProjectionHaltedError | null = null;
    await append(h.store, `client-session.${CLIENT_A}`, connected(CLIENT_A, 's1'), at(0));
    await append(h.store, 'mapping.4242', { type: 'MappingDeleted', data: { mapping_id: 4242 } }, at(1));
    const last = await append(h.store, `client.${CLIENT_B}`, clientRegistered(CLIENT_B), at(2));
    await start(h, (fn) => t.teardown(fn), { logger: logs.logger, onHalt: (e) => (halted = e) });
    t.ok(await untilCheckpoint(h.db, READ_MODEL_PROJECTION, last), 'projection moves past them');
    t.equal(halted, null, 'not halted');
    t.equal(await h.db.selectFrom('clients').select('client_id').where('client_id', '=', CLIENT_A).executeTakeFirst(), undefined, 'no row invented');
    const warnings = logs.lines().filter((l) => l.level === 40).map((l) => l.msg);
    t.same(warnings, ['ClientConnected for an unknown client; ignored', 'MappingDeleted for an unknown mapping; ignored']);
  });

  tap.test('replaying the same events (checkpoint reset, then rebuild) leaves byte-identical read models', async (t) => {
    const h = await makeHarness((fn) => t.teardown(fn));
    const s = await appendScenario(h.store);
    const first = await start(h, (fn) => t.teardown(fn));
    t.ok(await untilCheckpoint(h.db, READ_MODEL_PROJECTION, s.last));
    const live = await dumpReadModels(h.db);
    await first.stop();

    await h.db.updateTable('projection_checkpoints').set({ position: 0 }).where('name', '=', READ_MODEL_PROJECTION).execute();
    const second = await start(h, (fn) => t.teardown(fn));
    t.ok(await untilCheckpoint(h.db, READ_MODEL_PROJECTION, s.last), 'replays from 0 over the existing rows');
    t.equal(await dumpReadModels(h.db), live, 'replay over live rows changes nothing');
    await second.stop();

    // Damage the read models, then rebuild: the rebuild must restore exactly the live state.
    await h.db.updateTable('clients').set({ status: 'online', config_version: 1 }).execute();
    await h.db.deleteFrom('users').execute();
    await h.db.insertInto('mappings').values({
      mapping_id: 999_999, user_id: USER, protocol: 'tcp', source_client_id: null, target_client_id: CLIENT_A, target_host: 'x',
      target_port: 1, local_host: null, local_port: null, public_port: null, secret_generation: 1, enabled: true, status: 'active',
      version: 1, created_at: at(0), updated_at: at(0),
    }).execute();
    const rebuilt = await rebuildReadModels({ store: h.store, db: h.db, logger: silentLogger() });
    t.same(rebuilt, { position: s.last, events: scenarioPositions(s).length }, 'rebuild reports position and event count');
    t.equal(await dumpReadModels(h.db), live, 'rebuild reproduces the live read models byte for byte');
    t.equal(await checkpointOf(h.db, READ_MODEL_PROJECTION), s.last, 'checkpoint set to the last replayed event');

    // A projector started after the rebuild continues from its checkpoint.
    const more = await append(h.store, `client-session.${CLIENT_A}`, connected(CLIENT_A, 's9'), at(20));
    await start(h, (fn) => t.teardown(fn));
    t.ok(await untilCheckpoint(h.db, READ_MODEL_PROJECTION, more));
    const a = await h.db.selectFrom('clients').select(['status', 'session_id']).where('client_id', '=', CLIENT_A).executeTakeFirstOrThrow();
    t.same(a, { status: 'online', session_id: 's9' });
  });

  // Each is refused by store.append (the append guard), so they are written past it: they stand for
  // events already in the log, from a buggy or older writer, or from before the guard existed.
  const badEvents: [string, (raw: RawLog) => Promise<number>][] = [
    ['an unknown event type', (raw) => appendRaw(raw, 'mystery.1', { type: 'MysteryHappened', data: { x: 1 } }, at(1))],
    ['a payload that fails its schema', (raw) => appendRaw(raw, `client.${CLIENT_B}`, { type: 'ClientRegistered', aggregate_type: 'client', aggregate_id: String(CLIENT_B), data: { client_id: -5 } }, at(1))],
    ['an unsupported schema version', (raw) => appendRaw(raw, 'mapping.1', { schema_version: 99 }, at(1))],
  ];
  for (const [what, appendBad] of badEvents) {
    tap.test(`${what} halts the projection loudly with the checkpoint before it`, async (t) => {
      const h = await makeHarness((fn) => t.teardown(fn));
      const before = await append(h.store, `client.${CLIENT_A}`, clientRegistered(CLIENT_A), at(0));
      const bad = await appendBad(h.raw);
      await append(h.store, `client.${ANON}`, clientRegistered(ANON, 'anonymous'), at(2));
      const notices = collect(h.bus);

      for (const run of ['first run', 'restart']) {
        const logs = captureLogs();
        let halted: ProjectionHaltedError | null = null;
        const p = await start(h, (fn) => t.teardown(fn), { logger: logs.logger, onHalt: (e) => (halted = e) });
        t.ok(await eventually(() => halted !== null), `${run}: halts`);
        const err = halted as ProjectionHaltedError | null;
        t.equal(err?.code, 'TNX_PROJECTION_HALTED', `${run}: onHalt gets ProjectionHaltedError`);
        t.ok(err?.cause instanceof BadEventError, `${run}: caused by BadEventError`);
        t.equal((err?.cause as BadEventError | undefined)?.details?.position, bad, `${run}: names the bad position`);
        const errors = logs.lines().filter((l) => l.level === 50);
        t.equal(errors.length, 1, `${run}: one error logged`);
        t.match(errors[0], { msg: /projection halted/, err: { code: 'TNX_PROJECTION_BAD_EVENT' }, position: before, failedAt: bad });
        t.same(err?.details, { projection: READ_MODEL_PROJECTION, checkpoint: before, failedAt: bad });
        t.equal(await checkpointOf(h.db, READ_MODEL_PROJECTION), before, `${run}: checkpoint stays before the bad event`);
        t.equal(p.position, before);
        const ids = (await h.db.selectFrom('clients').select('client_id').orderBy('client_id').execute()).map((r) => r.client_id);
        t.same(ids, [CLIENT_A], `${run}: events after the bad one are not applied`);
        await p.stop();
      }
      t.same(notices.filter((n) => n.kind === 'projection').map((n) => (n as { position: number }).position), [before], 'only the good event was announced');
    });
  }

  tap.test('restart continues from the checkpoint without duplicates', async (t) => {
    const h = await makeHarness((fn) => t.teardown(fn));
    const firstNotices = collect(h.bus);
    const s1 = await append(h.store, `client.${CLIENT_A}`, clientRegistered(CLIENT_A), at(0));
    const s2 = await append(h.store, `client.${CLIENT_B}`, clientRegistered(CLIENT_B), at(1));
    const first = await start(h, (fn) => t.teardown(fn));
    t.ok(await untilCheckpoint(h.db, READ_MODEL_PROJECTION, s2));
    await first.stop();

    const s3 = await append(h.store, 'mapping.1001', mappingCreated(1001), at(2));
    const s4 = await append(h.store, `client-session.${CLIENT_B}`, connected(CLIENT_B, 'b1'), at(3));
    const second = await start(h, (fn) => t.teardown(fn));
    t.ok(await untilCheckpoint(h.db, READ_MODEL_PROJECTION, s4));
    t.equal(second.position, s4);
    t.ok(await eventually(() => firstNotices.some((n) => n.kind === 'projection' && n.position === s4)));
    t.same(
      firstNotices.filter((n) => n.kind === 'projection').map((n) => (n as { position: number }).position),
      [s1, s2, s3, s4],
      'every position committed exactly once across the restart',
    );
    t.equal((await h.db.selectFrom('clients').select('client_id').execute()).length, 2);
    t.equal((await h.db.selectFrom('mappings').select('mapping_id').execute()).length, 1);
    const cv = await h.db.selectFrom('clients').select(['client_id', 'config_version']).orderBy('client_id').execute();
    t.same(cv, [{ client_id: CLIENT_A, config_version: s3 }, { client_id: CLIENT_B, config_version: s3 }]);
  });

  if (!opts.concurrentSameName) return;

  tap.test('two projectors with the same name apply and announce each event once', async (t) => {
    const h = await makeHarness((fn) => t.teardown(fn));
    const notices = collect(h.bus);
    const a = await start(h, (fn) => t.teardown(fn));
    const b = await start(h, (fn) => t.teardown(fn));
    const s = await appendScenario(h.store);
    t.ok(await untilCheckpoint(h.db, READ_MODEL_PROJECTION, s.last));
    await assertScenarioRows(t, h.db, s);
    t.ok(await eventually(() => notices.some((n) => n.kind === 'projection' && n.position === s.last)));
    await a.stop();
    await b.stop();
    t.same(
      notices.filter((n) => n.kind === 'projection').map((n) => (n as { position: number }).position),
      scenarioPositions(s),
      'each position announced once, in order',
    );
  });
}

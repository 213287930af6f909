import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { createMemoryBus } from '../../shared/bus/memory.js';
import type { EventEnvelope } from '../../shared/contracts/envelope.js';
import { skipStreamFor } from '../../shared/contracts/events.js';
import { buildEnvelope } from '../../shared/eventstore/command.js';
import { openJetStreamEventStore } from '../../shared/eventstore/jetstream.js';
import { PostgresEventStore } from '../../shared/eventstore/postgres.js';
import type { EventStore } from '../../shared/eventstore/types.js';
import { silentLogger } from '../../shared/platform/logger.js';
import { createTestNats, TEST_NATS_URL } from '../../shared/testkit/nats.js';
import { createTestDatabase, type TestDatabase } from '../../shared/testkit/pg.js';
import { rawAppend } from '../../shared/testkit/raw-append.js';
import { READ_MODEL_PROJECTION, rebuildReadModels, startProjector, type ProjectionHaltedError } from '../../services/projector/index.js';
import { absorbIdleClientErrors, captureLogs, checkpointOf, dumpReadModels, eventually } from '../../services/projector/test/fixtures.js';

/**
 * A poison event already in the log (written past the append guard), the projector halting at it,
 * `tunnox ctl events skip` recording the operator's decision, and the projector passing it: against
 * the PostgreSQL log (standalone) and JetStream (cluster), with the real CLI.
 */

const MAIN = fileURLToPath(new URL('../../services/cli/main.js', import.meta.url));
const META = { actor: { kind: 'system' as const, id: 'poison-test' } };
const USER = 100_000_001;

interface Rig {
  store: EventStore;
  tdb: TestDatabase;
  /** CLI flags that point `tunnox ctl` at this rig's log and read models. */
  flags: string[];
  /** Stores `envelope` on `stream` past the event store's append guard, as a buggy or older writer could have. */
  writeRaw(stream: string, envelope: EventEnvelope): Promise<number>;
}

async function postgresRig(t: Test): Promise<Rig> {
  const tdb = await createTestDatabase('tnx_poison_pg');
  t.teardown(() => tdb.drop());
  absorbIdleClientErrors(tdb.pool);
  const store = new PostgresEventStore({ db: tdb.db, pool: tdb.pool, pollIntervalMs: 50 });
  t.teardown(() => store.close());
  return {
    store,
    tdb,
    flags: ['--database', tdb.url],
    writeRaw: (stream, envelope) => rawAppend({ kind: 'postgres', db: tdb.db }, stream, envelope),
  };
}

async function jetstreamRig(t: Test): Promise<Rig> {
  const tdb = await createTestDatabase('tnx_poison_js');
  t.teardown(() => tdb.drop());
  absorbIdleClientErrors(tdb.pool);
  const nats = await createTestNats();
  t.teardown(() => nats.cleanup());
  const store = await openJetStreamEventStore({ nc: nats.nc, streamName: nats.streamName, subjectPrefix: nats.subjectPrefix });
  t.teardown(() => store.close());
  return {
    store,
    tdb,
    flags: ['--nats', TEST_NATS_URL, '--database', tdb.url, '--stream', nats.streamName, '--subject-prefix', nats.subjectPrefix],
    writeRaw: (stream, envelope) =>
      rawAppend({ kind: 'jetstream', nc: nats.nc, streamName: nats.streamName, subjectPrefix: nats.subjectPrefix }, stream, envelope),
  };
}

const userCreated = (id: number, username = `u${id}`) =>
  buildEnvelope(`user.${id}`, { type: 'UserCreated', data: { user_id: id, username, email: `u${id}@example.test`, status: 'active' } }, META);

function ctl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, 'ctl', 'events', ...args], { timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

async function userIds(rig: Rig): Promise<number[]> {
  return (await rig.tdb.db.selectFrom('users').select('user_id').orderBy('user_id').execute()).map((r) => r.user_id);
}

/** Runs the read-model projector until it halts or reaches `position`; returns the halt (or null). */
async function projectOnce(t: Test, rig: Rig, until: number, logger = silentLogger()): Promise<ProjectionHaltedError | null> {
  const bus = createMemoryBus();
  t.teardown(() => bus.close());
  let halted: ProjectionHaltedError | null = null;
  const projector = await startProjector({ store: rig.store, db: rig.tdb.db, bus, logger, onHalt: (e) => (halted = e) });
  await eventually(async () => halted !== null || ((await checkpointOf(rig.tdb.db, READ_MODEL_PROJECTION)) ?? 0) >= until, 20_000);
  await projector.stop();
  return halted;
}

const variants: Array<[string, (t: Test) => Promise<Rig>, (id: number) => EventEnvelope, RegExp]> = [
  // PostgreSQL's jsonb cannot even hold a NUL, so the poison here is a payload that fails its schema.
  ['PostgreSQL log', postgresRig, (id) => ({ ...userCreated(id), data: { user_id: id, status: 'active' } }), /cannot parse UserCreated/],
  // JetStream stores anything: the NUL that halted clusters in the field, refused by the read model's insert.
  ['JetStream log', jetstreamRig, (id) => userCreated(id, 'a\u0000b'), /0x00/],
];

for (const [name, makeRig, poisonFor, cause] of variants) {
  t.test(`${name}: the projector halts at a poison event, an operator skips it, projection resumes`, async (t) => {
    const rig = await makeRig(t);
    const first = (await rig.store.append(`user.${USER}`, userCreated(USER), { expectedRevision: 'no_stream' })).position;
    const poison = poisonFor(USER + 1);
    const poisonAt = await rig.writeRaw(`user.${USER + 1}`, poison);
    const later = (await rig.store.append(`user.${USER + 2}`, userCreated(USER + 2), { expectedRevision: 'no_stream' })).position;

    const halt = await projectOnce(t, rig, later);
    t.ok(halt, 'the projector halts');
    t.match(halt?.details, { checkpoint: first, failedAt: poisonAt }, 'at the poison event');
    t.match((halt?.cause as Error | undefined)?.message, cause, 'for the poison itself');
    t.equal(await checkpointOf(rig.tdb.db, READ_MODEL_PROJECTION), first);
    t.same(await userIds(rig), [USER], 'nothing after it is projected');
    t.ok(await projectOnce(t, rig, later), 'and halts there again on restart');

    const refusedGood = await ctl(['skip', String(first), '--reason', 'typo', ...rig.flags]);
    t.equal(refusedGood.code, 1, 'an event already projected cannot be skipped');
    t.match(refusedGood.stderr, /already projected/);

    const run = await ctl(['skip', String(poisonAt), '--reason', 'NUL in username (issue 5)\nrecorded by the on-call', '--operator', 'alice', ...rig.flags]);
    t.equal(run.code, 0, `ctl succeeds: ${run.stderr}`);
    const result = JSON.parse(run.stdout);
    t.match(result, {
      skipped: { position: poisonAt, event_id: poison.id, event_type: 'UserCreated', stream: `user.${USER + 1}` },
      checkpoint: first,
      fails_to_project: true,
    });
    t.ok(result.skip_position > later, 'the EventSkipped is appended to the log');

    if (name === 'JetStream log') {
      const wrongStream = rig.flags.map((f, i) => (rig.flags[i - 1] === '--stream' ? `${f}_NOPE` : f));
      const noStream = await ctl(['skip', String(poisonAt), '--reason', 'x', ...wrongStream]);
      t.equal(noStream.code, 1, 'a wrong --stream is refused, not created');
      t.match(noStream.stderr, /no JetStream stream/);
    }

    const again = await ctl(['skip', String(poisonAt), '--reason', 'twice', ...rig.flags]);
    t.equal(again.code, 1, 'one skip per position');
    t.match(again.stderr, /already has an EventSkipped/);

    const audit = await rig.store.readStream(skipStreamFor(poisonAt));
    t.equal(audit.events.length, 1);
    t.match(audit.events[0], {
      type: 'EventSkipped',
      actor: { kind: 'operator', id: 'alice' },
      data: { position: poisonAt, event_id: poison.id, event_type: 'UserCreated', reason: 'NUL in username (issue 5)\nrecorded by the on-call' },
    });

    const logs = captureLogs();
    t.equal(await projectOnce(t, rig, result.skip_position, logs.logger), null, 'the restarted projector no longer halts');
    t.equal(await checkpointOf(rig.tdb.db, READ_MODEL_PROJECTION), result.skip_position, 'it reaches the head');
    t.same(await userIds(rig), [USER, USER + 2], 'later events are projected; the skipped one wrote nothing');
    const skipLog = logs.lines().find((l) => /event skipped by operator/.test(l.msg));
    t.match(skipLog, { level: 40, position: poisonAt, eventId: poison.id, skip: { actor: 'operator:alice', skipPosition: result.skip_position } }, 'the skip is logged');

    const next = (await rig.store.append(`user.${USER + 3}`, userCreated(USER + 3), { expectedRevision: 'no_stream' })).position;
    t.equal(await projectOnce(t, rig, next), null);
    t.same(await userIds(rig), [USER, USER + 2, USER + 3], 'and so are events appended after the skip');

    const live = await dumpReadModels(rig.tdb.db);
    const rebuilt = await rebuildReadModels({ store: rig.store, db: rig.tdb.db, logger: silentLogger() });
    t.equal(rebuilt.position, next, 'a rebuild passes the skipped event too');
    t.equal(await dumpReadModels(rig.tdb.db), live, 'and reproduces the live read models');
  });
}

t.test('ctl refuses to skip an event that projects fine, a missing position, and bad arguments', async (t) => {
  const rig = await postgresRig(t);
  const first = (await rig.store.append(`user.${USER}`, userCreated(USER), { expectedRevision: 'no_stream' })).position;
  const fine = await ctl(['skip', String(first), '--reason', 'oops', ...rig.flags]);
  t.equal(fine.code, 1);
  t.match(fine.stderr, /projects fine in a trial run/);
  t.same(await userIds(rig), [], 'the trial was rolled back');
  t.equal((await rig.store.readStream(skipStreamFor(first))).events.length, 0, 'nothing recorded');

  const missing = await ctl(['skip', String(first + 100), '--reason', 'x', ...rig.flags]);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /no event at position/);
  const badReason = await ctl(['skip', String(first), '--reason', 'a\u0007b', ...rig.flags]);
  t.equal(badReason.code, 1);
  t.match(badReason.stderr, /--reason/);
  const natsOnly = await ctl(['skip', String(first), '--reason', 'x', '--nats', TEST_NATS_URL]);
  t.equal(natsOnly.code, 1);
  t.match(natsOnly.stderr, /--nats needs --database/);

  const forced = await ctl(['skip', String(first), '--reason', 'drop this user on purpose', '--force', ...rig.flags]);
  t.equal(forced.code, 0, '--force records it anyway');
  t.match(JSON.parse(forced.stdout), { fails_to_project: false });
  t.equal(await projectOnce(t, rig, first), null);
  t.same(await userIds(rig), [USER], 'a skip only matters for an event that fails: this one still projects');
});

t.test('a skip naming the right position but another event id is not honoured', async (t) => {
  const rig = await postgresRig(t);
  const first = (await rig.store.append(`user.${USER}`, userCreated(USER), { expectedRevision: 'no_stream' })).position;
  const poisonAt = await rig.writeRaw(`user.${USER + 1}`, { ...userCreated(USER + 1), data: { user_id: USER + 1 } });
  const wrong = buildEnvelope(
    skipStreamFor(poisonAt),
    { type: 'EventSkipped', data: { position: poisonAt, event_id: randomUUID(), event_type: 'UserCreated', reason: 'another log' } },
    { actor: { kind: 'operator', id: 'bob' } },
  );
  await rig.store.append(skipStreamFor(poisonAt), wrong, { expectedRevision: 'no_stream' });
  const halt = await projectOnce(t, rig, poisonAt);
  t.match(halt?.details, { checkpoint: first, failedAt: poisonAt }, 'still halts');
});

import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { createDb, createPool, migrateToLatest } from '../../shared/db/connect.js';
import { createManagedClient } from '../../shared/domain/client/client.commands.js';
import { createMapping, deleteMapping } from '../../shared/domain/mapping/mapping.commands.js';
import { portStream, reservePublicPort } from '../../shared/domain/port/port.commands.js';
import { createUser } from '../../shared/domain/user/user.commands.js';
import { openJetStreamEventStore } from '../../shared/eventstore/jetstream.js';
import { PostgresEventStore } from '../../shared/eventstore/postgres.js';
import { silentLogger } from '../../shared/platform/logger.js';
import { TEST_NATS_URL, createTestNats } from '../../shared/testkit/nats.js';
import { startEmbeddedPostgres } from '../../services/cli/embedded-postgres.js';
import { READ_MODEL_PROJECTION, startProjector } from '../../services/projector/index.js';
import { checkpointOf, eventually } from '../../services/projector/test/fixtures.js';
import { createMemoryBus } from '../../shared/bus/memory.js';

/**
 * The real `tunnox ctl` process: events tail (readable, --json, --aggregate, --follow), state --at
 * and ports release on a standalone --data-dir, with its server's PostgreSQL up and down; and on a
 * cluster's JetStream log with --nats alone.
 */

// Two embedded PostgreSQL starts and a dozen CLI processes: minutes on a loaded machine.
t.setTimeout(400_000);
t.comment('timeout=400000');

const MAIN = fileURLToPath(new URL('../../services/cli/main.js', import.meta.url));
const META = { actor: { kind: 'api_key' as const, id: 'ctl-cli-test' } };
const RANGE = { min: 34000, max: 34009 };

function ctl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, 'ctl', ...args], { timeout: 120_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function openServerDb(dataDir: string) {
  const pg = await startEmbeddedPostgres(dataDir, silentLogger());
  const pool = createPool(pg.url, 4, () => undefined);
  const db = createDb(pool);
  const store = new PostgresEventStore({ db, pool, pollIntervalMs: 50 });
  let closed = false;
  return {
    db,
    store,
    async close() {
      if (closed) return;
      closed = true;
      await store.close();
      await db.destroy();
      await pg.stop();
    },
  };
}

t.test('standalone --data-dir: tail, follow, state and ports release through the CLI', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'tnx-ctl-cli-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  const server = await openServerDb(dataDir);
  t.teardown(() => server.close());
  await migrateToLatest(server.db);
  const { store } = server;
  const { userId } = await createUser(store, { username: 'cli', email: 'cli@example.test' }, META);
  const b = await createManagedClient(store, { userId, clientName: 'b' }, META);
  const m = await createMapping(store, { userId, protocol: 'tcp', targetClientId: b.clientId, targetHost: '127.0.0.1', targetPort: 80, publicPortRange: RANGE }, META);
  const created = (await store.readStream(`mapping.${m.mappingId}`)).events[0]!;
  const dir = ['--data-dir', dataDir];

  const tail = await ctl(['events', 'tail', '-n', '3', ...dir]);
  t.equal(tail.code, 0, tail.stderr);
  const lines = tail.stdout.trimEnd().split('\n');
  t.equal(lines.length, 3);
  t.match(lines[2], new RegExp(`^${created.position} {2}\\S+ {2}mapping\\.1001@1 {2}MappingCreated {2}api_key:ctl-cli-test {2}\\{.*"secret_generation":1`));
  t.notOk(lines[2]!.includes('secret_key'), 'the event holds no secret (derived secrets): nothing to redact');

  const json = await ctl(['events', 'tail', '--json', '--aggregate', `client:${b.clientId}`, ...dir]);
  t.equal(json.code, 0, json.stderr);
  const reg = JSON.parse(json.stdout.trim());
  t.match(reg, { type: 'ClientRegistered', stream: `client.${b.clientId}`, version: 1, actor: META.actor, data: { auth_code_hash: '[redacted]' }, redacted: ['auth_code_hash'] });

  // --follow: a long-running process; a new event shows up; SIGTERM ends it with exit 0.
  const follower = spawn(process.execPath, [MAIN, 'ctl', 'events', 'tail', '--follow', '--aggregate', 'mapping:1001', ...dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  follower.stdout.on('data', (c: Buffer) => (out += c.toString()));
  follower.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<number | null>((resolve) => follower.on('exit', (code) => resolve(code)));
  t.teardown(() => void follower.kill('SIGKILL'));
  for (let i = 0; i < 600 && !out.includes('MappingCreated'); i++) await sleep(50);
  t.match(out, /MappingCreated/, 'the follower printed the existing event');
  await deleteMapping(store, { mappingId: m.mappingId }, META);
  for (let i = 0; i < 600 && !out.includes('MappingDeleted'); i++) await sleep(50);
  t.match(out, /mapping\.1001@2 {2}MappingDeleted/, 'and the new one');
  follower.kill('SIGTERM');
  t.equal(await exited, 0, `SIGTERM ends --follow cleanly ${err}`);
  t.equal(out.trimEnd().split('\n').length, 2, 'each event once');

  const at = await ctl(['state', 'mapping', '1001', '--at', String(created.position), ...dir]);
  t.equal(at.code, 0, at.stderr);
  t.match(JSON.parse(at.stdout), { aggregate: 'mapping:1001', at: { position: created.position }, version: 1, later_events: 1, state: { status: 'active', mapping: { public_port: RANGE.min, secret_generation: 1 } } });
  t.notOk(at.stdout.includes('secret_key'), 'the state holds no secret');
  const now = await ctl(['state', 'mapping', '1001', '--at', new Date().toISOString(), ...dir]);
  t.match(JSON.parse(now.stdout), { version: 2, state: { status: 'deleted' } });
  const bad = await ctl(['state', 'mapping', '1001', '--at', 'tuesday', ...dir]);
  t.equal(bad.code, 1);
  t.match(bad.stderr, /neither a log position nor a time/);

  // Server stopped: the command starts the embedded PostgreSQL itself and stops it again.
  const leftover = RANGE.min + 3;
  await reservePublicPort(store, { port: leftover, mappingId: 7777 }, META);
  await server.close();
  const refused = await ctl(['ports', 'release', String(leftover), '--reason', 'crashed create', ...dir]);
  t.equal(refused.code, 1);
  t.match(refused.stderr, /mapping 7777 \d+ s ago and that mapping does not exist yet/);
  const released = await ctl(['ports', 'release', String(leftover), '--reason', 'crashed create', '--operator', 'dave', '--force', ...dir]);
  t.equal(released.code, 0, released.stderr);
  t.match(released.stderr, /released public port 34003 held by mapping 7777 \(never-created\) .*embedded PostgreSQL started for this command/);
  t.match(JSON.parse(released.stdout), { port: leftover, held_by: 7777, holder: 'never-created', reason: 'crashed create' });
  const noReason = await ctl(['ports', 'release', String(leftover), ...dir]);
  t.equal(noReason.code, 1);
  t.match(noReason.stderr, /--reason/);

  const again = await openServerDb(dataDir);
  t.teardown(() => again.close());
  t.match((await again.store.readLastEvent(portStream(leftover))).event, {
    type: 'PublicPortReleased',
    actor: { kind: 'operator', id: 'dave' },
    data: { port: leftover, mapping_id: 7777, reason: 'crashed create' },
  }, 'the audited release is in the log');

  // projections rebuild on the running server's database, with its projector running.
  const bus = createMemoryBus();
  const projector = await startProjector({ store: again.store, db: again.db, bus, logger: silentLogger() });
  t.teardown(async () => {
    await projector.stop();
    await bus.close();
  });
  const head = await again.store.headPosition();
  t.ok(await eventually(async () => ((await checkpointOf(again.db, READ_MODEL_PROJECTION)) ?? 0) >= head, 30_000), 'projected');
  const clean = await ctl(['projections', 'rebuild', '--verify', ...dir]);
  t.equal(clean.code, 0, clean.stderr);
  t.match(clean.stdout, new RegExp(`replayed ${head} events into shadow tables; compared with the live read models at checkpoint ${head}\n`));
  t.match(clean.stdout, /\nmappings: 0 live, 0 rebuilt, identical\nclients: 1 live, 1 rebuilt, identical\nusers: 1 live, 1 rebuilt, identical\napi_keys: 0 live, 0 rebuilt, identical\nidentical\n$/);
  await again.db.updateTable('users').set({ email: 'mallory@example.test' }).where('user_id', '=', userId).execute();
  const dirty = await ctl(['projections', 'rebuild', '--verify', ...dir]);
  t.equal(dirty.code, 1, 'differences: exit 1');
  t.match(dirty.stdout, `\n  users user_id=${userId}: email: live "mallory@example.test", rebuilt "cli@example.test"\n1 differing row\n`);
  const swap = await ctl(['projections', 'rebuild', '--swap', '--json', ...dir]);
  t.equal(swap.code, 0, swap.stderr);
  t.match(JSON.parse(swap.stdout), { identical: false, swapped: { deleted: 1, inserted: 1, tables: ['users'] }, position: head });
  t.equal((await again.db.selectFrom('users').select('email').where('user_id', '=', userId).executeTakeFirstOrThrow()).email, 'cli@example.test');
  t.equal((await ctl(['projections', 'rebuild', '--verify', ...dir])).code, 0, 'identical after the swap');
  const neither = await ctl(['projections', 'rebuild', ...dir]);
  t.equal(neither.code, 2, 'no mode: exit 2');
  t.match(neither.stderr, /--verify .* or --swap/);
});

t.test('cluster: tail and state from JetStream with --nats alone', async (t) => {
  const nats = await createTestNats();
  t.teardown(() => nats.cleanup());
  const store = await openJetStreamEventStore({ nc: nats.nc, streamName: nats.streamName, subjectPrefix: nats.subjectPrefix });
  t.teardown(() => store.close());
  const { userId } = await createUser(store, { username: 'jet', email: 'jet@example.test' }, META);
  const target = ['--nats', TEST_NATS_URL, '--stream', nats.streamName, '--subject-prefix', nats.subjectPrefix];
  const tail = await ctl(['events', 'tail', '--type', 'UserCreated', '--json', ...target]);
  t.equal(tail.code, 0, tail.stderr);
  t.match(JSON.parse(tail.stdout), { type: 'UserCreated', stream: `user.${userId}`, data: { username: 'jet' } });
  const state = await ctl(['state', 'user', String(userId), ...target]);
  t.match(JSON.parse(state.stdout), { state: { exists: true, username: 'jet' } });
  const needsDb = await ctl(['events', 'skip', '1', '--reason', 'x', ...target]);
  t.equal(needsDb.code, 1);
  t.match(needsDb.stderr, /--nats needs --database/);
  const badType = await ctl(['events', 'tail', '--type', 'UserMade', ...target]);
  t.equal(badType.code, 1);
  t.match(badType.stderr, /unknown event type "UserMade"/);
});

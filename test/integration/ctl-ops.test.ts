import t, { type Test } from 'tap';
import { REDACTED, auditEvent } from '../../shared/contracts/audit.js';
import { createManagedClient } from '../../shared/domain/client/client.commands.js';
import { reserveLocalPort } from '../../shared/domain/localport/localport.commands.js';
import { createMapping, deleteMapping, mappingStream } from '../../shared/domain/mapping/mapping.commands.js';
import { mappingDecider } from '../../shared/domain/mapping/mapping.decider.js';
import { portStream, reservePublicPort } from '../../shared/domain/port/port.commands.js';
import { createUser } from '../../shared/domain/user/user.commands.js';
import { handleCommand } from '../../shared/eventstore/command.js';
import { openJetStreamEventStore } from '../../shared/eventstore/jetstream.js';
import { PostgresEventStore } from '../../shared/eventstore/postgres.js';
import type { EventStore } from '../../shared/eventstore/types.js';
import { createTestNats } from '../../shared/testkit/nats.js';
import { createTestDatabase } from '../../shared/testkit/pg.js';
import { formatEvent, tailEvents } from '../../services/cli/ctl-events.js';
import { IN_FLIGHT_CREATE_MS, releasePort } from '../../services/cli/ctl-ports.js';
import { parsePoint, stateAt } from '../../services/cli/ctl-state.js';

/** `tunnox ctl events tail`, `state --at` and `ports release` against real event stores. */

const META = { actor: { kind: 'api_key' as const, id: 'ctl-ops-test' } };
const OPERATOR = { kind: 'operator' as const, id: 'carol@ops' };
const RANGE = { min: 33000, max: 33009 };

type Open = (t: Test) => Promise<EventStore>;

const postgres: Open = async (t) => {
  const tdb = await createTestDatabase('tnx_ctl_ops');
  const store = new PostgresEventStore({ db: tdb.db, pool: tdb.pool, pollIntervalMs: 50 });
  t.teardown(async () => {
    await store.close();
    await tdb.drop();
  });
  return store;
};
const jetstream: Open = async (t) => {
  const nats = await createTestNats();
  const store = await openJetStreamEventStore({ nc: nats.nc, streamName: nats.streamName, subjectPrefix: nats.subjectPrefix });
  t.teardown(async () => {
    await store.close();
    await nats.cleanup();
  });
  return store;
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A user, two clients, a client-to-client mapping 1001 and a public one 1002; 1001 deleted later. */
async function world(store: EventStore) {
  const { userId } = await createUser(store, { username: 'ops', email: 'ops@example.test' }, META);
  const a = await createManagedClient(store, { userId, clientName: 'a' }, META);
  const b = await createManagedClient(store, { userId, clientName: 'b' }, META);
  const m1 = await createMapping(
    store,
    { userId, protocol: 'tcp', sourceClientId: a.clientId, targetClientId: b.clientId, targetHost: '127.0.0.1', targetPort: 22, localPort: 2222, publicPortRange: RANGE },
    META,
  );
  const m2 = await createMapping(store, { userId, protocol: 'tcp', targetClientId: b.clientId, targetHost: '127.0.0.1', targetPort: 80, publicPortRange: RANGE }, META);
  return { userId, a: a.clientId, b: b.clientId, m1, m2 };
}

async function collectTail(store: EventStore, opts: Omit<Parameters<typeof tailEvents>[1], 'write'>): Promise<string[]> {
  const lines: string[] = [];
  await tailEvents(store, { ...opts, write: (l) => lines.push(l) });
  return lines;
}

function suite(name: string, open: Open): void {
  t.test(name, async (t) => {
    t.test('events tail: the last lines, --json, --aggregate, --type, --after, and --follow picks up a new event', async (t) => {
      const store = await open(t);
      await world(store);
      const all = await store.readAll(0, 10_000);
      const last5 = await collectTail(store, { lines: 5 });
      t.same(last5, all.slice(-5).map((e) => formatEvent(auditEvent(e))), 'the last 5, oldest first, readable');
      t.match(last5[4], /^\d+ {2}\S+Z {2}mapping\.1002@1 {2}MappingCreated {2}api_key:ctl-ops-test {2}\{.*"secret_generation":1/);
      t.notOk(last5.join('\n').includes('secret_key'), 'the event holds no secret (derived secrets)');
      t.same((await collectTail(store, { lines: 100_000 })).length, all.length, 'more lines than events: all of them');
      t.same(await collectTail(store, { lines: 0 }), []);

      const json = (await collectTail(store, { lines: 3, json: true })).map((l) => JSON.parse(l));
      t.same(json, all.slice(-3).map(auditEvent), '--json: the API view, one per line');

      const m1 = await collectTail(store, { stream: 'mapping.1001', lines: 20, json: true });
      t.same(m1.map((l) => JSON.parse(l).type), ['MappingCreated'], '--aggregate mapping:1001');
      const regs = await collectTail(store, { types: new Set(['ClientRegistered']), lines: 1 });
      t.same(regs, [formatEvent(auditEvent(all.filter((e) => e.type === 'ClientRegistered').at(-1)!))], '--type: the last matching one, found across windows');
      t.match(regs[0], /"auth_code_hash":"\[redacted\]"/);
      const after = await collectTail(store, { after: all[all.length - 3]!.position, lines: 1 });
      t.equal(after.length, 2, '--after: everything after that position, whatever --lines says');

      // --follow: the initial tail, then a new event as soon as it is appended.
      const lines: string[] = [];
      const abort = new AbortController();
      const following = tailEvents(store, { stream: 'mapping.1001', lines: 10, follow: true, signal: abort.signal, pollMs: 50, write: (l) => lines.push(l) });
      for (let i = 0; i < 200 && lines.length < 1; i++) await sleep(25);
      t.equal(lines.length, 1, 'initial tail printed');
      await deleteMapping(store, { mappingId: 1001 }, META);
      for (let i = 0; i < 400 && lines.length < 2; i++) await sleep(25);
      abort.abort();
      await following;
      t.equal(lines.length, 2, 'the new event was printed, once');
      t.match(lines[1], /mapping\.1001@2 {2}MappingDeleted/);
    });

    t.test('state --at: a position and a time, for mapping, user and client', async (t) => {
      const store = await open(t);
      const w = await world(store);
      await sleep(30); // so the delete's occurred_at is later than the create's
      await deleteMapping(store, { mappingId: 1001 }, META);
      const [created, deleted] = (await store.readStream(mappingStream(1001))).events;

      const before = await stateAt(store, 'mapping', '1001', { position: created!.position - 1 });
      t.match(before, { aggregate: 'mapping:1001', version: 0, later_events: 2, last_event: null, state: { status: 'absent' } });
      const live = await stateAt(store, 'mapping', '1001', parsePoint(String(created!.position)));
      t.match(live, { version: 1, later_events: 1, state: { status: 'active', mapping: { mapping_id: 1001, local_port: 2222, secret_generation: 1 } }, redacted: [] });
      t.notOk('secret_key' in (live.state as { mapping: object }).mapping, 'the state holds no secret');
      t.match(live.last_event, { position: created!.position, type: 'MappingCreated', actor: 'api_key:ctl-ops-test' });
      t.match(await stateAt(store, 'mapping', '1001'), { at: { head: true }, version: 2, state: { status: 'deleted' } });

      const createdMs = Date.parse(created!.occurred_at);
      t.ok(Date.parse(deleted!.occurred_at) > createdMs, 'the delete is later');
      t.match(await stateAt(store, 'mapping', '1001', parsePoint(created!.occurred_at)), { version: 1, state: { status: 'active' } }, 'at the create time: created');
      t.match(await stateAt(store, 'mapping', '1001', parsePoint(new Date(createdMs - 1).toISOString())), { version: 0, state: { status: 'absent' } }, 'a millisecond before: absent');
      t.match(await stateAt(store, 'mapping', '1001', parsePoint(deleted!.occurred_at.replace('Z', '+00:00'))), { version: 2, state: { status: 'deleted' } }, 'an offset time');
      t.match(await stateAt(store, 'mapping', '1001', parsePoint('1999-01-01')), { version: 0 });

      t.match(await stateAt(store, 'user', String(w.userId)), { state: { exists: true, userId: w.userId, username: 'ops', status: 'active' } });
      const client = await stateAt(store, 'client', String(w.a));
      t.match(client, { state: { exists: true, clientId: w.a, clientType: 'managed', enabled: true } });
      t.match(await stateAt(store, 'port', String(RANGE.min)), { state: { heldBy: 1002 } });
      t.match(await stateAt(store, 'account', String(w.userId)), { state: { opened: true, clients: [w.a, w.b], mappings: [1002] } }, 'the account: slots of what is live now');

      await t.rejects(stateAt(store, 'mapping', '4242'), { code: 'TNX_CTL_NO_AGGREGATE', message: /no mapping 4242/ });
      await t.rejects(stateAt(store, 'mappings', '1001'), { code: 'TNX_CTL_BAD_ARGUMENT', message: /one of mapping, user, client/ });
      await t.rejects(stateAt(store, 'mapping', '01001'), { code: 'TNX_CTL_BAD_ARGUMENT' });
      t.throws(() => parsePoint('yesterday'), { code: 'TNX_CTL_BAD_ARGUMENT', message: /neither a log position nor a time/ });
      t.throws(() => parsePoint('2026-13-45T99:00:00Z'), { code: 'TNX_CTL_BAD_ARGUMENT' });
      t.throws(() => parsePoint('007'), { code: 'TNX_CTL_BAD_ARGUMENT' });
    });

    t.test('ports release: crash leftovers are released as audited events; a live holder only with --force', async (t) => {
      const store = await open(t);
      const w = await world(store);
      const later = new Date(Date.now() + IN_FLIGHT_CREATE_MS + 1_000);
      const release = (port: number, extra: Partial<Parameters<typeof releasePort>[0]> = {}) =>
        releasePort({ store, port, reason: 'crash leftover, ticket 7', actor: OPERATOR, ...extra });

      // A create that died after reserving its port: mapping 9999 never came to exist.
      const leftover = RANGE.min + 5;
      await reservePublicPort(store, { port: leftover, mappingId: 9999 }, META);
      await t.rejects(release(leftover), { code: 'TNX_CTL_PORT_RECENT', message: /mapping 9999 .* does not exist yet: its create may still be running/ });
      const freed = await release(leftover, { now: later });
      t.match(freed, { kind: 'public', port: leftover, held_by: 9999, holder: 'never-created', reason: 'crash leftover, ticket 7' });
      const { event } = await store.readLastEvent(portStream(leftover));
      t.match(event, {
        position: freed.position,
        type: 'PublicPortReleased',
        actor: OPERATOR,
        data: { port: leftover, mapping_id: 9999, reason: 'crash leftover, ticket 7' },
      }, 'the audit event: operator, reason');
      const reuse = await createMapping(store, { userId: w.userId, protocol: 'tcp', targetClientId: w.b, targetHost: '127.0.0.1', targetPort: 81, publicPort: leftover, publicPortRange: RANGE }, META);
      t.equal(reuse.publicPort, leftover, 'the port can be reserved again');
      await t.rejects(release(RANGE.min + 7), { code: 'TNX_CTL_PORT_FREE', message: /never was/ });

      // A live mapping uses the port: refused, naming it and what to do; --force releases.
      await t.rejects(release(RANGE.min), { code: 'TNX_CTL_PORT_IN_USE', message: /held by mapping 1002, which exists and uses it: delete the mapping instead/ });
      t.match(await release(RANGE.min, { force: true }), { holder: 'live', held_by: 1002 });
      await t.rejects(release(RANGE.min), { code: 'TNX_CTL_PORT_FREE', message: /already released/ });

      // A delete that died before freeing the port: MappingDeleted without the release.
      const m3 = await createMapping(store, { userId: w.userId, protocol: 'tcp', targetClientId: w.b, targetHost: '127.0.0.1', targetPort: 82, publicPort: RANGE.min + 8, publicPortRange: RANGE }, META);
      await handleCommand(store, mappingStream(m3.mappingId), mappingDecider, { type: 'DeleteMapping', data: { mapping_id: m3.mappingId } }, META);
      t.match(await release(m3.publicPort!), { holder: 'deleted', held_by: m3.mappingId }, 'a deleted holder: no --force, no waiting');

      // A source client's local port, left by a create that died.
      await reserveLocalPort(store, { clientId: w.a, port: 3333, mappingId: 8888 }, META);
      const local = await release(3333, { clientId: w.a, now: later });
      t.match(local, { kind: 'local', client_id: w.a, stream: `localport.${w.a}_3333`, holder: 'never-created' });
      t.match((await store.readLastEvent(`localport.${w.a}_3333`)).event, { type: 'LocalPortReleased', actor: OPERATOR, data: { reason: 'crash leftover, ticket 7' } });
      await t.rejects(release(2222, { clientId: w.a }), { code: 'TNX_CTL_PORT_IN_USE', message: /local port 2222 of client .* mapping 1001/ });
    });
  });
}

suite('PostgreSQL event store', postgres);
suite('JetStream event store', jetstream);

import type { Test } from 'tap';
import type { EventEnvelope, StoredEvent } from '../contracts/envelope.js';
import { EVENT_SCHEMAS, isEventType, type EventType } from '../contracts/events.js';
import { buildEnvelope } from './command.js';
import { UnstorableEventError, WrongExpectedRevisionError } from './errors.js';
import type { EventStore, Subscription } from './types.js';

/**
 * The behaviour every EventStore must show, run against each implementation by its own test file
 * (postgres.test.ts, jetstream.test.ts). `makeStore` must return a store over an empty, private
 * log; `cleanup` closes it and removes the log.
 */
export function eventStoreContract(
  t: Test,
  makeStore: () => Promise<{ store: EventStore; cleanup(): Promise<void> }>,
): void {
  const open = async (t: Test): Promise<EventStore> => {
    const { store, cleanup } = await makeStore();
    t.teardown(cleanup);
    return store;
  };

  t.test('append then readStream round-trips the envelope, with versions and positions', async (t) => {
    const store = await open(t);
    const first = allocated('sequence.mapping', 1, { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' });
    const second = allocated('sequence.mapping', 2);
    const a = await store.append('sequence.mapping', first, { expectedRevision: 'no_stream' });
    const b = await store.append('sequence.mapping', second, { expectedRevision: a.revision });
    t.equal(a.duplicate, false);
    t.equal(b.duplicate, false);
    t.ok(b.position > a.position, 'positions increase');

    const read = await store.readStream('sequence.mapping');
    t.equal(read.revision, b.revision, 'revision is the one the last append returned');
    t.same(read.events.map((e) => [e.position, e.version, e.stream]), [
      [a.position, 1, 'sequence.mapping'],
      [b.position, 2, 'sequence.mapping'],
    ]);
    t.same(envelopeOf(read.events[0]), first, 'envelope preserved, trace included');
    t.same(envelopeOf(read.events[1]), second);

    t.same(await store.readStream('sequence.unknown'), { events: [], revision: null }, 'absent stream');

    const last = await store.readLastEvent('sequence.mapping');
    t.equal(last.revision, b.revision, 'readLastEvent: same revision as the last append');
    t.same(last.event && [last.event.position, last.event.version, last.event.stream], [b.position, 2, 'sequence.mapping']);
    t.same(last.event && envelopeOf(last.event), second, 'readLastEvent: the last envelope');
    t.same(await store.readLastEvent('sequence.unknown'), { event: null, revision: null }, 'readLastEvent: absent stream');
  });

  t.test("'no_stream' on an existing stream is a conflict and writes nothing", async (t) => {
    const store = await open(t);
    await store.append('user.7', allocated('user.7', 1), { expectedRevision: 'no_stream' });
    const err = await rejection(store.append('user.7', allocated('user.7', 2), { expectedRevision: 'no_stream' }));
    t.type(err, WrongExpectedRevisionError);
    t.equal((err as WrongExpectedRevisionError).code, 'TNX_EVENTSTORE_WRONG_REVISION');
    t.equal((await store.readStream('user.7')).events.length, 1);
  });

  t.test('a stale or unknown numeric revision is a conflict; the current one appends', async (t) => {
    const store = await open(t);
    const a = await store.append('client.5', allocated('client.5', 1), { expectedRevision: 'no_stream' });
    const b = await store.append('client.5', allocated('client.5', 2), { expectedRevision: a.revision });
    t.type(await rejection(store.append('client.5', allocated('client.5', 3), { expectedRevision: a.revision })), WrongExpectedRevisionError);
    t.type(
      await rejection(store.append('client.5', allocated('client.5', 3), { expectedRevision: b.revision + 1000 })),
      WrongExpectedRevisionError,
      'a revision the stream never had',
    );
    t.type(
      await rejection(store.append('client.6', allocated('client.6', 1), { expectedRevision: b.revision })),
      WrongExpectedRevisionError,
      'a number on an absent stream',
    );
    const c = await store.append('client.5', allocated('client.5', 3), { expectedRevision: b.revision });
    const read = await store.readStream('client.5');
    t.same(read.events.map((e) => e.version), [1, 2, 3]);
    t.equal(read.revision, c.revision);
  });

  t.test("'any' appends without a check, to a new or an existing stream", async (t) => {
    const store = await open(t);
    await store.append('client.9', allocated('client.9', 1), { expectedRevision: 'any' });
    await store.append('client.9', allocated('client.9', 2), { expectedRevision: 'any' });
    const last = await store.append('client.9', allocated('client.9', 3), { expectedRevision: 'any' });
    const read = await store.readStream('client.9');
    t.same(read.events.map((e) => [e.version, (e.data as { id: number }).id]), [[1, 1], [2, 2], [3, 3]]);
    t.equal(read.revision, last.revision);
  });

  t.test('concurrent appends with the same expectation: exactly one wins', async (t) => {
    const store = await open(t);
    const racers = 10;
    const created = await Promise.allSettled(
      Array.from({ length: racers }, (_, i) => store.append('mapping.1001', allocated('mapping.1001', i + 1), { expectedRevision: 'no_stream' })),
    );
    const won = created.filter((r) => r.status === 'fulfilled');
    t.equal(won.length, 1, "one 'no_stream' append wins");
    t.ok(
      created.every((r) => r.status === 'fulfilled' || r.reason instanceof WrongExpectedRevisionError),
      'every loser is a revision conflict',
    );
    const revision = (won[0] as PromiseFulfilledResult<{ revision: number }>).value.revision;

    const next = await Promise.allSettled(
      Array.from({ length: racers }, (_, i) => store.append('mapping.1001', allocated('mapping.1001', 100 + i), { expectedRevision: revision })),
    );
    t.equal(next.filter((r) => r.status === 'fulfilled').length, 1, 'one numeric append wins');
    t.ok(next.every((r) => r.status === 'fulfilled' || r.reason instanceof WrongExpectedRevisionError));
    const read = await store.readStream('mapping.1001');
    t.same(read.events.map((e) => e.version), [1, 2]);
  });

  t.test("concurrent 'any' appends all land, with distinct consecutive versions", async (t) => {
    const store = await open(t);
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) => store.append('client.77', allocated('client.77', i + 1), { expectedRevision: 'any' })),
    );
    t.equal(new Set(results.map((r) => r.position)).size, 10);
    const read = await store.readStream('client.77');
    t.same(read.events.map((e) => e.version), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    const all = await store.readAll(0, 100);
    t.same(all.map((e) => e.version), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 'readAll reports the same versions');
  });

  t.test('an envelope id already stored is a duplicate: nothing is written', async (t) => {
    const store = await open(t);
    const e = allocated('user.1', 1);
    const first = await store.append('user.1', e, { expectedRevision: 'no_stream' });
    const head = await store.headPosition();
    // A client retrying after a lost reply still holds the old expectation: dedup must win.
    const again = await store.append('user.1', e, { expectedRevision: 'no_stream' });
    t.same(again, { position: first.position, revision: first.revision, duplicate: true });
    t.same(await store.append('user.1', e, { expectedRevision: 'any' }), again);
    t.equal((await store.readStream('user.1')).events.length, 1);
    t.equal(await store.headPosition(), head);
  });

  t.test('readAll returns events across streams in position order, after a position, up to a limit', async (t) => {
    const store = await open(t);
    const positions: number[] = [];
    const streams = ['user.1', 'client.2', 'user.1', 'mapping.3', 'client.2'];
    const revisions = new Map<string, number>();
    for (const [i, stream] of streams.entries()) {
      const r = await store.append(stream, allocated(stream, i + 1), { expectedRevision: revisions.get(stream) ?? 'no_stream' });
      revisions.set(stream, r.revision);
      positions.push(r.position);
    }
    const all = await store.readAll(0, 100);
    t.same(all.map((e) => e.position), positions);
    t.same(all.map((e) => [e.stream, e.version]), [['user.1', 1], ['client.2', 1], ['user.1', 2], ['mapping.3', 1], ['client.2', 2]]);
    t.same(all.map((e) => (e.data as { id: number }).id), [1, 2, 3, 4, 5], 'envelopes match positions');
    t.same((await store.readAll(positions[1]!, 2)).map((e) => e.position), positions.slice(2, 4));
    t.same(await store.readAll(positions[4]!, 10), [], 'nothing after the head');
    t.same(await store.readAll(0, 0), [], 'limit 0');
  });

  t.test('readStream reads a page: after a position, up to a limit, with the stream revision', async (t) => {
    const store = await open(t);
    const mine: StoredEvent[] = [];
    let revision = 0;
    // Interleaved with another stream, so positions inside user.1 are not consecutive.
    for (let i = 1; i <= 5; i++) {
      const r = await store.append('user.1', allocated('user.1', i), { expectedRevision: i === 1 ? 'no_stream' : revision });
      revision = r.revision;
      await store.append('user.2', allocated('user.2', i), { expectedRevision: 'any' });
    }
    mine.push(...(await store.readStream('user.1')).events);
    const at = (i: number): number => mine[i]!.position;
    const page = await store.readStream('user.1', { afterPosition: at(1), limit: 2 });
    t.same(page.events.map((e) => [e.position, e.version, (e.data as { id: number }).id]), [[at(2), 3, 3], [at(3), 4, 4]], 'versions are the stream versions');
    t.equal(page.revision, revision, "a page carries the stream's revision, not its last event's");
    t.same(page.events, mine.slice(2, 4), 'the same events as the whole read');
    t.same((await store.readStream('user.1', { afterPosition: at(1) })).events, mine.slice(2), 'no limit: the rest');
    t.same((await store.readStream('user.1', { limit: 1 })).events, mine.slice(0, 1), 'limit only: the first');
    t.same((await store.readStream('user.1', { afterPosition: at(2) - 1, limit: 10 })).events, mine.slice(2), 'a position between two of its events');
    const past = await store.readStream('user.1', { afterPosition: at(4) });
    t.same(past, { events: [], revision }, 'after its last event: empty page, revision still there');
    t.same(await store.readStream('user.9', { afterPosition: 0, limit: 5 }), { events: [], revision: null }, 'absent stream');
    await t.rejects(store.readStream('user.1', { limit: 0 }), RangeError, 'limit 0 is a caller bug');
  });

  t.test('headPosition is 0 when empty and the last position after appends', async (t) => {
    const store = await open(t);
    t.equal(await store.headPosition(), 0);
    await store.append('user.1', allocated('user.1', 1), { expectedRevision: 'no_stream' });
    const last = await store.append('user.2', allocated('user.2', 1), { expectedRevision: 'no_stream' });
    t.equal(await store.headPosition(), last.position);
  });

  t.test('subscribe delivers events after the position in order, including later appends', async (t) => {
    const store = await open(t);
    const early = await appendMany(store, 'user.1', 3);
    const rec = await record(t, store, 'proj-a', early[0]!);
    const late = await appendMany(store, 'user.2', 2);
    await rec.until(4);
    t.same(rec.positions(), [early[1], early[2], late[0], late[1]]);
    t.same(rec.events.map((e) => [e.stream, e.version]), [['user.1', 2], ['user.1', 3], ['user.2', 1], ['user.2', 2]]);
    t.same(rec.errors, []);
  });

  t.test('a rejecting handler halts the subscription; the event is redelivered from the same checkpoint', async (t) => {
    const store = await open(t);
    const p = await appendMany(store, 'mapping.1', 3);
    const seen: number[] = [];
    const errors: unknown[] = [];
    const boom = new Error('projection bug');
    const sub = await store.subscribe({
      name: 'proj-b',
      afterPosition: 0,
      handler: async (e) => {
        seen.push(e.position);
        if (e.position === p[1]) throw boom;
      },
      onError: (err) => errors.push(err),
    });
    await waitUntil(() => errors.length > 0, 'onError');
    await sub.stop();
    t.same(errors, [boom], 'onError gets the handler error, once');
    t.same(seen, [p[0], p[1]], 'nothing after the failing event');

    // The caller committed only p[0]: a new subscription from there gets the failed event first.
    const rec = await record(t, store, 'proj-b', p[0]!);
    await rec.until(2);
    t.same(rec.positions(), [p[1], p[2]]);
  });

  t.test('a durable name resumes from whatever checkpoint the caller passes', async (t) => {
    const store = await open(t);
    const p = await appendMany(store, 'user.3', 4);
    const first = await record(t, store, 'proj-c', 0);
    await first.until(4);
    await first.sub.stop();
    const more = await appendMany(store, 'user.3', 2, 4);

    const ahead = await record(t, store, 'proj-c', more[0]!);
    await ahead.until(1);
    t.same(ahead.positions(), [more[1]], 'checkpoint ahead of what was delivered: earlier events skipped');
    await ahead.sub.stop();

    const behind = await record(t, store, 'proj-c', p[1]!);
    await behind.until(4);
    t.same(behind.positions(), [p[2], p[3], more[0], more[1]], 'checkpoint behind (rebuild): re-delivered from it');
  });

  t.test('a stopped subscription delivers nothing more', async (t) => {
    const store = await open(t);
    const [p1] = await appendMany(store, 'client.1', 1);
    const rec = await record(t, store, 'proj-d', 0);
    await rec.until(1);
    await rec.sub.stop();
    const [p2] = await appendMany(store, 'client.1', 1, 1);
    // A live subscriber sees the new event, and the stopped one had every chance to as well.
    const witness = await record(t, store, 'proj-witness', p1!);
    await witness.until(1);
    t.same(witness.positions(), [p2]);
    await delay(300);
    t.same(rec.positions(), [p1], 'nothing after stop()');
  });

  t.test('stop() waits for the in-flight handler and may be called from inside it', async (t) => {
    const store = await open(t);
    const p = await appendMany(store, 'user.4', 3);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const finished: number[] = [];
    const started = deferred();
    const sub = await store.subscribe({
      name: 'proj-e',
      afterPosition: 0,
      handler: async (e) => {
        started.resolve();
        await gate;
        finished.push(e.position);
      },
      onError: () => undefined,
    });
    await started.promise;
    let stopped = false;
    const stopping = sub.stop().then(() => {
      stopped = true;
    });
    await delay(50);
    t.equal(stopped, false, 'stop() is still waiting for the running handler');
    release();
    await stopping;
    t.same(finished, [p[0]], 'the in-flight handler completed, nothing after it');

    const inner = deferred();
    const seen: number[] = [];
    let self!: Subscription;
    self = await store.subscribe({
      name: 'proj-f',
      afterPosition: 0,
      handler: async (e) => {
        seen.push(e.position);
        if (e.position === p[1]) {
          await self.stop();
          inner.resolve();
        }
      },
      onError: () => undefined,
    });
    await inner.promise;
    await self.stop();
    t.same(seen, [p[0], p[1]]);
  });

  t.test('an event with text no reader can store is refused and nothing is written', async (t) => {
    const store = await open(t);
    await store.append('user.8', allocated('user.8', 1), { expectedRevision: 'no_stream' });
    const head = await store.headPosition();
    const poisons: Array<[string, EventEnvelope, string]> = [
      ['NUL in a payload string', withData({ sequence: 'a\u0000b', id: 2 }), 'data.sequence'],
      ['lone high surrogate', withData({ sequence: 'a\ud800', id: 2 }), 'data.sequence'],
      ['lone low surrogate', withData({ sequence: '\udc00b', id: 2 }), 'data.sequence'],
      ['NUL in a nested key', withData({ sequence: 's', id: 2, extra: [{ ['k\u0000']: 1 }] }), 'data.extra[0].k\u0000'],
      ['NUL in the actor id', { ...allocated('user.8', 2), actor: { kind: 'system', id: 'op\u0000' } }, 'actor.id'],
    ];
    for (const [what, envelope, path] of poisons) {
      const err = await rejection(store.append('user.8', envelope, { expectedRevision: 'any' }));
      t.type(err, UnstorableEventError, what);
      t.equal((err as UnstorableEventError).code, 'TNX_EVENTSTORE_UNSTORABLE_EVENT', what);
      t.equal((err as UnstorableEventError).path, path, `${what}: names ${path}`);
    }
    t.equal(await store.headPosition(), head, 'nothing was appended');
    t.equal((await store.readStream('user.8')).events.length, 1);

    // Proper surrogate pairs, non-ASCII text, tabs and newlines are ordinary text.
    const fine = withData({ sequence: 'José 用户 🚀\tline\nnext \u202e', id: 3 });
    await store.append('user.8', fine, { expectedRevision: 'any' });
    const read = await store.readStream('user.8');
    t.same(envelopeOf(read.events[1]), fine, 'round-trips unchanged');
  });

  t.test('a known type with a payload failing its schema or another schema_version is refused and nothing is written', async (t) => {
    const store = await open(t);
    await store.append('user.8', allocated('user.8', 1), { expectedRevision: 'no_stream' });
    const head = await store.headPosition();
    const registered = (data: unknown): EventEnvelope => ({ ...known('client.5', 'ClientRegistered'), data });
    const goodClient = { client_id: 5, client_type: 'managed', user_id: 7, client_name: 'c', auth_code_hash: 'scrypt$h' };
    const poisons: Array<[string, EventEnvelope, string, string]> = [
      ['a negative id', registered({ ...goodClient, client_id: -5 }), 'data.client_id', zodMessage('ClientRegistered', { ...goodClient, client_id: -5 })],
      ['a missing field', registered({ client_id: 5 }), 'data.client_type', zodMessage('ClientRegistered', { client_id: 5 })],
      ['a value outside its enum', registered({ ...goodClient, client_type: 'root' }), 'data.client_type', zodMessage('ClientRegistered', { ...goodClient, client_type: 'root' })],
      ['data that is not an object', registered(null), 'data', zodMessage('ClientRegistered', null)],
      ['no data at all', registered(undefined), 'data', zodMessage('ClientRegistered', undefined)],
      ['a newer schema_version', { ...registered(goodClient), schema_version: EVENT_SCHEMAS.ClientRegistered.version + 1 }, 'schema_version', 'version'],
      ['no schema_version', { ...registered(goodClient), schema_version: undefined as unknown as number }, 'schema_version', 'absent'],
      ['an occurred_at that is no time', { ...registered(goodClient), occurred_at: 'yesterday' }, 'occurred_at', 'not a valid envelope field'],
      ['an id that is no UUID', { ...registered(goodClient), id: 'not-a-uuid' }, 'id', 'not a valid envelope field'],
      ['no actor', { ...registered(goodClient), actor: undefined as unknown as EventEnvelope['actor'] }, 'actor', 'not a valid envelope field'],
    ];
    for (const [what, envelope, path, message] of poisons) {
      for (const expectedRevision of ['no_stream', 'any'] as const) {
        const err = await rejection(store.append('client.5', envelope, { expectedRevision }));
        t.type(err, UnstorableEventError, `${what} (${expectedRevision})`);
        t.equal((err as UnstorableEventError).code, 'TNX_EVENTSTORE_UNSTORABLE_EVENT', what);
        t.equal((err as UnstorableEventError).path, path, `${what}: names ${path}`);
        t.ok((err as Error).message.includes(message), `${what}: the message says why (${(err as Error).message})`);
      }
    }
    t.equal(await store.headPosition(), head, 'nothing was appended');
    t.same(await store.readStream('client.5'), { events: [], revision: null }, 'the stream was not created');

    // The same envelope, well-formed, is stored exactly as given: data keys the schema does not
    // know are kept (readers' schemas strip them), and the caller's object is left untouched.
    const good = registered({ ...goodClient, from_a_newer_writer: { x: [1] } });
    const given = structuredClone(good);
    await store.append('client.5', good, { expectedRevision: 'no_stream' });
    t.same(good, given, "the caller's envelope is not mutated");
    t.same(envelopeOf((await store.readStream('client.5')).events[0]), given, 'stored exactly as given, unknown keys included');
  });

  t.test('an unknown event type is stored (a newer writer during a rolling upgrade)', async (t) => {
    const store = await open(t);
    const future = { ...known('mystery.1', 'MysteryHappened'), schema_version: 3, data: { anything: ['goes'] } };
    const r = await store.append('mystery.1', future, { expectedRevision: 'no_stream' });
    t.equal(await store.headPosition(), r.position);
    t.same(envelopeOf((await store.readStream('mystery.1')).events[0]), future);
  });

  t.test('invalid stream names are refused', async (t) => {
    const store = await open(t);
    for (const bad of ['', 'user.', '.1', 'user 1', 'user.*', 'user.>']) {
      const err = await rejection(store.append(bad, allocated('user.1', 1), { expectedRevision: 'any' }));
      t.equal((err as { code?: string }).code, 'TNX_EVENTSTORE_INVALID_STREAM', JSON.stringify(bad));
    }
  });
}

// ---------------------------------------------------------------------------------------------

let nextAllocation = 0;

/** A valid IdAllocated envelope for `stream`; `id` makes each one recognisable. */
function allocated(stream: string, id: number, trace?: { traceparent: string }): EventEnvelope {
  nextAllocation++;
  return buildEnvelope(
    stream,
    { type: 'IdAllocated', data: { sequence: `seq-${nextAllocation}-ünïcode`, id } },
    { actor: { kind: 'system', id: 'contract-test' }, ...(trace ? { traceparent: trace.traceparent } : {}) },
  );
}

/** An envelope of `type` on `stream` with placeholder data (each test sets its own). */
function known(stream: string, type: string): EventEnvelope {
  const version = isEventType(type) ? EVENT_SCHEMAS[type].version : 1;
  return { ...allocated(stream, 1), type, schema_version: version, aggregate_type: stream.split('.')[0]!, aggregate_id: stream.split('.')[1]! };
}

/** The first message zod gives for `data` against `type`'s schema, which the refusal must carry. */
function zodMessage(type: EventType, data: unknown): string {
  const parsed = EVENT_SCHEMAS[type].schema.safeParse(data);
  if (parsed.success) throw new Error(`fixture passes the ${type} schema`);
  return parsed.error.issues[0]!.message;
}

/** An IdAllocated envelope on user.8 with arbitrary data (what a buggy or hostile writer might send). */
function withData(data: Record<string, unknown>): EventEnvelope {
  return { ...allocated('user.8', 0), data };
}

function envelopeOf(event: StoredEvent | undefined): EventEnvelope {
  if (!event) throw new Error('missing event');
  const { position: _p, version: _v, stream: _s, ...envelope } = event;
  return envelope;
}

async function appendMany(store: EventStore, stream: string, count: number, firstId = 0): Promise<number[]> {
  const positions: number[] = [];
  for (let i = 0; i < count; i++) {
    const r = await store.append(stream, allocated(stream, firstId + i + 1), { expectedRevision: 'any' });
    positions.push(r.position);
  }
  return positions;
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

interface Recording {
  sub: Subscription;
  events: StoredEvent[];
  errors: unknown[];
  positions(): number[];
  until(count: number): Promise<void>;
}

async function record(t: Test, store: EventStore, name: string, afterPosition: number): Promise<Recording> {
  const events: StoredEvent[] = [];
  const errors: unknown[] = [];
  const sub = await store.subscribe({
    name,
    afterPosition,
    handler: async (e) => {
      events.push(e);
    },
    onError: (err) => errors.push(err),
  });
  t.teardown(() => sub.stop());
  return {
    sub,
    events,
    errors,
    positions: () => events.map((e) => e.position),
    until: (count) => waitUntil(() => events.length >= count || errors.length > 0, `${count} events on ${name}`),
  };
}

const WAIT_LIMIT_MS = 20_000;

/** Polls `done` (bounded); a timeout fails the test with what was awaited. */
async function waitUntil(done: () => boolean, what: string): Promise<void> {
  const step = 10;
  for (let waited = 0; waited < WAIT_LIMIT_MS; waited += step) {
    if (done()) return;
    await delay(step);
  }
  throw new Error(`timed out waiting for ${what}`);
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}
